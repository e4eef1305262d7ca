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


@pytest.mark.parametrize("n, m", [(12, 9), (40, 40), (41, 60)])
def test_frechet_distance_equals_scipy_sqrtm_with_few_or_many_samples(n: int, m: int) -> None:
    """pytorch-fid's formula (scipy's sqrtm of the covariances' product) on 40 features: fewer samples
    than features (the cross-Gram path), as many, and more (the covariance path)."""
    from scipy import linalg

    g = torch.Generator().manual_seed(n * m)
    a = torch.randn(n, 40, generator=g, dtype=torch.float64) @ torch.randn(40, 40, generator=g, dtype=torch.float64)
    b = 0.5 + torch.randn(m, 40, generator=g, dtype=torch.float64) * torch.linspace(0.2, 2.0, 40, dtype=torch.float64)
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    want = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-6)


REFERENCE = Path(__file__).parent / "data" / "metric_reference.pt"  # made by tests/metric_reference.py
U = 2.0**-24


def test_fid_features_and_distance_equal_pytorch_fid() -> None:
    """pytorch-fid 0.3.0's InceptionV3 and Frechet distance, run once on the same seeded weights and images.
    Features: ~100 float32 layers whose convolutions sum in another order on another CPU: 2^11 u of the
    largest feature (here they agree to the bit). The distance: both in float64 from the same features
    (scipy's sqrtm against gdpw's eigendecomposition): 1e-6 relative."""
    from .metric_reference import SEED, seeded_tensors

    ref = torch.load(REFERENCE, weights_only=False)
    net = FIDInceptionV3()
    net.load_state_dict(seeded_tensors({k: tuple(v.shape) for k, v in net.state_dict().items()}, SEED))
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
    return torch.from_numpy(np.array(face)).permute(2, 0, 1).float() / 255


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
    # L1 of yaw, pitch and roll in degrees, averaged over the 3 angles: 0.3 rad of yaw -> 17.19 / 3.
    assert res["APD"] == pytest.approx(17.19 / 3, abs=2.5)
    assert res["AKD"] > 5
    turned = face_metrics.face(imgs[1])
    front = face_metrics.face(imgs[0])
    assert turned is not None and front is not None and turned.angles is not None and front.angles is not None
    dyaw, dpitch, droll = ((turned.angles - front.angles).abs() * 180 / np.pi).tolist()
    # the turn is measured as yaw (measured: yaw 14.8, pitch 0.15, roll 3.2 degrees; APD 6.08)
    assert dyaw == pytest.approx(17.19, abs=4) and dpitch < 5 and droll < 5


def _seeded_file(net: torch.nn.Module, seed: int, path: Path) -> Path:
    from .metric_reference import seeded_tensors

    net.load_state_dict({**net.state_dict(), **seeded_tensors({k: tuple(v.shape) for k, v in net.state_dict().items()
                                                               if v.is_floating_point()}, seed)})
    torch.save(net.state_dict(), path)
    return path


