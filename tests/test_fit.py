"""FLAME fitting: exact landmarks, MediaPipe on demo-head renders and on a real photo; smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gdpw.data.synth import SynthConfig, render_clip
from gdpw.fit import FitConfig, LandmarkFitter, OneEuroFilter
from gdpw.flame import FLAME, FlameParams, orthographic
from gdpw.flame.lbs import batch_rodrigues, euler_to_axis_angle, matrix_to_axis_angle
from scripts.build_demo_head import IBUG_MIRROR


@pytest.fixture(scope="module")
def flame() -> FLAME:
    return FLAME()


def test_fitting_exact_landmarks_recovers_the_head(flame: FLAME) -> None:
    g = torch.Generator().manual_seed(0)
    t = 3
    true = FlameParams(
        shape=0.8 * torch.randn(1, 20, generator=g).expand(t, -1),
        expression=(0.7 * torch.randn(t, 10, generator=g)).clamp(-0.3, 1.5),
        global_pose=0.25 * torch.randn(t, 3, generator=g),
        jaw_pose=torch.tensor([[0.15, 0.0, 0.0]]).expand(t, 3).clone(),
        eye_pose=0.2 * torch.randn(t, 6, generator=g),
    )
    cam = torch.tensor([[6.0, 0.01, 0.02]]).expand(t, 3)
    out = flame(true)
    fitter = LandmarkFitter(flame)
    lmk = orthographic(out.landmarks, cam)[..., :2]
    iris = orthographic(out.vertices[:, [fitter._pupil(4), fitter._pupil(3)]], cam)[..., :2]
    fit = fitter.fit(lmk, iris)
    assert fit.landmark_error.max() < 0.01  # NDC: a third of a pixel at 64 px
    verr = (fit.image_vertices(flame) - orthographic(out.vertices, cam))[..., :2].norm(dim=-1).mean()
    assert verr < 0.05
    assert (fit.global_pose - true.global_pose).abs().max() < 0.15
    assert (fit.jaw_pose[:, 0] - 0.15).abs().median() < 0.06  # jaw and mouth expressions trade off a little
    assert torch.allclose(fit.camera[:, 0], cam[:, 0], rtol=0.08)


def test_eyelid_weight_lets_a_fit_close_the_eyes(flame: FLAME) -> None:
    # exact landmarks of closed eyes: the lids' 8 points move little in NDC, so at the default prior
    # an unweighted fit stops short of closing them; the eyelid weight lets it close them
    exp = torch.zeros(1, 10)
    exp[0, 4:6] = 1.0
    cam = torch.tensor([[6.0, 0.0, 0.02]])
    lmk = orthographic(flame(FlameParams(expression=exp, jaw_pose=torch.zeros(1, 3))).landmarks, cam)[..., :2]
    unweighted = LandmarkFitter(flame, FitConfig(iterations=200, eyelid_weight=1.0)).fit(lmk)
    default = LandmarkFitter(flame, FitConfig(iterations=200)).fit(lmk)
    assert unweighted.expression[0, 4:6].max() < 0.9
    assert (default.expression[0, 4:6] - 1.0).abs().max() < 0.07
    assert default.expression[0, [0, 1, 2, 3, 6, 7, 8, 9]].abs().max() < 0.15  # the rest stays near rest (0.11 measured)


def test_mediapipe_on_demo_head_renders_recovers_pose(flame: FLAME) -> None:
    pytest.importorskip("mediapipe")
    from gdpw.fit import MediaPipeDetector
    from gdpw.pipeline import crop_box

    clip = render_clip(flame, SynthConfig(size=256, frames_per_clip=10, seed=11), 0, 0)
    fitter = LandmarkFitter(flame)
    with MediaPipeDetector() as det:
        lmks, irises, keep = [], [], []
        for i, img in enumerate(clip.images):
            faces = det.detect(img)
            if faces:
                lmks.append(faces[0].ibug68)
                irises.append(faces[0].irises)
                keep.append(i)
    assert len(keep) >= 8
    box = crop_box(lmks[0])
    lmk = torch.from_numpy(np.stack([box.to_ndc(x) for x in lmks])).float()
    fit = fitter.track(lmk)
    # yaw of the fitted head against the truth, over the clip
    true_yaw = clip.params.global_pose[keep, 1]
    fit_yaw = fit.global_pose[:, 1]
    assert torch.corrcoef(torch.stack([true_yaw, fit_yaw]))[0, 1] > 0.8
    assert (fit_yaw - true_yaw).abs().mean() < 0.2


def test_mediapipe_on_the_astronaut() -> None:
    pytest.importorskip("mediapipe")
    skimage = pytest.importorskip("skimage")
    from gdpw.fit import MediaPipeDetector
    from gdpw.pipeline import crop_box

    img = skimage.data.astronaut()
    with MediaPipeDetector() as det:
        faces = det.detect(img)
    assert len(faces) == 1
    lmk = faces[0].ibug68
    assert lmk.shape == (68, 2)
    assert lmk[36, 0] < lmk[45, 0] and lmk[27, 1] < lmk[57, 1]  # eyes left to right, nose above chin
    fit = LandmarkFitter(FLAME()).fit(torch.from_numpy(crop_box(lmk).to_ndc(lmk))[None].float())
    assert fit.landmark_error[0] < 0.05  # a real face is not the demo head: the fit is close, not exact


def test_one_euro_filter_smooths_noise_and_follows_steps() -> None:
    torch.manual_seed(0)
    t = torch.arange(200) / 25
    clean = torch.where(t > 4, 1.0, 0.0)[:, None]
    noisy = clean + 0.05 * torch.randn(200, 1)
    out = OneEuroFilter(25, min_cutoff=1.0, beta=0.5)(noisy)
    assert (out - clean)[20:90].std() < 0.5 * (noisy - clean)[20:90].std()
    assert (out[-20:] - 1).abs().max() < 0.1


def test_one_euro_filter_per_element_and_the_streams_slow_scale() -> None:
    """Cutoffs per element: a step in all three camera values, the scale (cutoff 0.3 Hz, no speed
    term) is still far from it half a second later while the translation (1.5 Hz and the speed
    term) is nearly there. A live stream of gdpw's recipe filters its cameras so."""
    from gdpw.fit import FaceTracker, TrackConfig
    from gdpw.flame import FLAME

    f = OneEuroFilter(25, torch.tensor([0.3, 1.5, 1.5]), torch.tensor([0.0, 0.3, 0.3]))
    out = f(torch.cat([torch.zeros(10, 3), torch.ones(13, 3)]))  # half a second after the step
    assert out[-1, 0] < 0.7 and (out[-1, 1:] > 0.9).all()
    assert torch.equal(OneEuroFilter(25, torch.full((3,), 1.5), 0.3)(out), OneEuroFilter(25, 1.5, 0.3)(out))
    tracker = FaceTracker(FLAME())
    stream = tracker.stream()
    camera = stream._filters["camera"]
    assert isinstance(camera.min_cutoff, torch.Tensor) and camera.min_cutoff[0] == FitConfig().stream_scale_cutoff
    assert camera.min_cutoff[1] == stream._filters["expression"].min_cutoff == FitConfig().stream_min_cutoff != 1.5
    tracker.close()
    explicit = FaceTracker(FLAME(), TrackConfig(fit=FitConfig(smooth_min_cutoff=1.0)))  # an explicit cutoff wins
    assert explicit.stream()._filters["expression"].min_cutoff == 1.0
    explicit.close()


