"""Live animation: a portrait driven by a camera, frame by frame, as the frames come.

    session = LiveSession(animator, portrait)
    shown = session.step(frame, captured_at=time.perf_counter())   # LiveFrame: image, latency, fps
    session.reset()                                                  # the next frame is the new neutral

Each camera frame is tracked causally (``gdpw.fit.StreamTracker``: warm-started from the previous
frame, smoothed with no look-ahead) and its motion relative to the stream's first frame (the
"neutral") drives the portrait, encoded once. A frame without a face keeps the last good result.
``try_step`` drops a frame instead of queueing it while another is being animated: a model
slower than the camera shows the newest frame, never a growing backlog.

``CameraReader`` reads a local camera (or a video file played at its own rate) on a thread that
keeps only the newest frame; ``run_camera`` animates it, as ``gdpw live --camera`` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from gdpw.common.config import validate
from gdpw.common.errors import NoFaceError, VideoError
from gdpw.flame import FlameSequence

from .animator import Animator, transfer_motion


@dataclass(frozen=True)
class LiveConfig:
    """Live tracking and display."""

    iterations: int | None = None  # L-BFGS steps per camera frame: from the previous frame's fit (default 30), or from the FLAME regressor's output (default 0)
    tracking: Literal["fitting", "regressor"] = "regressor"  # each frame read by the head's FLAME regressor and solved on its landmarks (2x lower latency, as close on real faces: docs/real_follow.md; fitting when the head has none), or fitted to landmarks from the previous frame


    def __post_init__(self) -> None:
        validate(self)


@dataclass
class LiveFrame:
    """What a live step shows."""

    image: np.ndarray  # the animated portrait (the last good one when no face was found)
    face: bool  # a face was found in this camera frame
    latency: float  # seconds from capture to this result
    fps: float  # results per second, averaged over the last second or so
    target: FlameSequence | None = None  # the FLAME parameters the portrait was driven to (None without a face)


@dataclass
class LiveStats:
    """Counts and timings of a stream."""

    frames: int = 0  # camera frames animated
    dropped: int = 0  # frames skipped because the previous one was still being animated
    missed: int = 0  # frames without a face
    latencies: list[float] = field(default_factory=list)  # seconds, capture to result, per animated frame
    stages: list[dict[str, float]] = field(default_factory=list)  # seconds per pipeline stage, per animated frame

    def line(self, fps: float) -> str:
        """One line for the page or the terminal: the latency, then where it goes (medians of the last 30 frames)."""
        lat = np.median(self.latencies[-30:]) * 1000 if self.latencies else float("nan")
        recent = self.stages[-30:]
        names = list(dict.fromkeys(k for s in recent for k in s))
        split = " ".join(f"{k} {np.median([s.get(k, 0.0) for s in recent]) * 1000:.0f}" for k in names)
        return (f"latency {lat:.0f} ms (capture to result{'; ms: ' + split if split else ''}) · {fps:.1f} fps · "
                f"{self.frames} frames · {self.dropped} dropped · {self.missed} without a face")


class LiveSession:
    """One portrait driven live by one camera (``animator``'s checkpoint and tracking options);
    ``lock``: held while a frame is animated (``try_step`` drops frames that find it taken)."""

    def __init__(self, animator: Animator, portrait: np.ndarray, cfg: LiveConfig | None = None,
                 lock: threading.Lock | None = None) -> None:
        self.animator = animator
        self.cfg = cfg or LiveConfig()
        self.source = animator.prepare_source(np.ascontiguousarray(portrait[..., :3]))
        self.encoded = animator.encode(self.source)
        self.tracker = animator.tracker.stream(self.cfg.iterations, self.cfg.tracking == "regressor")
        self.stats = LiveStats()
        self._last = self.source.image if animator.cfg.paste_back else self.source.crop
        self._shown: list[float] = []  # result times of the last second, for the fps figure
        self._busy = lock or threading.Lock()  # shared by the streams of one animator (web UI)

    def reset(self) -> None:
        """Take the next camera frame as the neutral face (relative motion starts again)."""
        self.tracker.reset()

    def step(self, frame: np.ndarray, captured_at: float | None = None) -> LiveFrame:
        """Animate one camera frame (RGB uint8); ``captured_at``: its ``time.perf_counter()`` at capture."""
        captured_at = time.perf_counter() if captured_at is None else captured_at
        frame = np.ascontiguousarray(frame[..., :3])
        before = dict(self.animator.timings)
        try:
            _, fit = self.tracker.step(frame, captured_at)
        except NoFaceError:  # keep showing the last good result
            self.stats.missed += 1
            return LiveFrame(self._last, False, time.perf_counter() - captured_at, self.fps)
        assert self.tracker.reference is not None
        target = transfer_motion(self.source.fit, FlameSequence.cat([self.tracker.reference, fit]), "relative",
                                 self.animator.flame.lid_components).select([1])
        self._last = self.animator.decode_into(self.source, self.encoded, target)
        now = time.perf_counter()
        self._shown = [t for t in self._shown if now - t < 1.0] + [now]
        self.stats.frames += 1
        self.stats.latencies.append(now - captured_at)
        self.stats.stages.append({k: v - before.get(k, 0.0) for k, v in self.animator.timings.items() if v > before.get(k, 0.0)})
        return LiveFrame(self._last, True, now - captured_at, self.fps, target)

    def try_step(self, frame: np.ndarray, captured_at: float | None = None) -> LiveFrame | None:
        """``step``, or None (the frame dropped) while another frame is being animated."""
        if not self._busy.acquire(blocking=False):
            self.stats.dropped += 1
            return None
        try:
            return self.step(frame, captured_at)
        finally:
            self._busy.release()

    @property
    def fps(self) -> float:
        """Results per second over the last second."""
        if len(self._shown) < 2:
            return 0.0
        return (len(self._shown) - 1) / max(self._shown[-1] - self._shown[0], 1e-6)


class CameraReader:
    """Frames of a camera (``/dev/video0``, or ``0`` for it) or of a video file played at its own
    rate, read on a thread that keeps only the newest frame and its capture time."""

    def __init__(self, camera: str) -> None:
        import av

        device = f"/dev/video{camera}" if camera.isdigit() else camera
        self.is_file = Path(device).is_file()
        try:
            self._container = av.open(device, format=None if self.is_file else "v4l2")
            self._stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError, OSError) as err:
            raise VideoError(f"cannot open the camera {camera!r}: {err}") from None
        rate = self._stream.average_rate
        self.fps = float(rate) if rate else 30.0
        self.captured = 0  # frames read from the camera
        self._latest: tuple[np.ndarray, float, int] | None = None
        self._cond = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.perf_counter()
        try:
            for i, frame in enumerate(self._container.decode(self._stream)):
                if self._done:
                    break
                if self.is_file:  # a file plays like a camera: frame i appears at i / fps
                    time.sleep(max(0.0, start + i / self.fps - time.perf_counter()))
                image = frame.to_ndarray(format="rgb24")
                with self._cond:
                    self.captured += 1
                    self._latest = (image, time.perf_counter(), self.captured)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def latest(self, after: int = 0, timeout: float = 5.0) -> tuple[np.ndarray, float, int] | None:
        """The newest frame later than frame number ``after``: (image, capture time, number); None
        once the camera has ended (or nothing came within ``timeout`` seconds)."""
        with self._cond:
            self._cond.wait_for(lambda: self._done or (self._latest is not None and self._latest[2] > after), timeout)
            if self._latest is None or self._latest[2] <= after:
                return None
            return self._latest

    def close(self) -> None:
        self._done = True
        self._thread.join(timeout=5.0)
        self._container.close()


def run_camera(session: LiveSession, camera: CameraReader, max_frames: int | None = None,
               show: Callable[[LiveFrame], None] | None = None) -> list[LiveFrame]:
    """Animate the camera's newest frame, again and again, until it ends or ``max_frames`` were
    shown; frames the camera produced meanwhile are dropped (counted in ``session.stats``)."""
    shown: list[LiveFrame] = []
    last = 0
    while max_frames is None or len(shown) < max_frames:
        got = camera.latest(after=last)
        if got is None:
            break
        image, captured_at, number = got
        session.stats.dropped += number - last - 1
        last = number
        out = session.step(image, captured_at)
        shown.append(out)
        if show is not None:
            show(out)
    return shown
