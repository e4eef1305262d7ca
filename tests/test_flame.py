"""FLAME layer: the demo head, the official-format loader (imitated chumpy pickle), kinematics."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.flame import DEMO_HEAD, FLAME, FlameFileError, FlameParams, load_flame, load_landmark_embedding
from gdpw.flame.lbs import batch_rodrigues
from scripts.build_demo_head import build_demo_head

from .helpers import Payload


@pytest.fixture(scope="module")
def flame() -> FLAME:
    return FLAME()


def test_demo_head_has_flame_layout(flame: FLAME) -> None:
    assert flame.num_verts == 5023 and flame.faces.shape == (9976, 3)
    assert flame.J_regressor.shape == (5, 5023)
    assert (flame.n_shape, flame.n_expression) == (20, 10)
    assert flame.lmk_faces_idx is not None and flame.lmk_faces_idx.shape == (68,)
    assert torch.allclose(flame.lbs_weights.sum(1), torch.ones(5023), atol=1e-5)


def test_shipped_demo_head_is_what_the_script_builds() -> None:
    shipped = np.load(DEMO_HEAD)
    built = build_demo_head()
    assert sorted(shipped.files) == sorted(built)
    for key, value in built.items():
        if value.dtype.kind in "fiu":
            np.testing.assert_allclose(shipped[key], value, atol=1e-6, err_msg=key)
        else:
            assert np.array_equal(shipped[key], value), key


def test_zero_parameters_give_the_template(flame: FLAME) -> None:
    out = flame(FlameParams(shape=torch.zeros(2, 20)))
    assert out.vertices.shape == (2, 5023, 3)
    assert torch.allclose(out.vertices[0], flame.v_template, atol=1e-6)


def test_global_pose_is_a_rigid_rotation_about_the_root(flame: FLAME) -> None:
    rot = torch.tensor([[0.2, -0.7, 0.1]])
    out = flame(FlameParams(global_pose=rot))
    rest = flame(FlameParams())
    r = batch_rodrigues(rot)[0]
    j0 = rest.joints[0, 0]
    expected = (rest.vertices[0] - j0) @ r.T + j0
    assert torch.allclose(out.vertices[0], expected, atol=1e-5)


def test_jaw_moves_the_chin_and_not_the_forehead(flame: FLAME) -> None:
    rest = flame(FlameParams()).vertices[0]
    opened = flame(FlameParams(jaw_pose=torch.tensor([[0.3, 0.0, 0.0]]))).vertices[0]
    moved = (opened - rest).norm(dim=1)
    chin = int(torch.argmin((rest[:, 1] + 0.085).abs() + (rest[:, 0]).abs() + (rest[:, 2] < 0.05) * 1.0))
    forehead = int(torch.argmin((rest[:, 1] - 0.08).abs() + (rest[:, 0]).abs() + (rest[:, 2] < 0.05) * 1.0))
    assert moved[chin] > 0.01 and moved[forehead] < 1e-6


def test_eye_pose_rotates_only_the_eyeballs_about_their_centres(flame: FLAME) -> None:
    rest = flame(FlameParams())
    out = flame(FlameParams(eye_pose=torch.tensor([[0.0, 0.4, 0.0, 0.0, 0.0, 0.0]])))
    moved = (out.vertices[0] - rest.vertices[0]).norm(dim=1) > 1e-6
    left_eye = flame.lbs_weights[:, 3] > 0.5
    assert torch.equal(moved, left_eye & moved) and moved.sum() > 100
    d_rest = (rest.vertices[0][left_eye] - rest.joints[0, 3]).norm(dim=1)
    d_out = (out.vertices[0][left_eye] - out.joints[0, 3]).norm(dim=1)
    assert torch.allclose(d_rest, d_out, atol=1e-6)


def test_blink_closes_the_lid_over_the_eye(flame: FLAME) -> None:
    from gdpw.flame import orthographic
    from gdpw.render import rasterize

    cam = torch.tensor([[8.0, 0.0, 0.0]])
    eye_px = orthographic(flame(FlameParams()).joints[:, 3:4], cam)  # NDC of the left eye centre
    col = int((eye_px[0, 0, 0] + 1) * 64 - 0.5)
    row = int((eye_px[0, 0, 1] + 1) * 64 - 0.5)
    exp = torch.zeros(1, 10)
    exp[0, 4] = 1.0  # blink_left
    faces_open = rasterize(orthographic(flame(FlameParams()).vertices, cam), flame.faces, (128, 128)).face_map()
    faces_shut = rasterize(orthographic(flame(FlameParams(expression=exp)).vertices, cam), flame.faces, (128, 128)).face_map()
    head_faces = int((flame.faces.max(1).values < 4681).sum())
    assert faces_open[0, row, col] >= head_faces  # the eyeball is visible
    assert 0 <= faces_shut[0, row, col] < head_faces  # the lid covers it
    # the landmarks see it: the upper lid comes down to the lower one (a lid that only bulged forward,
    # as the first demo head's did, left the eye's 2D opening unchanged and the fitter blind to blinks)
    both = torch.zeros(2, 10)
    both[1, 4:6] = 1.0
    lmk = flame(FlameParams(expression=both)).landmarks
    assert lmk is not None
    opening = lmk[:, [37, 38, 43, 44], 1].mean(1) - lmk[:, [40, 41, 46, 47], 1].mean(1)
    assert opening[0] > 0.008 and opening[1] < 0.3 * opening[0]
    # the components are named in the model file, so motion transfer knows which close a lid
    assert flame.lid_components == (4, 5)
    assert flame.expression_names is not None and flame.expression_names[4] == "blink_left"


def test_landmarks_are_on_the_face_and_mirror(flame: FLAME) -> None:
    lmk = flame(FlameParams()).landmarks
    assert lmk is not None and lmk.shape == (1, 68, 3)
    pts = lmk[0]
    assert (pts[17:, 2] > 0.04).all()  # inner landmarks on the front of the face
    for a, b in ((36, 45), (39, 42), (48, 54), (0, 16), (17, 26)):
        assert torch.allclose(pts[a, 0], -pts[b, 0], atol=2e-3) and torch.allclose(pts[a, 1], pts[b, 1], atol=2e-3)
    assert pts[36, 0] < pts[39, 0] < 0 < pts[42, 0] < pts[45, 0]  # image-left eye first, corners in order


def _imitate_official_pickle(path: Path, monkeypatch: pytest.MonkeyPatch, lid_slide: bool = True) -> dict:
    """Write the demo head the way the official generic_model.pkl stores FLAME: chumpy arrays,
    a scipy CSC joint regressor, 300 + 100 blendshapes, Python-2 era protocol 2. ``lid_slide``:
    ``build_demo_head``'s (False: the first demo head's blinks)."""
    demo = build_demo_head(lid_slide)
    chumpy = types.ModuleType("chumpy")
    ch_mod = types.ModuleType("chumpy.ch")
    sparse_mod = types.ModuleType("scipy.sparse.csc")

    class Ch:  # what chumpy.ch.Ch pickles as: its __dict__ with the array under 'x'
        def __init__(self, x: np.ndarray) -> None:
            self.x = x
            self._dirty_vars = set()

    class csc_matrix:
        def __init__(self, dense: np.ndarray) -> None:
            rows, cols = np.nonzero(dense.T)  # column-major order
            self.data = dense.T[rows, cols]
            self.indices = cols.astype(np.int32)
            self.indptr = np.searchsorted(rows, np.arange(dense.shape[1] + 1)).astype(np.int32)
            self._shape = dense.shape
            self.maxprint = 50

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    csc_matrix.__module__, csc_matrix.__qualname__ = "scipy.sparse.csc", "csc_matrix"
    ch_mod.Ch = Ch
    sparse_mod.csc_matrix = csc_matrix
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_mod)
    for parent in ("scipy", "scipy.sparse"):  # pickle imports the parents of the module it names
        if parent not in sys.modules:
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    monkeypatch.setitem(sys.modules, "scipy.sparse.csc", sparse_mod)
    shapedirs = np.zeros((5023, 3, 400), dtype=np.float64)
    shapedirs[:, :, :20] = demo["shapedirs"][:, :, :20]
    shapedirs[:, :, 300:310] = demo["shapedirs"][:, :, 20:]
    official = {
        "f": demo["f"].astype(np.uint32),
        "v_template": Ch(demo["v_template"].astype(np.float64)),
        "shapedirs": Ch(shapedirs),
        "posedirs": Ch(demo["posedirs"].astype(np.float64)),
        "J_regressor": csc_matrix(demo["J_regressor"].astype(np.float64)),
        "weights": Ch(demo["weights"].astype(np.float64)),
        "kintree_table": demo["kintree_table"],
        "J": Ch(demo["J_regressor"] @ demo["v_template"]),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    with open(path, "wb") as fh:
        pickle.dump(official, fh, protocol=2)
    return demo


def test_official_pickle_loads_without_chumpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "generic_model.pkl"
    with monkeypatch.context() as m:
        _imitate_official_pickle(path, m)
    assert "chumpy" not in sys.modules
    data = load_flame(path)
    assert (data.n_shape, data.n_expression) == (300, 100)
    official = FLAME(path, n_shape=20, n_expression=10)
    demo = FLAME()
    g = torch.Generator().manual_seed(0)
    params = FlameParams(
        shape=torch.randn(3, 20, generator=g),
        expression=torch.randn(3, 10, generator=g),
        global_pose=0.3 * torch.randn(3, 3, generator=g),
        neck_pose=0.2 * torch.randn(3, 3, generator=g),
        jaw_pose=0.2 * torch.randn(3, 3, generator=g),
        eye_pose=0.2 * torch.randn(3, 6, generator=g),
    )
    a, b = official(params), demo(params)
    assert torch.allclose(a.vertices, b.vertices, atol=1e-6)
    assert torch.allclose(a.joints, b.joints, atol=1e-6)
    assert official.expression_names is None and official.lid_components == ()  # FLAME's PCA has no names


def test_pickle_with_foreign_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(FlameFileError, match="unexpected object"):
        load_flame(path)


def test_landmark_embedding_payloads_are_refused_and_real_formats_load(tmp_path: Path) -> None:
    """DECA's landmark_embedding.npy (an object array holding a dict of arrays) and FLAME's
    flame_static_embedding.pkl / flame_dynamic_embedding.npy load through the restricted unpickler;
    a payload in any of them is refused before it runs, and an unnamed file beside them is never read."""
    marker = tmp_path / "ran"
    faces, bary = np.arange(51, dtype=np.int64), np.full((51, 3), 1 / 3)
    dyn_faces, dyn_bary = np.zeros((79, 17), np.int64), np.full((79, 17, 3), 1 / 3)
    deca = {"static_lmk_faces_idx": faces, "static_lmk_bary_coords": bary,
            "dynamic_lmk_faces_idx": dyn_faces, "dynamic_lmk_bary_coords": dyn_bary}
    np.save(tmp_path / "landmark_embedding.npy", np.array(deca, dtype=object))
    assert load_landmark_embedding(tmp_path / "landmark_embedding.npy").faces.shape == (68,)
    (tmp_path / "static.pkl").write_bytes(pickle.dumps({"lmk_face_idx": faces, "lmk_b_coords": bary}, protocol=5))
    np.save(tmp_path / "flame_dynamic_embedding.npy", np.array({"lmk_face_idx": dyn_faces, "lmk_b_coords": dyn_bary}, dtype=object))
    assert load_landmark_embedding(tmp_path / "static.pkl", tmp_path / "flame_dynamic_embedding.npy").faces.shape == (68,)

    np.save(tmp_path / "evil.npy", np.array({**deca, "x": Payload(marker)}, dtype=object))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"lmk_face_idx": Payload(marker)}, protocol=2))
    np.save(tmp_path / "evil_list.npy", np.array([Payload(marker)], dtype=object))
    for path in ("evil.npy", "evil.pkl", "evil_list.npy"):
        with pytest.raises(FlameFileError, match="refusing"):
            load_landmark_embedding(tmp_path / path)
    with pytest.raises(FlameFileError, match="refusing"):
        load_landmark_embedding(tmp_path / "static.pkl", tmp_path / "evil.npy")
    # a payload beside a harmless static embedding, under the name FLAME's release gives its dynamic file
    np.save(tmp_path / "flame_dynamic_embedding.npy", np.array({"lmk_face_idx": Payload(marker)}, dtype=object))
    assert load_landmark_embedding(tmp_path / "static.pkl").faces.shape == (51,)
    with pytest.raises(FlameFileError, match="goes with"):
        load_landmark_embedding(tmp_path / "landmark_embedding.npy", tmp_path / "static.pkl")
    assert not marker.exists()


def test_landmark_embedding_flag_refuses_a_payload_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gdpw.cli.main import main

    marker = tmp_path / "ran"
    np.save(tmp_path / "evil.npy", np.array({"lmk_face_idx": Payload(marker)}, dtype=object))
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "in.png")
    assert main(["fit", "--input", str(tmp_path / "in.png"), "--landmark-embedding", str(tmp_path / "evil.npy"),
                 "-o", str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing" in err[0], err
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_truncated_files_give_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: float) -> None:
    good = tmp_path / "generic_model.pkl"
    with monkeypatch.context() as m:
        _imitate_official_pickle(good, m)
    for src in (good, DEMO_HEAD):
        data = src.read_bytes()
        bad = tmp_path / f"bad{src.suffix}"
        bad.write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(FlameFileError):
            load_flame(bad)


def test_missing_flame_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FlameFileError, match="FLAME model not found.*demo head"):
        load_flame(tmp_path / "generic_model.pkl")


def test_landmark_embedding_files(tmp_path: Path) -> None:
    faces = np.arange(68)
    bary = np.full((68, 3), 1 / 3)
    np.save(tmp_path / "landmark_embedding.npy", {"static_lmk_faces_idx": faces, "static_lmk_bary_coords": bary})
    np.savez(tmp_path / "mediapipe_embedding.npz", lmk_face_idx=faces[:10], lmk_b_coords=bary[:10])
    emb = load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    f, b = emb.faces, emb.bary
    assert f.shape == (68,) and b.shape == (68, 3)
    f = load_landmark_embedding(tmp_path / "mediapipe_embedding.npz").faces
    assert f.shape == (10,)
    model = FLAME(landmark_embedding=(faces, bary))
    lmk = model(FlameParams()).landmarks
    expected = model.v_template[model.faces[:68]].mean(1)
    assert lmk is not None and torch.allclose(lmk[0], expected, atol=1e-6)