def test_rotation_helpers_roundtrip() -> None:
    aa = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0], [0.0, 2.5, 0.0]])
    assert torch.allclose(matrix_to_axis_angle(batch_rodrigues(aa)), aa, atol=1e-4)
    yaw = euler_to_axis_angle(torch.tensor([0.4]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert torch.allclose(yaw, torch.tensor([[0.0, 0.4, 0.0]]), atol=1e-5)


def test_tracking_in_windows_follows_a_moving_head(flame: FLAME) -> None:
    """Windows of 8 frames over a 20-frame clip: the pose follows the truth, no jump at the seams."""
    clip = render_clip(flame, SynthConfig(size=32, frames_per_clip=20, seed=3), 0, 0)
    true = {k: v for k, v in vars(clip.params.params()).items() if k != "neck_pose"}
    cam = torch.tensor([[6.0, 0.0, 0.02]]).expand(20, 3)
    lmk = orthographic(flame(FlameParams(**true)).landmarks, cam)[..., :2]
    fit = LandmarkFitter(flame, FitConfig(track_window=8, iterations=200, smooth_min_cutoff=0)).track(lmk)
    assert fit.global_pose.shape == (20, 3)
    assert (fit.global_pose[:, 1] - true["global_pose"][:, 1]).abs().mean() < 0.05  # yaw
    # pitch up to a constant (orthographic pitch trades off with shape), so its motion
    pitch, true_pitch = fit.global_pose[:, 0], true["global_pose"][:, 0]
    assert ((pitch - pitch.mean()) - (true_pitch - true_pitch.mean())).abs().mean() < 0.05
    steps = (fit.global_pose[1:] - fit.global_pose[:-1]).norm(dim=1)
    true_steps = (true["global_pose"][1:] - true["global_pose"][:-1]).norm(dim=1)
    assert (steps[[7, 15]] - true_steps[[7, 15]]).abs().max() < 0.05  # window seams after frames 7 and 15


def test_mediapipe_68_points_mirror_on_a_symmetric_face(flame: FLAME) -> None:
    """A frontal, frontally lit demo head: each of the 68 points mirrors its iBUG partner."""
    pytest.importorskip("mediapipe")
    from gdpw.fit import MediaPipeDetector
    from gdpw.render.patterns import render_shaded

    assert sorted(IBUG_MIRROR) == list(range(68)) and (IBUG_MIRROR[IBUG_MIRROR] == np.arange(68)).all()
    out = flame(FlameParams(global_pose=torch.zeros(1, 3)))
    cam = torch.tensor([[6.0, 0.0, 0.02]])
    img = render_shaded(out.vertices, orthographic(out.vertices, cam), flame.faces, (256, 256), light=(0.0, 0.0, 1.0))[0]
    image = (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.abs(image.astype(int) - image[:, ::-1]).mean() < 2  # the render itself is symmetric
    with MediaPipeDetector() as det:
        faces = det.detect(image)
    assert faces
    pts = faces[0].ibug68
    mirrored = pts[IBUG_MIRROR] * np.array([-1.0, 1.0]) + np.array([256.0, 0.0])
    assert np.abs(pts - mirrored).max() < 10.0  # pixels: MediaPipe itself is up to ~7 px asymmetric here


def test_blendshape_observations_pull_the_expression(flame: FLAME) -> None:
    from gdpw.flame import BlendshapeMap, HeadConfig
    from gdpw.flame.blendshapes import DEMO_BLENDSHAPES

    shipped = BlendshapeMap.from_file(DEMO_BLENDSHAPES)
    assert shipped.weights.shape == (len(shipped.names) + 1, 11) and shipped.n_expression == 10
    assert shipped.predict({"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}).shape == (11,)
    assert HeadConfig().load_blendshapes() is None  # off unless given
    given = HeadConfig(blendshape_map=str(DEMO_BLENDSHAPES)).load_blendshapes()
    assert given is not None and given.names == shipped.names
    true = FlameParams(expression=torch.zeros(1, 10), jaw_pose=torch.zeros(1, 3))
    cam = torch.tensor([[6.0, 0.0, 0.02]])
    lmk = orthographic(flame(true).landmarks, cam)[..., :2]
    observed = torch.tensor([[0.8, 0, 0, 0, 0.5, 0.5, 0, 0, 0, 0, 0.05]])
    fitter = LandmarkFitter(flame, FitConfig(iterations=150, blendshape_weight=1.0))
    pulled = fitter.fit(lmk, observed=observed)
    plain = fitter.fit(lmk)
    assert (pulled.expression[0, [0, 4, 5]] - observed[0, [0, 4, 5]]).abs().max() < 0.1
    assert plain.expression[0, [0, 4, 5]].abs().max() < 0.3


def test_solve_lands_on_the_fitting_losss_optimum(flame: FLAME) -> None:
    """``solve`` with pose, jaw, eyes and camera kept lands on the minimum of the fitting loss
    over the expression (landmarks, irises, prior, blendshapes' pull): its gradient there vanishes
    (against its size at the start), no expression scores lower (not the truth, nor a step along
    any component) and the truth's landmarks are met. With ``pose``, from a head turned 3 degrees
    and a camera off by 5 %, its Gauss-Newton steps reach the optimum over pose and camera too,
    and the true head pose."""
    from gdpw.flame import FlameSequence

    g = torch.Generator().manual_seed(3)
    t = 2
    true = FlameParams(shape=0.8 * torch.randn(1, 20, generator=g).expand(t, -1),
                       expression=(0.7 * torch.randn(t, 10, generator=g)).clamp(-0.3, 1.5),
                       global_pose=0.25 * torch.randn(t, 3, generator=g),
                       jaw_pose=torch.tensor([[0.15, 0.0, 0.0]]).expand(t, 3).clone(),
                       eye_pose=0.2 * torch.randn(t, 6, generator=g))
    cam = torch.tensor([[6.0, 0.01, 0.02]]).expand(t, 3)
    out = flame(true)
    fitter = LandmarkFitter(flame)
    lmk = orthographic(out.landmarks, cam)[..., :2]
    iris = orthographic(out.vertices[:, [fitter._pupil(4), fitter._pupil(3)]], cam)[..., :2]
    observed = torch.rand(t, 11, generator=g)
    start = FlameSequence(true.shape[0], torch.zeros(t, 10), true.global_pose, true.jaw_pose, true.eye_pose, cam)

    def loss_and_grad(fit: FlameSequence, obs: torch.Tensor | None) -> tuple[float, float, float]:
        """The loss, and its gradient's norm over the expression and over pose and camera."""
        vars = {"shape": fit.shape, "expression": fit.expression.clone(), "global_pose": fit.global_pose.clone(),
                "jaw_pose": fit.jaw_pose, "eye_pose": fit.eye_pose, **fitter._camera_vars(fit.camera)}
        free = [vars[k].requires_grad_(True) for k in ("expression", "global_pose", "log_scale", "trans")]
        with torch.enable_grad():
            loss, _ = fitter._loss(vars, lmk, iris, False, None, obs)
            grads = torch.autograd.grad(loss, free)
        return float(loss.detach()), float(grads[0].norm()), float(torch.cat([x.flatten() for x in grads[1:]]).norm())

    for obs in (None, observed):
        got = fitter.solve(lmk, iris, start, obs)
        assert torch.equal(got.global_pose, start.global_pose) and torch.equal(got.camera, start.camera)
        loss, grad, _ = loss_and_grad(got, obs)
        assert grad < 1e-3 * loss_and_grad(start, obs)[1]
        assert loss <= loss_and_grad(start.replace(expression=true.expression), obs)[0] * (1 + 1e-4)
        for step in 0.1 * torch.eye(10):  # the loss is convex in the expression: any step away costs
            assert min(loss_and_grad(got.replace(expression=got.expression + s), obs)[0] for s in (step, -step)) > loss
    plain = fitter.solve(lmk, iris, start)
    pred, _ = fitter.project(plain.shape, plain.expression, plain.global_pose, plain.jaw_pose, plain.eye_pose, cam)
    assert (pred - lmk).norm(dim=-1).mean() < 1e-3  # NDC: the priors' pull is a small fraction of a pixel

    turned = start.replace(global_pose=true.global_pose + torch.tensor([0.05, -0.03, 0.02]),
                           camera=cam * torch.tensor([1.05, 1.0, 1.0]) + torch.tensor([0.0, 0.01, -0.01]))
    before = loss_and_grad(turned, observed)
    solved = fitter.solve(lmk, iris, turned, observed, pose=True, iterations=4)
    after = loss_and_grad(solved, observed)
    at_truth = loss_and_grad(fitter.solve(lmk, iris, start, observed), observed)[0]  # true pose and camera
    assert after[0] <= at_truth * (1 + 1e-4) and after[1] < 1e-3 * before[1] and after[2] < 1e-3 * before[2]
    unpulled = fitter.solve(lmk, iris, turned, pose=True, iterations=4)  # nothing but the priors pulls from the truth
    assert (unpulled.global_pose - true.global_pose).abs().max() < np.radians(0.5)
    assert ((unpulled.camera[:, 0] - cam[:, 0]).abs() / cam[:, 0]).max() < 0.01
