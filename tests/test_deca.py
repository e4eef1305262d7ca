"""The DECA fitting backend: weight loading, parameter layout, camera conversion, and the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.common.crop import DECA_SIZE, official_boxes
from gdpw.fit.deca import DecaEncoder, deca_fit
from gdpw.pipeline import CropBox


def _deca_file(path: Path) -> Path:
    torch.manual_seed(0)
    net = DecaEncoder()
    torch.save({"E_flame": net.state_dict(), "E_detail": {}, "D_detail": {}}, path)
    return path


def test_loads_e_flame_and_splits_the_parameters(tmp_path: Path) -> None:
    enc = DecaEncoder.from_file(_deca_file(tmp_path / "deca_model.tar"))
    with torch.no_grad():
        out = enc(torch.rand(2, 3, DECA_SIZE, DECA_SIZE))
    # the official decompose_code: lighting as 9 x 3 spherical-harmonic coefficients, a zero eye pose
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {"shape": (100,), "tex": (50,), "exp": (50,), "pose": (6,),
                                                              "cam": (3,), "light": (9, 3), "eye_pose": (6,)}
    with pytest.raises(FileNotFoundError, match="DECA model not found"):
        DecaEncoder.from_file(tmp_path / "missing.tar")
    torch.save({"E_flame": {"layers.0.weight": torch.zeros(3)}}, tmp_path / "bad.tar")
    with pytest.raises(ValueError, match="missing 'encoder.conv1.weight'"):
        DecaEncoder.from_file(tmp_path / "bad.tar")


def test_camera_is_converted_to_the_callers_crop() -> None:
    class Fixed(DecaEncoder):
        def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:  # a known DECA output
            b = images.shape[0]
            return {"shape": torch.zeros(b, 100), "tex": torch.zeros(b, 50), "exp": torch.zeros(b, 50),
                    "pose": torch.zeros(b, 6), "cam": torch.tensor([[8.0, 0.01, -0.02]]).expand(b, 3), "light": torch.zeros(b, 27)}

    lmk = np.array([[100.0, 100.0], [140.0, 150.0]])
    img = np.zeros((300, 300, 3), np.uint8)
    dst = CropBox(50.0, 40.0, 200.0)
    fit = deca_fit(Fixed(), [img], [lmk], [dst], n_shape=300, n_expression=100)
    src = official_boxes(lmk)[0]  # DECA's crop
    # a world point projected by DECA into its crop lands on the same pixel through our camera and box
    x = torch.tensor([0.03, -0.01])
    deca_ndc = torch.stack([8.0 * (x[0] + 0.01), -8.0 * (x[1] - 0.02)])
    pixel = torch.tensor(src.ndc_origin) + (deca_ndc + 1) / 2 * src.size
    s, tx, ty = fit.camera[0]
    ours = torch.stack([s * (x[0] + tx), -s * (x[1] + ty)])
    assert torch.allclose(torch.tensor(dst.ndc_origin) + (ours + 1) / 2 * dst.size, pixel, atol=1e-4)
    assert fit.shape.shape == (300,) and fit.expression.shape == (1, 100)
    with pytest.raises(ValueError, match="100 shape and 50 expression"):
        deca_fit(Fixed(), [img], [lmk], [dst], n_shape=20, n_expression=10)


def test_animate_with_the_deca_fitter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mediapipe")
    from PIL import Image
    from skimage import data

    from gdpw.cli.main import main

    from .test_flame import _imitate_official_pickle

    with monkeypatch.context() as m:
        _imitate_official_pickle(tmp_path / "generic_model.pkl", m)  # FLAME layout: 300 shape, 100 expression
    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")
    deca = _deca_file(tmp_path / "deca_model.tar")
    args = ["frontalize", "--source", str(tmp_path / "a.png"), "-o", str(tmp_path / "f.png"), "--fitter", "deca"]
    assert main(args + ["--deca-model", str(deca), "--flame", str(tmp_path / "generic_model.pkl")]) == 0
    assert (tmp_path / "f.png").exists()
    assert main(args + ["--deca-model", str(deca)]) == 2  # the demo head cannot take DECA fits


def test_flame_without_embedding_needs_one_for_landmark_fitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mediapipe")
    from PIL import Image
    from skimage import data

    from gdpw.cli.main import main
    from gdpw.flame import FLAME

    from .test_flame import _imitate_official_pickle

    with monkeypatch.context() as m:
        _imitate_official_pickle(tmp_path / "generic_model.pkl", m)
    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")
    args = ["frontalize", "--source", str(tmp_path / "a.png"), "-o", str(tmp_path / "f.png"), "--flame", str(tmp_path / "generic_model.pkl")]
    assert main(args) == 2
    demo = FLAME()
    np.save(tmp_path / "landmark_embedding.npy", {"static_lmk_faces_idx": demo.lmk_faces_idx.numpy(),
                                                  "static_lmk_bary_coords": demo.lmk_bary_coords.numpy()})
    assert main(args + ["--landmark-embedding", str(tmp_path / "landmark_embedding.npy")]) == 0


def test_live_with_the_deca_fitter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live stream's frames fitted by DECA's encoder (one frame at a time, smoothed causally)."""
    pytest.importorskip("mediapipe")
    import numpy as np
    from PIL import Image
    from skimage import data

    from gdpw.cli.main import main
    from gdpw.data.video import read_video, write_video

    from .test_flame import _imitate_official_pickle

    with monkeypatch.context() as m:
        _imitate_official_pickle(tmp_path / "generic_model.pkl", m)
    img = data.astronaut()
    Image.fromarray(img).save(tmp_path / "a.png")
    write_video(tmp_path / "cam.mp4", [np.roll(img, 4 * i, axis=1) for i in range(12)], 10.0)
    deca = _deca_file(tmp_path / "deca_model.tar")
    assert main(["live", "--source", str(tmp_path / "a.png"), "--camera", str(tmp_path / "cam.mp4"), "-o",
                 str(tmp_path / "live.mp4"), "--max-frames", "3", "--fitter", "deca", "--deca-model", str(deca),
                 "--flame", str(tmp_path / "generic_model.pkl")]) == 0
    assert read_video(tmp_path / "live.mp4")[0].shape[0] == 3
