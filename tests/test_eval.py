"""Metrics on cases with known answers, FID's network and distance, and the evaluate command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.backbones import FIDInceptionV3
from gdpw.eval.metrics import frechet_distance, l1, psnr, ssim


def test_pixel_metrics_known_answers() -> None:
    a = torch.rand(2, 3, 32, 32)
    assert l1(a, a).max() == 0 and ssim(a, a).min() > 0.9999
    assert psnr(a, (a + 0.1).clamp(0, 1)).min() > 19.9
    b = torch.full((1, 3, 32, 32), 0.5)
    assert torch.allclose(psnr(b, b + 0.1), torch.tensor([20.0]), atol=1e-3)
    assert ssim(a, torch.rand(2, 3, 32, 32)).max() < 0.1


def test_frechet_distance_known_answers() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=g)
    assert abs(frechet_distance(x, x)) < 1e-6
    # N(0, I) vs N(m, I): |m|^2; vs N(0, 4I): 3 * (1 + 4 - 2 * 2) = 3
    assert frechet_distance(x, x + torch.tensor([1.0, 2.0, 0.0])) == pytest.approx(5.0, abs=1e-6)
    assert frechet_distance(torch.randn(20000, 3, generator=g), 2 * torch.randn(20000, 3, generator=g)) == pytest.approx(3.0, abs=0.2)


REFERENCE = Path(__file__).parent / "data" / "metric_reference.pt"  # made by tests/metric_reference.py
U = 2.0**-24


def test_fid_features_and_distance_equal_pytorch_fid() -> None:
    """pytorch-fid 0.3.0's InceptionV3 and Frechet distance, run once on the same seeded weights and images.
    Features: ~100 float32 layers whose convolutions sum in another order on another CPU: 2^11 u of the
    largest feature (here they agree to the bit). The distance: both in float64 from the same features
    (scipy's sqrtm against gdpw's eigendecomposition): 1e-6 relative."""
    from .metric_reference import seeded_state

    ref = torch.load(REFERENCE, weights_only=False)
    net = FIDInceptionV3()
    net.load_state_dict(seeded_state({k: tuple(v.shape) for k, v in net.state_dict().items()}))
    with torch.no_grad():
        for key in ("a", "b"):
            feats, want = net.eval()(ref[f"images_{key}"].float() / 255), ref[f"features_{key}"]
            assert (feats - want).abs().max() <= 2**11 * U * want.abs().max(), key
    assert frechet_distance(ref["features_a"], ref["features_b"]) == pytest.approx(ref["fid"], rel=1e-6)


def test_ssim_and_psnr_equal_scikit_image() -> None:
    """scikit-image's SSIM with the Gaussian window of Wang et al. (sigma 1.5, population covariance,
    data range 1) and its PSNR, on float64 images: agreement to float64 rounding (1e-12)."""
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is a test dependency")
    g = torch.Generator().manual_seed(4)
    a = torch.rand(3, 3, 40, 48, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(3, 3, 40, 48, generator=g, dtype=torch.float64)).clamp(0, 1)
    got_ssim, got_psnr = ssim(a, b), psnr(a, b)
    for i in range(3):
        x, y = a[i].numpy(), b[i].numpy()
        want = metrics.structural_similarity(x, y, channel_axis=0, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
        assert float(got_ssim[i]) == pytest.approx(want, abs=1e-12)
        assert float(got_psnr[i]) == pytest.approx(metrics.peak_signal_noise_ratio(x, y, data_range=1.0), abs=1e-9)


def test_fid_network_shape_and_weight_file(tmp_path: Path) -> None:
    net = FIDInceptionV3().eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 64, 64)).shape == (2, 2048)
    state = {**net.state_dict(), "fc.weight": torch.zeros(1008, 2048)}
    torch.save(state, tmp_path / "pt_inception.pth")
    loaded = FIDInceptionV3.from_file(tmp_path / "pt_inception.pth")
    assert torch.equal(loaded.Mixed_7c.branch_pool.conv.weight, net.Mixed_7c.branch_pool.conv.weight)
    with pytest.raises(FileNotFoundError, match="FID Inception weights not found"):
        FIDInceptionV3.from_file(tmp_path / "missing.pth")


@pytest.fixture(scope="module")
def face_metrics():  # type: ignore[no-untyped-def]
    pytest.importorskip("mediapipe")
    pytest.importorskip("dlib")
    from gdpw.eval.protocol import FaceMetrics
    from gdpw.flame import FLAME

    networks: dict[str, str] = {}
    fm = FaceMetrics(networks, FLAME())
    assert "unavailable" not in networks["CSIM"] and "unavailable" not in networks["AKD"]
    yield fm
    fm.close()


def _astronaut_face() -> torch.Tensor:
    from PIL import Image
    from skimage import data

    face = Image.fromarray(data.astronaut()[0:300, 80:380]).resize((256, 256))
    return torch.from_numpy(np.asarray(face)).permute(2, 0, 1).float() / 255


def test_csim_and_akd_known_answers(face_metrics) -> None:  # type: ignore[no-untyped-def]
    face = _astronaut_face()
    shifted = torch.roll(face, shifts=8, dims=2)  # 8 pixels to the right
    same = face_metrics.evaluate(face[None], face[None], face[None], with_akd=True)
    assert same["CSIM"] == pytest.approx(1.0, abs=1e-6) and same["AKD"] == pytest.approx(0.0, abs=1e-6)
    moved = face_metrics.evaluate(shifted[None], face[None], face[None], with_akd=True)
    assert moved["AKD"] == pytest.approx(8.0, abs=1.0)
    assert moved["CSIM"] > 0.9  # the same person


def test_apd_measures_a_known_head_turn(face_metrics) -> None:  # type: ignore[no-untyped-def]
    from gdpw.data.synth import SynthConfig, make_identity
    from gdpw.flame import FLAME, FlameParams, orthographic
    from gdpw.render.patterns import render_shaded

    flame = FLAME()
    ident = make_identity(flame, SynthConfig(), 3)
    cam = torch.tensor([[6.0, 0.0, 0.02]])
    imgs = []
    for yaw in (0.0, 0.3):
        out = flame(FlameParams(global_pose=torch.tensor([[0.0, yaw, 0.0]])))
        imgs.append(render_shaded(out.vertices, orthographic(out.vertices, cam), flame.faces, (256, 256),
                                  albedo=torch.from_numpy(ident.albedo))[0])
    res = face_metrics.evaluate(imgs[1][None], imgs[0][None], imgs[0][None], with_akd=True)
    # L1 of axis-angle head pose in degrees, averaged over 3 components: 0.3 rad of yaw -> 17.2 / 3.
    # The landmark fitter recovers the yaw (0.33 rad measured) but leaks ~0.02-0.05 rad into pitch
    # and roll under a turn, which the average over components counts: 7.8 measured.
    assert res["APD"] == pytest.approx(17.19 / 3, abs=2.5)
    assert res["AKD"] > 5


def test_evaluate_command_on_a_tiny_split(tmp_path: Path, capsys) -> None:
    from gdpw.cli.main import main
    from gdpw.data import SynthConfig, write_synth_dataset
    from gdpw.model.checkpoint import load_checkpoint
    from gdpw.pipeline.animator import DEMO_CHECKPOINT

    size = load_checkpoint(DEMO_CHECKPOINT).image_size  # the demo generator's crops
    write_synth_dataset(tmp_path / "d", SynthConfig(num_identities=3, clips_per_identity=1, frames_per_clip=7, size=size,
                                                    heldout_identities=2, seed=4), progress=False)
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--max-pairs", "4", "--no-face-metrics", "-o", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| demo_generator |" in text and "FID: unavailable" in text and "skipped" in text
    rows = (tmp_path / "r" / "results.csv").read_text().splitlines()
    assert rows[0] == "method,setting,metric,value" and len(rows) > 10
    assert (tmp_path / "r" / "grid.png").exists()
    # a checkpoint trained at another crop size is refused before any work
    write_synth_dataset(tmp_path / "d32", SynthConfig(num_identities=3, clips_per_identity=1, frames_per_clip=3, size=32,
                                                      heldout_identities=2, seed=4), progress=False)
    capsys.readouterr()
    assert main(["evaluate", "--data", str(tmp_path / "d32"), "--no-face-metrics"]) == 2
    assert f"trained on {size}-pixel crops" in capsys.readouterr().err


def test_flame_without_embedding_reports_aed_apd_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mediapipe")
    from gdpw.eval.protocol import FaceMetrics
    from gdpw.flame import FLAME

    from .test_flame import _imitate_official_pickle

    with monkeypatch.context() as m:
        _imitate_official_pickle(tmp_path / "generic_model.pkl", m)
    networks: dict[str, str] = {}
    fm = FaceMetrics(networks, FLAME(tmp_path / "generic_model.pkl"))
    try:
        assert networks["AED/APD"].startswith("unavailable") and "landmark embedding" in networks["AED/APD"]
        face = _astronaut_face()
        res = fm.evaluate(face[None], torch.roll(face, 8, dims=2)[None], face[None], with_akd=True)
        assert res["AKD"] == pytest.approx(8.0, abs=1.0) and res["AED"] is None and res["APD"] is None
    finally:
        fm.close()