def test_user_brought_arcface_and_fan_give_csim_and_akd_and_are_named(tmp_path: Path) -> None:
    """The paper's networks (here with seeded random weights in their files' layouts) replace dlib
    and MediaPipe for CSIM and AKD, and the report names each file."""
    pytest.importorskip("mediapipe")
    from gdpw.backbones.arcface import IResNet
    from gdpw.backbones.fan import FAN
    from gdpw.eval.protocol import FaceMetrics
    from gdpw.flame import FLAME

    arc = _seeded_file(IResNet((1, 1, 1, 1)), 11, tmp_path / "backbone.pth")
    fan = _seeded_file(FAN(1), 12, tmp_path / "2DFAN4.pth")
    networks: dict[str, str] = {}
    fm = FaceMetrics(networks, FLAME(), identity_weights=str(arc), fan_weights=str(fan))
    try:
        assert "ArcFace" in networks["CSIM"] and "backbone.pth" in networks["CSIM"]
        assert "FAN" in networks["AKD"] and "2DFAN4.pth" in networks["AKD"]
        face = _astronaut_face()
        same = fm.evaluate(face[None], face[None], face[None], with_akd=True)
        assert same["CSIM"] == pytest.approx(1.0, abs=1e-6) and same["AKD"] == 0
        other = fm.evaluate(face.flip(0)[None], face[None], face[None], with_akd=True)  # colours swapped: another embedding
        assert other["CSIM"] is not None and other["CSIM"] < 1 - 1e-4
        found = fm.face(face)
        assert found is not None and found.akd_points.shape == (68, 2)
        assert not np.allclose(found.akd_points, found.ibug68)  # FAN's points, not MediaPipe's
    finally:
        fm.close()


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
    assert "LPIPS: unavailable" in text
    # user-brought LPIPS files (seeded random weights in the lpips/torchvision layouts) fill the column
    from gdpw.backbones.lpips import LPIPS

    lp = LPIPS("alex")
    _seeded_file(lp, 13, tmp_path / "x.pth")
    torch.save({k: v for k, v in lp.state_dict().items() if k.startswith("features.")}, tmp_path / "alexnet.pth")
    torch.save({k: v for k, v in lp.state_dict().items() if k.startswith("lin")}, tmp_path / "alex.pth")
    lp_args = ["--lpips-weights", str(tmp_path / "alex.pth"), "--lpips-trunk-weights", str(tmp_path / "alexnet.pth")]
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--max-pairs", "4", "--no-face-metrics", "--no-baselines",
                 "-o", str(tmp_path / "r2"), *lp_args]) == 0
    header, _, row = (tmp_path / "r2" / "report.md").read_text().splitlines()[:3]
    lpips_cell = row.split("|")[header.split("|").index(" same LPIPS ")]
    assert float(lpips_cell) > 0 and "LPIPS: lpips package's alex LPIPS v0.1 from alex.pth" in (tmp_path / "r2" / "report.md").read_text()
    capsys.readouterr()
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--no-face-metrics", *lp_args[:2]]) == 2
    assert "needs both" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--identity-weights", str(tmp_path / "alex.pth")]) == 2
    assert "not ArcFace" in capsys.readouterr().err
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


def test_lpips_equals_the_lpips_package() -> None:
    """lpips 0.1.4 (v0.1, AlexNet and VGG-16 trunks) on the same seeded weights and images. Each
    distance is a sum over 5 layers of means of squared differences of unit-normalised features:
    the features carry the trunk's float32 rounding (2^11 u relative, as FID's), which the
    normalisation and the squared difference keep relative: 2^12 u of the distance."""
    from gdpw.backbones.lpips import LPIPS

    from .metric_reference import LPIPS_TRUNKS, SEED, seeded_tensors

    ref = torch.load(REFERENCE, weights_only=False)
    for k, trunk in enumerate(LPIPS_TRUNKS):
        net = LPIPS(trunk)
        shapes = {key: tuple(v.shape) for key, v in net.state_dict().items() if key not in ("shift", "scale")}
        net.load_state_dict({**net.state_dict(), **seeded_tensors(shapes, SEED + 1000 * (k + 1))})
        with torch.no_grad():
            got = net(ref["images_a"].float() / 255, ref["images_b"].float() / 255)
            same = net(ref["images_a"].float() / 255, ref["images_a"].float() / 255)
        want = ref[f"lpips_{trunk}"]
        assert (got - want).abs().max() <= 2**12 * U * want.abs().max(), trunk
        assert same.abs().max() == 0, trunk


