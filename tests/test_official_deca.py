"""The FLAME stages of the official DECA path against its reference outputs, on every case file of
``../shared/fixtures/official_deca/``: the FLAME decode of DECA's code split, the full 68 landmarks,
the dynamic jaw-contour bin and the 68 fitted landmarks (17 contour + 51 static) projected by DECA's
camera. The FLAME stand-in is the demo head in FLAME 2020's layout, as the fixture's README says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.fit import FitConfig, LandmarkFitter
from gdpw.flame import FLAME, FlameParams, contour_bins, load_landmark_embedding, orthographic

from .conftest import shared_cases

CASES = shared_cases("fixtures/official_deca", "*.npz")


@pytest.fixture(scope="module")
def standin_flame_pkl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .test_flame import _imitate_official_pickle

    path = tmp_path_factory.mktemp("flame") / "generic_model.pkl"
    with pytest.MonkeyPatch.context() as m:
        # 300 identity + 100 expression components, demo head's in front; the fixtures were made with the
        # first demo head, whose blinks only bulged the lids forward
        _imitate_official_pickle(path, m, lid_slide=False)
    return path


def _case(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    z = np.load(path)
    return {k: z[k] for k in z.files}, json.loads(str(z["meta_json"]))


def _flame(case: dict[str, np.ndarray], pkl: Path, tmp: Path) -> FLAME:
    """FLAME with the case's stand-in embedding written as DECA's landmark_embedding.npy."""
    emb = {k.split("/", 1)[1]: v for k, v in case.items() if k.startswith("standin_landmark_embedding/")}
    np.save(tmp / "landmark_embedding.npy", emb)
    return FLAME(pkl, landmark_embedding=load_landmark_embedding(tmp / "landmark_embedding.npy"))


def _decode(flame: FLAME, shape: np.ndarray, exp: np.ndarray, pose: np.ndarray) -> FlameParams:
    """DECA's code split as FLAME parameters: pose = global (3) + jaw (3); neck and eyes at rest."""
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32)).reshape(-1, a.shape[-1])  # noqa: E731
    p = t(pose)
    return FlameParams(shape=t(shape), expression=t(exp), global_pose=p[:, :3], jaw_pose=p[:, 3:])



@pytest.mark.parametrize("path", CASES)
def test_flame_decode_landmarks_and_contour_bins(path: Path, standin_flame_pkl: Path, tmp_path: Path) -> None:
    case, meta = _case(path)
    flame = _flame(case, standin_flame_pkl, tmp_path)
    emb = load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    assert emb.faces.shape == (68,) and emb.dynamic_faces is not None and emb.dynamic_faces.shape == (79, 17)
    for name in (meta["source"], meta["driving"]):
        split = {k: case[f"{name}/split/{k}"] for k in ("shape", "exp", "pose", "cam")}
        with torch.no_grad():
            params = _decode(flame, split["shape"], split["exp"], split["pose"])
            out = flame(params)
            verts = out.vertices[0].numpy()
            full = flame.landmarks(out.vertices, flame.lmk_faces_idx, flame.lmk_bary_coords)[0].numpy()
            fitted = orthographic(out.landmarks, torch.from_numpy(split["cam"])[None])[0, :, :2].numpy()
        assert np.abs(verts - case[f"{name}/verts_world"]).max() <= 1e-6
        assert np.abs(full - case[f"{name}/landmarks3d_world"]).max() <= 1e-6
        assert int(contour_bins(params.global_pose)[0]) == int(case[f"{name}/dyn_lmk_bin"])
        assert np.abs(fitted - case[f"{name}/landmarks2d_224ndc"]).max() <= 1e-6
    # the smoothed reenactment frames: yaw bins over a moving head
    sm = {k: case[f"reenact/smoothed/{k}"] for k in ("shape", "exp", "pose", "cam")}
    with torch.no_grad():
        params = _decode(flame, sm["shape"], sm["exp"], sm["pose"])
        out = flame(params)
        fitted = orthographic(out.landmarks, torch.from_numpy(sm["cam"]))[..., :2].numpy()
    assert torch.equal(contour_bins(params.global_pose), torch.from_numpy(case["reenact/smoothed/dyn_lmk_bin"]))
    assert np.abs(out.vertices.numpy() - case["reenact/smoothed/verts_world"]).max() <= 1e-6
    assert np.abs(fitted - case["reenact/smoothed/landmarks2d_224ndc"]).max() <= 1e-6


