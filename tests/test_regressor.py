"""The learned FLAME regressor: accuracy on held-out renders, live tracking with it, its file and
``gdpw fit --train-regressor``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.cli.main import main
from gdpw.common.crop import CropBox
from gdpw.data.synth import SynthConfig, make_motion, render_clip
from gdpw.fit import FaceTracker, MediaPipeDetector
from gdpw.fit.regressor import FlameRegressor, head_fingerprint
from gdpw.flame import FLAME, HeadConfig
from gdpw.flame.flame import DEMO_REGRESSOR

FPS = 10.0


@pytest.fixture(scope="module")
def flame() -> FLAME:
    return FLAME()


@pytest.fixture(scope="module")
def regressor(flame: FLAME) -> FlameRegressor:
    return FlameRegressor.from_file(DEMO_REGRESSOR, flame)


def _read(images: np.ndarray) -> list:  # type: ignore[type-arg]
    with MediaPipeDetector(max_faces=1) as det:
        return [det.detect(image) for image in images]


def test_shipped_regressor_recovers_parameters_of_unseen_heads(flame: FLAME, regressor: FlameRegressor) -> None:
    """Heads of another seed than the training renders' (identities, motion, light and backgrounds
    never seen), each frame read against its clip's first (given that frame's true parameters, as
    live tracking gives its reference's fit): the errors are near the held-out accuracy the file
    states, the jaw and the blinks follow the truth, and MediaPipe's turn of the head is within a
    few degrees of the truth."""
    cfg = SynthConfig(size=256, frames_per_clip=12, fps=2.5, seed=123)
    box = CropBox(0.0, 0.0, 256.0)
    got, turned, unturned, truth = [], [], [], []
    for clip in range(4):
        params, camera = make_motion(flame, cfg, clip, 0)
        params["neck_pose"][:] = 0.0
        rendered = render_clip(flame, cfg, clip, 0, motion=(params, camera))
        read = [(t, faces[0]) for t, faces in enumerate(_read(rendered.images)) if faces]
        reference = rendered.params.select([read[0][0]])
        ref = regressor.reference(read[0][1], box, reference)
        for t, face in read[1:]:
            got.append(regressor.predict(face, box, ref))
            turned.append(regressor.head_rotation(face, ref))
            unturned.append(reference.global_pose)
            truth.append(rendered.params.select([t]))
    assert len(got) >= 36
    a = regressor.accuracy
    rot = np.degrees(np.mean([(g.global_pose - t.global_pose).norm().item() for g, t in zip(got, truth)]))
    mp_rot, still = (np.degrees(np.mean([(g - t.global_pose).norm().item() for g, t in zip(poses, truth)]))
                     for poses in (turned, unturned))
    jaw = np.array([[g.jaw_pose[0, 0].item(), t.jaw_pose[0, 0].item()] for g, t in zip(got, truth)])
    blink = np.array([[g.expression[0, 4:6].mean().item(), t.expression[0, 4:6].mean().item()] for g, t in zip(got, truth)])
    scale = np.mean([abs(g.camera[0, 0].item() / t.camera[0, 0].item() - 1) for g, t in zip(got, truth)])
    print(f"rotation {rot:.2f} deg (stated {a['head_rotation_deg']:.2f}; MediaPipe's turn {mp_rot:.2f}, "
          f"the reference's pose {still:.2f}), jaw MAE "
          f"{np.abs(jaw[:, 0] - jaw[:, 1]).mean():.3f} (stated {a['jaw_open_mae']:.3f}), jaw r {np.corrcoef(jaw.T)[0, 1]:.2f}, "
          f"blink r {np.corrcoef(blink.T)[0, 1]:.2f}, scale {scale:.3f}")
    assert a["frames"] >= 500 and a["head_rotation_deg"] < 5.0 and a["expression_r"] > 0.3
    # MediaPipe reads renders' pose less well than real faces' (on real drivers within a degree of the
    # landmark fit: docs/real_follow.md); here it must at least follow the turns
    assert rot < 1.5 * a["head_rotation_deg"] + 1.0 and mp_rot < 0.5 * still
    assert np.abs(jaw[:, 0] - jaw[:, 1]).mean() < 1.5 * a["jaw_open_mae"] + 0.02
    assert np.corrcoef(jaw.T)[0, 1] > 0.6 and np.corrcoef(blink.T)[0, 1] > 0.6
    assert scale < 0.06


def _stream(flame: FLAME, images: np.ndarray, regressor: bool = True, path: str | Path | None = DEMO_REGRESSOR,
            iterations: int | None = None) -> tuple[list, FaceTracker]:  # type: ignore[type-arg]
    tracker = FaceTracker(flame, regressor=path)
    stream = tracker.stream(iterations, regressor)
    fits = [stream.step(image, i / FPS)[1] for i, image in enumerate(images)]
    tracker.close()
    return fits, tracker


def test_live_tracking_by_the_regressor_follows_a_head_turn_and_a_jaw_opening(flame: FLAME) -> None:
    from gdpw.data.synth import head_turn

    cfg = SynthConfig(size=256, frames_per_clip=20, seed=7, fps=FPS)
    params, camera = head_turn(flame, cfg, 1, 1)
    params["jaw_pose"][:, 0] = 0.3 * np.clip(np.sin(np.linspace(0, 2 * np.pi, cfg.frames_per_clip)), 0, None)
    clip = render_clip(flame, cfg, 1, 1, motion=(params, camera))
    fits, tracker = _stream(flame, clip.images)
    assert tracker.regressor is not None
    yaw = np.degrees([f.global_pose[0, 1].item() for f in fits])
    jaw = np.array([f.jaw_pose[0, 0].item() for f in fits])
    true_yaw, true_jaw = np.degrees(params["global_pose"][:, 1]), params["jaw_pose"][:, 0]
    print("yaw r", np.corrcoef(yaw, true_yaw)[0, 1], "range", np.ptp(yaw), "jaw r", np.corrcoef(jaw, true_jaw)[0, 1],
          "range", np.ptp(jaw))
    assert np.corrcoef(yaw, true_yaw)[0, 1] > 0.95 and 0.7 * np.ptp(true_yaw) < np.ptp(yaw) < 1.3 * np.ptp(true_yaw)
    assert np.corrcoef(jaw, true_jaw)[0, 1] > 0.8 and np.ptp(jaw) > 0.5 * np.ptp(true_jaw)


def _assert_falls_back(flame: FLAME, images: np.ndarray, path: Path, capsys: pytest.CaptureFixture[str], why: str) -> None:
    fits, tracker = _stream(flame, images[:3], path=path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0] and "fitting landmarks instead" in err[0], err
    assert tracker.regressor is None and len(fits) == 3
    assert all(torch.isfinite(f.global_pose).all() for f in fits)


def test_a_missing_or_bad_regressor_file_gives_one_line_and_falls_back_to_fitting(flame: FLAME, regressor: FlameRegressor,
                                                                                  tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    images = render_clip(flame, SynthConfig(size=256, frames_per_clip=3, seed=5), 0, 0).images
    _assert_falls_back(flame, images, tmp_path / "none.npz", capsys, "not found")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(DEMO_REGRESSOR.read_bytes()[:5000])
    _assert_falls_back(flame, images, corrupt, capsys, "not a FLAME regressor")
    other = tmp_path / "other.npz"
    replace(regressor, head="0" * 16).save(other)
    _assert_falls_back(flame, images, other, capsys, "another head model")
    nan = tmp_path / "nan.npz"
    broken = replace(regressor, out_std=regressor.out_std.clone())
    broken.out_std[0] = float("nan")
    broken.save(nan)
    _assert_falls_back(flame, images, nan, capsys, "NaN")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{"net.layers.0.weight": np.array([object()], dtype=object)})
    _assert_falls_back(flame, images, pickled, capsys, "not a FLAME regressor")
    # without a regressor the stream refines each frame from the previous one, as before
    _, tracker = _stream(flame, images[:2], regressor=False)
    assert capsys.readouterr().err == ""


def test_gdpw_fit_trains_a_regressor_that_loads(flame: FLAME, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "mine.npz"
    assert main(["fit", "--train-regressor", "--regressor", str(out), "--train.clips", "4", "--train.clips-per-chunk", "2",
                 "--train.steps", "30", "--train.heldout", "0.25"]) == 0
    line = capsys.readouterr().out
    assert f"wrote {out}" in line and "held out" in line
    trained = FlameRegressor.from_file(out, flame)
    assert trained.head == head_fingerprint(flame) and trained.accuracy["frames"] > 0
    assert sorted(p.name for p in (tmp_path / "mine.examples").rglob("*.npz")) == ["chunk-00000.npz", "chunk-00002.npz"]
    # the demo head ships its regressor: a new one needs a name; input fitting flags do not mix
    assert main(["fit", "--train-regressor"]) == 2
    assert "--regressor PATH" in capsys.readouterr().err
    assert main(["fit", "--train-regressor", "--regressor", str(out), "--input", "x.jpg"]) == 2
    assert main(["fit", "--output", "x.npz"]) == 2
    assert HeadConfig(flame="models/generic_model.pkl").regressor_path() == Path("models/generic_model.regressor.npz")


def test_live_session_with_the_regressor_drives_the_portrait(flame: FLAME) -> None:
    from gdpw.pipeline import AnimateConfig, Animator
    from gdpw.pipeline.live import LiveConfig, LiveSession
    from tests.live_helpers import turning_head

    portrait, clip = turning_head(6, FPS)
    with Animator(AnimateConfig()) as animator:
        session = LiveSession(animator, portrait)  # the default tracking
        shown = [session.step(image, i / FPS) for i, image in enumerate(clip.images)]
        assert session.tracker.regressor is not None and session.tracker.iterations == 0
        fitting = LiveSession(animator, portrait, LiveConfig(tracking="fitting"))
        assert fitting.tracker.regressor is None and fitting.tracker.iterations == 30
    assert all(s.face and s.target is not None and s.image.shape == portrait.shape for s in shown)
    line = session.stats.line(shown[-1].fps)  # the page's line: the latency and where it goes
    assert all(f" {stage} " in line for stage in ("detect", "fit", "render", "generate")), line
    assert len(session.stats.stages) == len(shown) and all(v >= 0 for s in session.stats.stages for v in s.values())
    yaw = [float(s.target.global_pose[0, 1]) for s in shown if s.target is not None]
    assert np.ptp(yaw) > np.radians(10)  # the turn reaches the portrait


def test_offline_tracking_by_the_regressor_follows_a_head_turn_and_jaw_openings(flame: FLAME, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``TrackConfig(fitter="regressor")`` (``gdpw fit`` / ``gdpw preprocess --fitter regressor``): a
    clip with a frame without a face is tracked with every later frame read by the regressor
    against the first (fitted on key frames); it follows the truth's turn and jaw and reports its
    landmark error, and preprocessing finds the head's regressor (no fallback line)."""
    from gdpw.data.synth import head_turn
    from gdpw.data.video import write_video
    from gdpw.fit import TrackConfig

    cfg = SynthConfig(size=256, frames_per_clip=24, seed=7, fps=FPS)
    params, camera = head_turn(flame, cfg, 1, 1)
    params["jaw_pose"][:, 0] = 0.3 * np.clip(np.sin(np.linspace(0, 4 * np.pi, cfg.frames_per_clip)), 0, None)
    images = render_clip(flame, cfg, 1, 1, motion=(params, camera)).images.copy()
    images[10] = 0  # no face: the nearest frame's landmarks stand in
    with FaceTracker(flame, TrackConfig(fitter="regressor"), regressor=DEMO_REGRESSOR) as tracker:
        reads = []
        read = tracker.read
        tracker.read = lambda *a, **k: reads.append(1) or read(*a, **k)  # type: ignore[method-assign]
        fit = tracker.track(list(images), FPS).params
    assert len(fit) == 24 and len(reads) == 23
    keep = [t for t in range(24) if t != 10]
    yaw, true_yaw = np.degrees(fit.global_pose[keep, 1].numpy()), np.degrees(params["global_pose"][keep, 1])
    jaw, true_jaw = fit.jaw_pose[keep, 0].numpy(), params["jaw_pose"][keep, 0]
    turn_err = np.abs((yaw - yaw[0]) - (true_yaw - true_yaw[0])).mean()
    print(f"yaw r {np.corrcoef(yaw, true_yaw)[0, 1]:.3f} turn error {turn_err:.2f} deg (range {np.ptp(true_yaw):.1f}), "
          f"jaw r {np.corrcoef(jaw, true_jaw)[0, 1]:.3f}, landmark RMS {fit.landmark_error.mean():.4f}")
    # measured: yaw r 0.963, turn error 4.6 deg, jaw r 0.77 with its range 0.9x the truth's; landmark
    # fitting on the same clip: 0.964, 4.7 deg, jaw r 0.93 with its range 1.6x the truth's
    assert np.corrcoef(yaw, true_yaw)[0, 1] > 0.93 and turn_err < 0.15 * np.ptp(true_yaw)
    assert np.corrcoef(jaw, true_jaw)[0, 1] > 0.65 and 0.5 * np.ptp(true_jaw) < np.ptp(jaw) < 1.5 * np.ptp(true_jaw)
    assert 0 < fit.landmark_error.mean() < 0.035 and fit.landmark_error.max() < 0.1  # NDC; measured 0.026 (fitting's 0.022), at most 0.066
    videos = tmp_path / "vox" / "id001" / "vid01"
    videos.mkdir(parents=True)
    write_video(videos / "00001.mp4", images[:8], FPS)
    capsys.readouterr()
    assert main(["preprocess", str(tmp_path / "vox"), "-o", str(tmp_path / "ds"), "--size", "64", "--fitter", "regressor",
                 "--workers", "1"]) == 0
    assert "fitting landmarks instead" not in capsys.readouterr().err
    assert np.load(tmp_path / "ds" / "clips" / "id001__vid01__00001.npz")["expression"].shape[0] == 8
    # without a usable regressor: said once (by the preflight, not again by the workers), landmarks fitted
    assert main(["preprocess", str(tmp_path / "vox"), "-o", str(tmp_path / "ds2"), "--size", "64", "--fitter", "regressor",
                 "--regressor", str(tmp_path / "none.npz"), "--workers", "1"]) == 0
    assert capsys.readouterr().err.count("fitting landmarks instead") == 1
