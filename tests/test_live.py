"""Live animation: causal tracking, frame dropping, cameras and ``gdpw live`` (no browser)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.cli.main import main
from gdpw.common.errors import VideoError
from gdpw.data.video import read_video, write_video, write_y4m
from gdpw.fit import OneEuroFilter
from gdpw.flame import FLAME, load_motion
from gdpw.pipeline import AnimateConfig, Animator
from gdpw.pipeline.live import CameraReader, LiveSession, run_camera
from tests.live_helpers import turning_head, yaw_of_results

FPS = 10.0


@pytest.fixture(scope="module")
def turning():  # type: ignore[no-untyped-def]
    return turning_head(24, FPS)


@pytest.fixture(scope="module")
def animator():  # type: ignore[no-untyped-def]
    with Animator(AnimateConfig()) as a:
        yield a


def _yaw(pose: torch.Tensor) -> np.ndarray:
    return np.degrees(pose[:, 1].numpy())


def test_one_euro_stream_equals_the_sequence_filter() -> None:
    x = torch.randn(30, 5).cumsum(0)
    f = OneEuroFilter(25, min_cutoff=1.0, beta=0.3)
    stream = OneEuroFilter(25, min_cutoff=1.0, beta=0.3)
    assert torch.equal(f(x), torch.stack([stream.step(v) for v in x]))
    stream.reset()
    assert torch.equal(stream.step(x[3]), x[3])  # after a reset the next frame passes unchanged


def test_live_session_follows_the_camera_head_turn(turning, animator) -> None:  # type: ignore[no-untyped-def]
    portrait, clip = turning
    session = LiveSession(animator, portrait)
    fitted, shown = [], []
    for i, frame in enumerate(clip.images):
        out = session.step(frame, captured_at=i / FPS)
        assert out.image.shape == portrait.shape and out.latency >= 0
        if out.face:
            fitted.append(i)
            shown.append(out)
    assert len(fitted) >= 0.8 * len(clip.images) and session.stats.frames == len(fitted)
    truth = _yaw(clip.params.global_pose)[fitted]
    # the causal track follows the turn (relative to its first frame)
    track = []
    session.reset()
    for i in fitted:
        _, fit = session.tracker.step(clip.images[i], i / FPS)
        track.append(float(_yaw(fit.global_pose)[0]))
    print("track corr", np.corrcoef(track, truth)[0, 1], "range", np.ptp(track), "of", np.ptp(truth))
    assert np.corrcoef(track, truth)[0, 1] > 0.9
    assert 0.7 * np.ptp(truth) < np.ptp(track) < 1.5 * np.ptp(truth)
    # ... and so does the animated head: each result is nearest to the portrait turned by about
    # the camera's yaw (a bank of yaw edits of the portrait, rendered by the same generator)
    nearest = yaw_of_results(animator, session.source, shown)
    print("camera yaw", np.round(truth).tolist(), "result ~", nearest)
    assert np.corrcoef(nearest, truth)[0, 1] > 0.8
    assert np.ptp(nearest) >= 30  # both ways


def test_live_composites_in_the_portrait_sharper_than_crop_then_paste(turning, animator) -> None:  # type: ignore[no-untyped-def]
    """Live results of the demo generator are composited in the portrait, which is read once
    (``composite_in_frame``): as ``gdpw animate``'s crop at twice the box's size pasted back, but
    sharper (variance of the Laplacian of the face's box)."""
    def laplace(g: np.ndarray) -> np.ndarray:
        return 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]

    portrait, clip = turning
    session = LiveSession(animator, portrait)
    assert animator.composites_in_frame
    box = session.source.box
    y0, x0 = max(0, int(box.y0)), max(0, int(box.x0))
    face = (slice(y0, int(box.y0 + box.size)), slice(x0, int(box.x0 + box.size)))
    ratios, diffs = [], []
    for i in (0, 6, 12):
        out = session.step(clip.images[i], i / FPS)
        assert out.face and out.target is not None
        pasted = animator.compose(session.source, animator.decode(session.encoded, out.target, [0]))[0]
        grey = [laplace(img[face].astype(float).mean(-1)).var() for img in (out.image, pasted)]
        ratios.append(grey[0] / grey[1])
        diffs.append(np.abs(out.image.astype(float) - pasted).mean())
    print("sharpness live / crop-then-paste", np.round(ratios, 3), "mean |difference|", np.round(diffs, 2))
    assert min(ratios) > 1.0 and max(diffs) < 2.0