@pytest.mark.parametrize("path", CASES)
def test_a_deca_embedding_fits_with_the_dynamic_contour(path: Path, standin_flame_pkl: Path, tmp_path: Path) -> None:
    case, meta = _case(path)
    flame = _flame(case, standin_flame_pkl, tmp_path)
    name = meta["source"]
    target = torch.from_numpy(case[f"{name}/landmarks2d_224ndc"])[None]  # 17 contour (its yaw's bin) + 51 static
    fit = LandmarkFitter(flame, FitConfig(iterations=300)).fit(target)
    assert float(fit.landmark_error[0]) < 0.01  # NDC of the 224 crop
    pose_err = (fit.global_pose[0] - torch.from_numpy(case[f"{name}/split/pose"][:3])).abs().max()
    assert pose_err < 0.05, pose_err  # radians


def _image(case: dict[str, np.ndarray], name: str) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(case[f"{name}/image_bytes"].tobytes())).convert("RGB"))


@pytest.mark.parametrize("path", CASES)
def test_official_crops(path: Path) -> None:
    from gdpw.common.crop import DECA_SIZE, OFFICIAL_SIZE, crop, official_boxes, official_geometry

    case, meta = _case(path)
    for name in (meta["source"], meta["driving"]):
        lmk = case[f"{name}/landmarks_used"]
        cx, cy, old_size = official_geometry(lmk)
        assert np.allclose([cx, cy], case[f"{name}/center"], atol=1e-9) and abs(old_size - case[f"{name}/old_size"]) < 1e-9
        deca, out = official_boxes(lmk)
        image = _image(case, name)
        for box, size, key in ((deca, DECA_SIZE, "224"), (out, OFFICIAL_SIZE, "256")):
            assert np.abs(box.image_transform(size) - case[f"{name}/tform_{key}"]).max() <= 1e-6  # pixels
            diff = np.abs(crop(image, box, size).astype(int) - case[f"{name}/crop_{key}"].astype(int))
            assert diff.max() <= 1, (name, key, diff.max())
        # vertices and landmarks: the official 256 NDC is pixel index / 256 * 2 - 1 in the 256 crop
        px = (case[f"{name}/tform_256"] @ np.c_[lmk, np.ones(len(lmk))].T).T[:, :2]
        assert np.abs(out.to_ndc(lmk) - (px / OFFICIAL_SIZE * 2 - 1)).max() <= 1e-6 * 2 / OFFICIAL_SIZE


class _CodeEncoder(torch.nn.Module):
    """DECA's encoder with its output fixed to the case's codes (as the fixture was made); it
    checks the crops it is given against the official ones."""

    def __init__(self, codes: torch.Tensor, crops: np.ndarray | None = None) -> None:
        super().__init__()
        self.codes, self.crops = codes, crops
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        from gdpw.common.images import to_uint8
        from gdpw.fit.deca import split_code

        if self.crops is not None:
            assert np.abs(to_uint8(images).astype(int) - self.crops.astype(int)).max() <= 1
        return split_code(self.codes[: images.shape[0]])


@pytest.mark.parametrize("path", CASES)
def test_deca_split_camera_and_vertices_in_the_crop(path: Path, standin_flame_pkl: Path) -> None:
    from gdpw.common.crop import official_boxes
    from gdpw.fit.deca import deca_fit, split_code

    case, meta = _case(path)
    flame = FLAME(standin_flame_pkl)
    for name in (meta["source"], meta["driving"]):
        code = torch.from_numpy(case[f"{name}/code"])[None]
        split = split_code(code)
        for k in ("shape", "tex", "exp", "pose", "cam", "light", "eye_pose"):
            assert torch.equal(split[k][0], torch.from_numpy(case[f"{name}/split/{k}"])), k
        lmk = case[f"{name}/landmarks_used"]
        encoder = _CodeEncoder(code, case[f"{name}/crop_224"][None])
        fit = deca_fit(encoder, [_image(case, name)], [lmk], [official_boxes(lmk)[1]], flame.n_shape, flame.n_expression)
        with torch.no_grad():
            verts = fit.image_vertices(flame)[0, :, :2].numpy()
        assert np.abs(verts - case[f"{name}/verts_256ndc"][:, :2]).max() <= 1e-4


