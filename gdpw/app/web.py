"""``gdpw app``: a Gradio page for animating and editing portraits.

It drives the same ``Animator`` and ``AnimateConfig`` as the command line.
"""

from __future__ import annotations

import re
import tempfile
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gdpw.common.images import fit_within
from gdpw.data.video import MAX_IMAGE_SIDE
from gdpw.pipeline import AnimateConfig, Animator, EditSpec, apply_edit, stream_frames
from gdpw.pipeline.live import LiveConfig, LiveSession

N_EXPRESSION_SLIDERS = 4
# The page's own clock on the Live tab (browser JavaScript). When the webcam's frame is captured (its
# canvas encoded), the browser's time goes into a hidden box that is sent with that frame and comes
# back with its result; when the result is on the page, the median of the last 30 round trips is
# appended to the server's line.
PAGE_CLOCK_INSTALL = """() => {
  const encode = HTMLCanvasElement.prototype.toDataURL;
  HTMLCanvasElement.prototype.toDataURL = function (...args) {
    const video = document.querySelector("#camera video"), box = document.querySelector("#live-clock textarea");
    if (video && box && this.width === video.videoWidth && this.height === video.videoHeight) {
      box.value = String(performance.now());
      box.dispatchEvent(new Event("input", { bubbles: true }));
    }
    return encode.apply(this, args);
  };
}"""
PAGE_CLOCK_SHOW = """(sent, line) => {
  const trips = (window.gdpwPageTrips = window.gdpwPageTrips || []);
  if (!sent || !line || line.includes(" · page ")) return line;
  trips.push(performance.now() - parseFloat(sent));
  if (trips.length > 30) trips.shift();
  const sorted = [...trips].sort((a, b) => a - b);
  return `${line} · page ${Math.round(sorted[sorted.length >> 1])} ms (camera capture to result on the page, browser clock)`;
}"""


class AppState:
    """Animators by checkpoint label, created on first use and kept for the session, and the
    session's working folder (demo assets, results), removed by ``close``."""

    def __init__(self, checkpoints: dict[str, str | None], base: AnimateConfig, live: LiveConfig | None = None) -> None:
        self.checkpoints = checkpoints
        self.base = base
        self.live = live or LiveConfig()
        self._animators: dict[str, Animator] = {}
        self._live: dict[str, tuple[tuple[str, int], LiveSession]] = {}  # by browser session
        self._live_locks: dict[str, threading.Lock] = {}  # one live frame at a time per animator
        self._tmp = tempfile.TemporaryDirectory(prefix="gdpw_app_")
        self.workdir = Path(self._tmp.name)
        self._results: list[Path] = []

    def new_result(self) -> Path:
        """A fresh result path; the oldest results beyond ``MAX_RESULTS`` are deleted (served already)."""
        self._results.append(self.workdir / f"result_{uuid.uuid4().hex[:12]}.mp4")
        while len(self._results) > MAX_RESULTS:
            self._results.pop(0).unlink(missing_ok=True)
        return self._results[-1]

    def animator(self, label: str) -> Animator:
        if label not in self._animators:
            self._animators[label] = Animator(replace(self.base, checkpoint=self.checkpoints[label]))
        return self._animators[label]

    def live_session(self, browser: str, label: str, portrait: np.ndarray) -> LiveSession:
        """The browser session's live stream, made again when its portrait or checkpoint changes."""
        key = (label, hash(portrait.tobytes()))
        if browser not in self._live or self._live[browser][0] != key:
            lock = self._live_locks.setdefault(label, threading.Lock())
            self._live[browser] = (key, LiveSession(self.animator(label), portrait, self.live, lock=lock))
        return self._live[browser][1]

    def reset_live(self, browser: str) -> bool:
        """'Reset neutral' for the browser session's stream; False when it has none."""
        if browser not in self._live:
            return False
        self._live[browser][1].reset()
        return True

    def close(self) -> None:
        self._live.clear()
        for a in self._animators.values():
            a.close()
        self._animators.clear()
        self._tmp.cleanup()