def test_no_face_keeps_the_last_good_frame_and_reset_starts_again(turning, animator) -> None:  # type: ignore[no-untyped-def]
    portrait, clip = turning
    session = LiveSession(animator, portrait)
    good = session.step(clip.images[6], 0.0)
    assert good.face and session.tracker.reference is not None
    blank = session.step(np.full_like(clip.images[0], 90), 0.1)
    assert not blank.face and session.stats.missed == 1
    assert np.array_equal(blank.image, good.image)
    # the reference frame itself drives the portrait to its own pose: the neutral result is the
    # portrait's own head (relative motion zero); after a reset any frame is the new neutral
    session.reset()
    assert session.tracker.reference is None
    neutral = session.step(clip.images[12], 0.2)
    assert session.tracker.reference is not None
    still = animator.animate_fit(session.source, session.source.fit).frames[0]
    assert np.abs(neutral.image.astype(float) - still.astype(float)).mean() < 1.0


def test_a_frame_arriving_while_one_is_animated_is_dropped(turning, animator) -> None:  # type: ignore[no-untyped-def]
    portrait, clip = turning
    session = LiveSession(animator, portrait)
    with session._busy:  # another frame is being animated
        assert session.try_step(clip.images[0]) is None
    assert session.stats.dropped == 1 and session.stats.frames == 0
    assert session.try_step(clip.images[0]) is not None


def test_camera_reader_plays_a_file_in_real_time_and_drops_what_it_cannot_show(turning, animator,
                                                                             tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    portrait, clip = turning
    video = tmp_path / "cam.mp4"
    images = np.concatenate([clip.images] * 3)  # 7.2 s at 10 fps
    write_video(video, images, FPS)  # the first frame's full fit takes longer: frames are dropped
    session = LiveSession(animator, portrait)
    spans: list[float] = []  # seconds each step took, however loaded the machine is
    step = session.step

    def timed_step(*args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = step(*args, **kwargs)
        spans.append(time.perf_counter() - start)
        return out

    session.step = timed_step  # type: ignore[method-assign]
    camera = CameraReader(str(video))
    try:
        shown = run_camera(session, camera)
    finally:
        camera.close()
    assert camera.captured == len(images)
    assert len(shown) + session.stats.dropped == camera.captured
    assert session.stats.dropped > 0 and len(shown) >= 2
    # no backlog: a shown frame waited at most for the step before it (plus a camera interval and
    # scheduling slack), however slow the steps are on this machine
    for i, f in enumerate(shown[1:], 1):
        assert f.latency <= spans[i] + spans[i - 1] + 2 / FPS + 0.5, (i, f.latency, spans[i - 1 : i + 1])
    with pytest.raises(VideoError, match="cannot open the camera"):
        CameraReader(str(tmp_path / "video9"))


def test_y4m_clip_reads_back(turning, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, clip = turning
    path = tmp_path / "c.y4m"
    assert write_y4m(path, clip.images[:4], FPS) == 4
    frames, info = read_video(path)
    assert frames.shape == (4, 256, 256, 3) and abs(info.fps - FPS) < 1e-6
    assert np.abs(frames.astype(float) - clip.images[:4].astype(float)).mean() < 4.0
    with pytest.raises(VideoError, match="even"):
        write_y4m(tmp_path / "odd.y4m", [np.zeros((5, 6, 3), np.uint8)], FPS)


def test_gdpw_live_with_a_video_camera_records_the_shown_frames(turning, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    portrait, clip = turning
    src, cam, out = tmp_path / "p.png", tmp_path / "cam.mp4", tmp_path / "live.mp4"
    Image.fromarray(portrait).save(src)
    write_video(cam, np.concatenate([clip.images] * 4), FPS)  # 9.6 s: a slow machine still shows 3 frames
    motion = tmp_path / "me.motion.npz"
    assert main(["live", "--source", str(src), "--camera", str(cam), "-o", str(out), "--max-frames", "3",
                 "--iterations", "20", "--save-motion", str(motion)]) == 0
    frames, _ = read_video(out)
    assert frames.shape[0] == 3
    # the recorded performance (the frames with a face) drives another portrait
    recorded = len(load_motion(motion, FLAME()).params)
    assert 1 <= recorded <= 3
    assert main(["animate", "--source", str(src), "--driving", str(motion), "-o", str(tmp_path / "again.mp4")]) == 0
    assert read_video(tmp_path / "again.mp4")[0].shape[0] == recorded
    assert "latency" in capsys.readouterr().err
    assert main(["live", "--source", str(src), "-o", str(out)]) == 2  # -o needs --camera
    assert main(["live", "--source", str(src), "--camera", str(tmp_path / "none.mp4")]) == 2