@pytest.mark.parametrize("path", CASES)
def test_official_smoothing_and_reenactment(path: Path, standin_flame_pkl: Path) -> None:
    """The driving codes smoothed with the official One-Euro filter, then decoded with the source's
    shape and moved into each driving frame's crop: what the official generator receives."""
    from gdpw.common.crop import official_boxes
    from gdpw.fit.deca import convert_camera
    from gdpw.fit.fitter import RECIPE_SMOOTHING
    from gdpw.flame import FlameSequence

    case, meta = _case(path)
    smooth = RECIPE_SMOOTHING["official"]
    for k in ("exp", "pose", "cam"):
        got = smooth(torch.from_numpy(case[f"reenact/raw/{k}"]), fps=25.0)  # per frame: fps plays no part
        assert (got - torch.from_numpy(case[f"reenact/smoothed/{k}"])).abs().max() <= 1e-6, k  # measured: 0 (bitwise)
    flame = FLAME(standin_flame_pkl)
    src, drv = meta["source"], meta["driving"]
    deca_box, out_box = official_boxes(case[f"{drv}/landmarks_used"])
    for variant in ("raw", "smoothed"):
        r = {k: torch.from_numpy(case[f"reenact/{variant}/{k}"]) for k in ("shape", "exp", "pose", "cam")}
        assert torch.equal(r["shape"][0], torch.from_numpy(case[f"{src}/split/shape"]))  # absolute motion, source shape
        cams = torch.stack([convert_camera(c, deca_box, out_box) for c in r["cam"]])
        seq = FlameSequence(r["shape"][0], r["exp"], r["pose"][:, :3], r["pose"][:, 3:], torch.zeros(len(cams), 6), cams)
        with torch.no_grad():
            verts = seq.image_vertices(flame)[..., :2].numpy()
        assert np.abs(verts - case[f"reenact/{variant}/verts_256ndc"][..., :2]).max() <= 1e-4, variant


@pytest.mark.parametrize("path", CASES)
def test_official_edits(path: Path, standin_flame_pkl: Path) -> None:
    from gdpw.flame import FlameSequence
    from gdpw.pipeline import EditSpec, apply_edit

    case, meta = _case(path)
    flame = FLAME(standin_flame_pkl)
    name = meta["source"]
    split = {k: torch.from_numpy(case[f"{name}/split/{k}"])[None] for k in ("shape", "exp", "pose", "cam")}
    fit = FlameSequence(split["shape"][0], split["exp"], split["pose"][:, :3], split["pose"][:, 3:], torch.zeros(1, 6), split["cam"])
    for key in ("edit/jaw_pitch_plus8", "edit/head_yaw_plus15"):
        before, after = (np.array(meta[key][f"{part}_euler_yxz_deg_{when}"]) for when in ("before", "after")
                         for part in ["jaw" if "jaw" in key else "head"])
        change = after - before  # degrees about y, x, z
        spec = EditSpec(jaw=float(change[1])) if "jaw" in key else EditSpec(yaw=float(change[0]), pitch=float(change[1]),
                                                                            roll=float(change[2]))
        edited = apply_edit(fit, spec, convention="official")
        pose = torch.cat([edited.global_pose, edited.jaw_pose], 1)[0]
        assert (pose - torch.from_numpy(case[f"{key}/pose"])).abs().max() <= 1e-5, key
        with torch.no_grad():
            verts = flame(edited.params()).vertices[0].numpy()
        assert np.abs(verts - case[f"{key}/verts_world"]).max() <= 1e-5, key


@pytest.mark.parametrize("path", CASES[:1])
def test_flames_own_static_and_dynamic_embeddings_make_the_same_68_points(path: Path, tmp_path: Path) -> None:
    """FLAME's release: flame_static_embedding.pkl (51 points) beside flame_dynamic_embedding.npy."""
    import pickle

    case, _ = _case(path)
    emb = {k.split("/", 1)[1]: v for k, v in case.items() if k.startswith("standin_landmark_embedding/")}
    with open(tmp_path / "flame_static_embedding.pkl", "wb") as fh:
        pickle.dump({"lmk_face_idx": emb["static_lmk_faces_idx"], "lmk_b_coords": emb["static_lmk_bary_coords"]}, fh, protocol=2)
    alone = load_landmark_embedding(tmp_path / "flame_static_embedding.pkl")
    assert alone.faces.shape == (51,) and alone.dynamic_faces is None
    np.save(tmp_path / "flame_dynamic_embedding.npy", {"lmk_face_idx": emb["dynamic_lmk_faces_idx"],
                                                      "lmk_b_coords": emb["dynamic_lmk_bary_coords"]})
    assert load_landmark_embedding(tmp_path / "flame_static_embedding.pkl").dynamic_faces is None  # only named files are read
    both = load_landmark_embedding(tmp_path / "flame_static_embedding.pkl", tmp_path / "flame_dynamic_embedding.npy")
    np.save(tmp_path / "deca.npy", {k: v for k, v in emb.items() if not k.startswith("full")})
    deca = load_landmark_embedding(tmp_path / "deca.npy")
    for a, b in ((both.faces, deca.faces), (both.bary, deca.bary), (both.dynamic_faces, deca.dynamic_faces)):
        assert a is not None and b is not None and np.array_equal(a, b)
    assert both.faces.shape == (68,)