def demo_assets(folder: Path) -> tuple[np.ndarray, str]:
    """A synthetic portrait and a synthetic driving video (the built-in demo head), made once."""
    from gdpw.data.synth import SynthConfig, render_clip
    from gdpw.data.video import write_video
    from gdpw.flame import FLAME

    flame = FLAME()
    video = folder / "demo_driving.mp4"
    # seed 7: a portrait MediaPipe finds, and a driver it finds in 22 of 24 frames
    source = render_clip(flame, SynthConfig(size=256, frames_per_clip=1, seed=7), 0, 0).images[0]
    if not video.exists():
        clip = render_clip(flame, SynthConfig(size=256, frames_per_clip=24, seed=7), 1, 1)
        write_video(video, clip.images, 10.0)
    return source, str(video)


MAX_FRAMES = 300  # frames of a driving video or motion file animated per request
MAX_RESULTS = 8  # results kept in the session's folder (Gradio serves its own copy)
MAX_UPLOAD = "200mb"  # largest upload Gradio accepts


def run_animation(state: AppState, source: np.ndarray, driving: str | None, motion_file: str | None, label: str,
                  motion: str, side_by_side: bool) -> tuple[Path, str | None]:
    """The page's Animate button: a portrait driven by a video or by a motion file; the result's
    path and a note for the page when the driver was cut to ``MAX_FRAMES``."""
    from gdpw.data.video import read_video, write_video
    from gdpw.flame import load_motion

    animator = state.animator(label)
    mode = None if motion == "auto" else motion
    image = fit_within(np.ascontiguousarray(source[..., :3]), MAX_IMAGE_SIDE)
    out = state.new_result()
    if motion_file:
        clip = load_motion(motion_file, animator.flame)
        cut, fps = len(clip.params) > MAX_FRAMES, clip.fps
        clip.params = clip.params.select(slice(0, MAX_FRAMES))
        batches = animator.animate_motion_stream(image, clip, motion=mode, crops=False)  # type: ignore[arg-type]
        write_video(out, stream_frames(batches), clip.fps)
    else:
        assert driving is not None
        frames, info = read_video(driving, max_frames=MAX_FRAMES + 1)
        cut, fps, frames = len(frames) > MAX_FRAMES, info.fps, frames[:MAX_FRAMES]
        batches = animator.animate_stream(image, list(frames), fps=info.fps, motion=mode, side_by_side=side_by_side,  # type: ignore[arg-type]
                                          crops=False)  # the frames alone: no crops made
        write_video(out, stream_frames(batches), info.fps,
                    audio_from=driving if info.has_audio else None)
    note = f"The driver was cut to its first {MAX_FRAMES} frames ({MAX_FRAMES / fps:.1f} s); gdpw animate has no limit." if cut else None
    return out, note


SERVER_PATH = re.compile(r"(?:/[^/\s:'\"(),]+)+/([^/\s:'\"(),]+)")  # an absolute path; group 1: its last part


def public_message(err: BaseException) -> str:
    """An error as one line for the page: its type and text, server paths shown as file names."""
    text = SERVER_PATH.sub(r"\1", " ".join(str(err).split()))
    return f"{type(err).__name__}: {text}"