def test_lpips_weight_files(tmp_path: Path) -> None:
    from gdpw.backbones.lpips import LPIPS
    from gdpw.common.errors import CheckpointError

    net = LPIPS("alex")
    trunk = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    lin = {k: v for k, v in net.state_dict().items() if k.startswith("lin")}
    torch.save(trunk, tmp_path / "alexnet.pth")
    torch.save(lin, tmp_path / "alex.pth")
    loaded = LPIPS.from_files(tmp_path / "alexnet.pth", tmp_path / "alex.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    with pytest.raises(CheckpointError, match="not LPIPS linear weights"):
        LPIPS.from_files(tmp_path / "alexnet.pth", tmp_path / "alexnet.pth")
    with pytest.raises(CheckpointError, match="features.0.weight. has shape"):
        LPIPS.from_files(tmp_path / "alexnet.pth", tmp_path / "alex.pth", trunk="vgg")
    with pytest.raises(FileNotFoundError, match="alexnet-owt"):
        LPIPS.from_files(tmp_path / "missing.pth", tmp_path / "alex.pth")


def _seeded_fan():  # type: ignore[no-untyped-def]
    from gdpw.backbones.fan import FAN

    from .metric_reference import SEED, seeded_tensors

    net = FAN(4)
    net.load_state_dict(seeded_tensors({k: tuple(v.shape) for k, v in net.state_dict().items()}, SEED + 5000))
    return net


def test_fan_crop_network_and_decoding_equal_face_alignment() -> None:
    """face-alignment 1.5.0, stage by stage, on a box inside the image and one over two borders:
    - the crop: the same integer corners and black border; OpenCV resizes uint8 with 11-bit fixed-point
      weights, gdpw in float32: one grey level at most;
    - the network on the reference's crop: ~200 float32 conv layers summed in another order: 2^12 u
      of the largest heatmap value;
    - decoding the reference's heatmaps: equal (arg-max, quarter-pixel steps, whole image pixels)."""
    from gdpw.backbones.fan import box_centre_scale, crop_face, decode_heatmaps

    from .metric_reference import FAN_BOXES

    ref = torch.load(REFERENCE, weights_only=False)
    image = ref["fan_image"].numpy()
    net = _seeded_fan()
    for i, box in enumerate(FAN_BOXES):
        centre, scale = box_centre_scale(box)
        want_crop = ref[f"fan_crop_{i}"].permute(2, 0, 1).float()
        got_crop = crop_face(image, centre, scale) * 255
        assert (got_crop - want_crop).abs().max() <= 1, i
        if i == 1:  # left of the image and below it: black in both
            assert (want_crop[:, :, :8] == 0).all() and (want_crop[:, -8:] == 0).all()
            assert (got_crop[:, :, :8] == 0).all() and (got_crop[:, -8:] == 0).all()
        if i == 0:
            with torch.no_grad():
                heat = net((want_crop / 255)[None])[-1][0]
            want_heat = ref["fan_heatmaps_0"]
            assert (heat - want_heat).abs().max() <= 2**12 * U * want_heat.abs().max()
            pts, pts_img = decode_heatmaps(want_heat, centre, scale)
            assert np.array_equal(pts, ref["fan_points_0"].numpy())
            assert np.array_equal(pts_img, ref["fan_points_image_0"].numpy())


def test_fan_weight_files(tmp_path: Path) -> None:
    from gdpw.backbones.fan import FAN
    from gdpw.common.errors import CheckpointError

    net = FAN(1)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "fan.pth.tar")
    assert FAN.from_file(tmp_path / "fan.pth.tar").stacks == 1
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 64, 64)), str(tmp_path / "fan.zip"))
    loaded = FAN.from_file(tmp_path / "fan.zip")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not FAN weights"):
        FAN.from_file(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not readable"):
        FAN.from_file(tmp_path / "junk.pth")


def test_arcface_alignment_equals_scikit_image_and_weights_load(tmp_path: Path) -> None:
    """The five-point similarity equals scikit-image's (insightface's ``norm_crop`` estimates it with
    ``SimilarityTransform``) to float64 rounding; the warp puts the points on the template; an
    arcface_torch-layout r18 file loads with its depth read from the keys and gives unit embeddings."""
    transform = pytest.importorskip("skimage.transform", reason="scikit-image is a test dependency")
    from gdpw.backbones.arcface import TEMPLATE, IResNet, align_face, similarity_transform
    from gdpw.common.errors import CheckpointError

    rng = np.random.default_rng(3)
    for _ in range(5):
        pts = TEMPLATE * rng.uniform(0.5, 3) + rng.normal(0, 4, (5, 2)) + rng.uniform(-50, 200, 2)
        want = transform.SimilarityTransform.from_estimate(pts, TEMPLATE).params
        assert np.abs(similarity_transform(pts, TEMPLATE) - want).max() < 1e-9
    # an image whose pixel values are their own coordinates: the crop reads where the transform says
    h, w = 300, 260
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    image = torch.stack([xs, ys, torch.zeros_like(xs)])
    pts = TEMPLATE * 2.0 + np.array([30.0, 40.0])
    crop = align_face(image, pts)
    assert torch.allclose(crop[0, 10:100, 10:100], 2 * torch.arange(10, 100, dtype=torch.float64)[None] + 30, atol=1e-9)
    assert torch.allclose(crop[1, 10:100, 10:100], 2 * torch.arange(10, 100, dtype=torch.float64)[:, None] + 40, atol=1e-9)

    net = IResNet((2, 2, 2, 2))
    torch.save(net.state_dict(), tmp_path / "backbone.pth")
    loaded = IResNet.from_file(tmp_path / "backbone.pth")
    assert loaded.blocks == (2, 2, 2, 2)
    emb = loaded(torch.rand(2, 3, 112, 112))
    assert emb.shape == (2, 512) and torch.allclose(emb.norm(dim=1), torch.ones(2))
    torch.save({"fc.weight": torch.zeros(512, 10)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not ArcFace"):
        IResNet.from_file(tmp_path / "other.pth")


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    """PyTorch on one thread here, as in the workers below (--threads 1): the generated images differ in
    rounding with the thread count, and MediaPipe's landmarks on them by more (0.2 % of AKD)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sharded_evaluation_merges_into_the_same_report(tmp_path: Path, capsys, one_thread) -> None:  # type: ignore[no-untyped-def]
    """Two --shard runs and a --merge, a pool of 2 and Ray give the report of one run: every metric
    a mean over the same pairs, FID from the pooled features (seeded Inception weights stand in for
    pytorch-fid's)."""
    import csv
    import importlib.util
    import os

    from gdpw.backbones import FIDInceptionV3
    from gdpw.cli.main import main
    from gdpw.data import SynthConfig, write_synth_dataset
    from gdpw.model.checkpoint import load_checkpoint
    from gdpw.pipeline.animator import DEMO_CHECKPOINT

    size = load_checkpoint(DEMO_CHECKPOINT).image_size
    write_synth_dataset(tmp_path / "d", SynthConfig(num_identities=3, clips_per_identity=1, frames_per_clip=7, size=size,
                                                    heldout_identities=2, seed=4), progress=False)
    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), tmp_path / "inception.pth")
    common = ["evaluate", "--data", str(tmp_path / "d"), "--max-pairs", "4", "--no-baselines",
              "--fid-weights", str(tmp_path / "inception.pth")]
    assert main([*common, "-o", str(tmp_path / "one")]) == 0
    for j in range(2):
        assert main([*common, "-o", str(tmp_path / "shards"), "--shard", f"{j}/2"]) == 0
    assert not (tmp_path / "shards" / "report.md").exists()
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--merge", str(tmp_path / "shards"), "-o", str(tmp_path / "merged")]) == 0

    def table(folder: str) -> dict[tuple[str, str, str], str]:
        with open(tmp_path / folder / "results.csv") as fh:
            return {(r["method"], r["setting"], r["metric"]): r["value"] for r in csv.DictReader(fh)}

    assert main([*common, "-o", str(tmp_path / "pool"), "--workers", "2", "--threads", "1"]) == 0  # slices in parallel
    runs = ["merged", "pool"]
    if importlib.util.find_spec("ray") is not None:
        assert main([*common, "-o", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2", "--threads", "1"]) == 0
        runs.append("ray")
    elif os.environ.get("CI"):
        pytest.fail("ray is required in CI")
    one = table("one")
    assert one[("demo_generator", "same", "FID")] != ""
    for run in runs:
        other = table(run)
        assert one.keys() == other.keys(), run
        for key, value in one.items():  # per-pair values from batches of another size: float32 rounding only
            assert (value == "") == (other[key] == ""), (run, key)
            if value:
                assert float(other[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-6), (run, key)
    # a shard missing: named, not averaged over
    (tmp_path / "shards" / "pairs.1-of-2.npz").unlink()
    capsys.readouterr()
    assert main(["evaluate", "--data", str(tmp_path / "d"), "--merge", str(tmp_path / "shards")]) == 2
    assert "missing from the shards" in capsys.readouterr().err
