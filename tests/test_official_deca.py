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

from .conftest import REPO

CASES = sorted((REPO.parent / "shared" / "fixtures" / "official_deca").glob("*.npz"))


@pytest.fixture(scope="module")
def standin_flame_pkl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .test_flame import _imitate_official_pickle

    path = tmp_path_factory.mktemp("flame") / "generic_model.pkl"
    with pytest.MonkeyPatch.context() as m:
        _imitate_official_pickle(path, m)  # 300 identity + 100 expression components, demo head's in front
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


def test_there_are_cases() -> None:
    assert CASES, "no official_deca case files: shared/ must sit beside the checkout"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
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


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_a_deca_embedding_fits_with_the_dynamic_contour(path: Path, standin_flame_pkl: Path, tmp_path: Path) -> None:
    case, meta = _case(path)
    flame = _flame(case, standin_flame_pkl, tmp_path)
    name = meta["source"]
    target = torch.from_numpy(case[f"{name}/landmarks2d_224ndc"])[None]  # 17 contour (its yaw's bin) + 51 static
    fit = LandmarkFitter(flame, FitConfig(iterations=300)).fit(target)
    assert float(fit.landmark_error[0]) < 0.01  # NDC of the 224 crop
    pose_err = (fit.global_pose[0] - torch.from_numpy(case[f"{name}/split/pose"][:3])).abs().max()
    assert pose_err < 0.05, pose_err  # radians