def build_app(checkpoints: dict[str, str | None], base: AnimateConfig | None = None,
              live_portrait: np.ndarray | None = None, live: LiveConfig | None = None) -> Any:
    """The page; ``live_portrait`` given, it opens on the Live tab with that portrait (``gdpw live``)."""
    import gradio as gr

    state = AppState(checkpoints, base or AnimateConfig(), live)
    workdir = state.workdir
    labels = list(checkpoints)

    def use_demo() -> tuple[np.ndarray, str]:
        return demo_assets(workdir)

    def animate(source: np.ndarray | None, driving: str | None, motion_file: str | None, label: str, motion: str,
                side: bool, progress: gr.Progress = gr.Progress()) -> str:  # noqa: B008
        if source is None or not (driving or motion_file):
            raise gr.Error("Upload a portrait and a driving video or motion file (or press 'Use the demo assets').")
        try:
            progress(0.2, desc="fitting and generating")
            out, note = run_animation(state, source, driving, motion_file, label, motion, side)
        except Exception as err:  # shown to the user as one line, whatever failed
            raise gr.Error(public_message(err)) from None
        if note:
            gr.Warning(note)
        return str(out)

    def edit(source: np.ndarray | None, label: str, yaw: float, pitch: float, roll: float, jaw: float,
             *expression: float) -> np.ndarray:
        if source is None:
            raise gr.Error("Upload a portrait (or press 'Use the demo assets').")
        try:
            animator = state.animator(label)
            src = animator.prepare_source(fit_within(np.ascontiguousarray(source[..., :3]), MAX_IMAGE_SIDE))
            spec = EditSpec(yaw=yaw, pitch=pitch, roll=roll, jaw=jaw, expression={i: v for i, v in enumerate(expression)})
            return animator.animate_fit(src, apply_edit(src.fit, spec, convention=animator.recipe)).frames[0]
        except Exception as err:  # shown to the user as one line, whatever failed
            raise gr.Error(public_message(err)) from None

    def live_step(portrait: np.ndarray | None, frame: np.ndarray | None, label: str, stream_id: str | None,
                  sent: str | None) -> tuple[Any, Any, str, Any]:
        """One camera frame; ``sent``: the page's clock when it left (given back with the result)."""
        stream_id = stream_id or uuid.uuid4().hex  # this browser tab's stream
        if frame is None:
            return gr.skip(), gr.skip(), stream_id, gr.skip()
        if portrait is None:
            return gr.skip(), "Upload a portrait (or press 'Use the demo portrait') to start.", stream_id, gr.skip()
        try:
            session = state.live_session(stream_id, label, portrait)
        except Exception as err:  # e.g. no face in the portrait: said on the page, the stream goes on
            return gr.skip(), f"{type(err).__name__}: {err}", stream_id, gr.skip()
        out = session.try_step(frame)
        if out is None:  # still animating the previous frame: this one is dropped
            return gr.skip(), gr.skip(), stream_id, gr.skip()
        note = "" if out.face else " · no face in this frame: showing the last good result"
        return out.image, session.stats.line(out.fps) + note, stream_id, sent

    def live_reset(stream_id: str | None) -> str:
        if not stream_id or not state.reset_live(stream_id):
            return "Start the camera first."
        return "Neutral face reset: the next camera frame is the new neutral."

    def demo_portrait() -> np.ndarray:
        return demo_assets(workdir)[0]

    # Gradio keeps its own copies of uploads and results: drop those older than an hour, hourly
    with gr.Blocks(title="gdpw: one-shot face animation", delete_cache=(3600, 3600)) as app:
        gr.Markdown("# gdpw — geometry-driven progressive warping\nUpload a portrait and a driving video (or a motion file), "
                    f"or use the built-in demo head. Uploads up to {MAX_UPLOAD.upper()}; portraits are used at up to "
                    f"{MAX_IMAGE_SIDE} pixels a side and drivers for their first {MAX_FRAMES} frames "
                    "(the command line, `gdpw animate`, has no frame limit).")
        label = gr.Dropdown(labels, value=labels[0], label="Checkpoint (guidance)", elem_id="checkpoint")
        with gr.Tabs(selected="live" if live_portrait is not None else "animate"):
            with gr.Tab("Animate", id="animate", elem_id="animate-tab"):
                with gr.Row():
                    source = gr.Image(label="Portrait", type="numpy", format="png", elem_id="source")
                    driving = gr.Video(label="Driving video", elem_id="driving")
                    motion_file = gr.File(label="... or a motion file (gdpw fit -o x.motion.npz)", file_types=[".npz"],
                                          type="filepath", elem_id="motion-file")
                with gr.Row():
                    demo_btn = gr.Button("Use the demo assets", elem_id="use-demo")
                    motion = gr.Radio(["auto", "relative", "absolute"], value="auto", elem_id="motion",
                                      label="Motion (auto: absolute for the official recipe, else relative)")
                    side = gr.Checkbox(False, label="Side by side")
                run = gr.Button("Animate", variant="primary", elem_id="animate")
                result = gr.Video(label="Result", elem_id="result")
                with gr.Accordion("Edit the portrait", open=False):
                    with gr.Row():
                        yaw = gr.Slider(-40, 40, 0, step=1, label="Yaw (deg)")
                        pitch = gr.Slider(-30, 30, 0, step=1, label="Pitch (deg)")
                        roll = gr.Slider(-30, 30, 0, step=1, label="Roll (deg)")
                        jaw = gr.Slider(0, 20, 0, step=1, label="Jaw open (deg)")
                    exps = [gr.Slider(-1, 2, 0, step=0.1, label=f"Expression {i}") for i in range(N_EXPRESSION_SLIDERS)]
                    edit_btn = gr.Button("Apply edit", elem_id="apply-edit")
                    edited = gr.Image(label="Edited", format="png", elem_id="edited")
            with gr.Tab("Live", id="live", elem_id="live-tab"):
                gr.Markdown("Your webcam drives the portrait: motion relative to the first frame (or the last "
                            "'Reset neutral'). Frames are dropped, not queued, when the model is slower than the camera.")
                with gr.Row():
                    live_source = gr.Image(live_portrait, label="Portrait", type="numpy", format="png", elem_id="live-source")
                    camera = gr.Image(label="Camera", sources=["webcam"], streaming=True, type="numpy", elem_id="camera")
                    live_out = gr.Image(label="Animated", format="jpeg", elem_id="live-result")
                with gr.Row():
                    live_demo = gr.Button("Use the demo portrait", elem_id="live-use-demo")
                    reset = gr.Button("Reset neutral", elem_id="reset-neutral")
                live_stats = gr.Markdown("Start the camera.", elem_id="live-stats")
                stream_id = gr.State(None)
                # the page's clock at a frame's capture, and as it came back with the frame's result
                page_clock = gr.Textbox(visible="hidden", elem_id="live-clock")
                page_back = gr.Textbox(visible="hidden", elem_id="live-clock-back")
        demo_btn.click(use_demo, outputs=[source, driving])
        run.click(animate, inputs=[source, driving, motion_file, label, motion, side], outputs=result)
        edit_btn.click(edit, inputs=[source, label, yaw, pitch, roll, jaw, *exps], outputs=edited)
        live_demo.click(demo_portrait, outputs=live_source)
        reset.click(live_reset, inputs=stream_id, outputs=live_stats)
        # concurrency unlimited: a frame arriving while one is animated returns at once (dropped)
        camera.stream(live_step, inputs=[live_source, camera, label, stream_id, page_clock],
                      outputs=[live_out, live_stats, stream_id, page_back],
                      stream_every=0.1, concurrency_limit=None, show_progress="hidden")
        page_back.change(None, inputs=[page_back, live_stats], outputs=live_stats, js=PAGE_CLOCK_SHOW, show_progress="hidden")
        app.load(None, js=PAGE_CLOCK_INSTALL)
    app.gdpw_state = state  # so callers can close the animators
    return app


def checkpoint_choices(paths: list[str]) -> dict[str, str | None]:
    """Dropdown labels ('name (guidance)') for the demo generator and any given checkpoints."""
    from gdpw.model.checkpoint import load_checkpoint
    from gdpw.pipeline.animator import DEMO_CHECKPOINT

    out: dict[str, str | None] = {}
    for path in [None, *paths]:
        ckpt = load_checkpoint(path or DEMO_CHECKPOINT)
        name = "demo" if path is None else Path(path).stem
        out[f"{name} ({ckpt.generator_config.guidance})"] = path
    return out
