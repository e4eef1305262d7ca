"""``gdpw app``: a Gradio page for animating and editing portraits.

It drives the same ``Animator`` and ``AnimateConfig`` as the command line.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gdpw.pipeline import AnimateConfig, Animator, EditSpec, apply_edit

N_EXPRESSION_SLIDERS = 4


class AppState:
    """Animators by checkpoint label, created on first use and kept for the session, and the
    session's working folder (demo assets, results), removed by ``close``."""

    def __init__(self, checkpoints: dict[str, str | None], base: AnimateConfig) -> None:
        self.checkpoints = checkpoints
        self.base = base
        self._animators: dict[str, Animator] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="gdpw_app_")
        self.workdir = Path(self._tmp.name)

    def animator(self, label: str) -> Animator:
        if label not in self._animators:
            self._animators[label] = Animator(replace(self.base, checkpoint=self.checkpoints[label]))
        return self._animators[label]

    def close(self) -> None:
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


def run_animation(state: AppState, source: np.ndarray, driving: str | None, motion_file: str | None, label: str,
                  motion: str, side_by_side: bool) -> Path:
    """The page's Animate button: a portrait driven by a video or by a motion file; the result's path."""
    from gdpw.data.video import read_video, write_video
    from gdpw.flame import load_motion

    animator = state.animator(label)
    mode = None if motion == "auto" else motion
    image = np.ascontiguousarray(source[..., :3])
    out = state.workdir / f"result_{len(list(state.workdir.glob('result_*')))}.mp4"
    if motion_file:
        clip = load_motion(motion_file, animator.flame)
        result = animator.animate_motion(image, clip, motion=mode)  # type: ignore[arg-type]
        write_video(out, result.frames, clip.fps)
    else:
        assert driving is not None
        frames, info = read_video(driving, max_frames=300)
        result = animator.animate(image, list(frames), fps=info.fps, motion=mode, side_by_side=side_by_side)  # type: ignore[arg-type]
        write_video(out, result.frames, info.fps, audio_from=driving if info.has_audio else None)
    return out


def build_app(checkpoints: dict[str, str | None], base: AnimateConfig | None = None) -> Any:
    import gradio as gr

    state = AppState(checkpoints, base or AnimateConfig())
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
            return str(run_animation(state, source, driving, motion_file, label, motion, side))
        except Exception as err:  # shown to the user as one line, whatever failed
            raise gr.Error(f"{type(err).__name__}: {err}") from None

    def edit(source: np.ndarray | None, label: str, yaw: float, pitch: float, roll: float, jaw: float,
             *expression: float) -> np.ndarray:
        if source is None:
            raise gr.Error("Upload a portrait (or press 'Use the demo assets').")
        try:
            animator = state.animator(label)
            src = animator.prepare_source(np.ascontiguousarray(source[..., :3]))
            spec = EditSpec(yaw=yaw, pitch=pitch, roll=roll, jaw=jaw, expression={i: v for i, v in enumerate(expression)})
            return animator.animate_fit(src, apply_edit(src.fit, spec, convention=animator.recipe)).frames[0]
        except Exception as err:  # shown to the user as one line, whatever failed
            raise gr.Error(f"{type(err).__name__}: {err}") from None

    # Gradio keeps its own copies of uploads and results: drop those older than an hour, hourly
    with gr.Blocks(title="gdpw: one-shot face animation", delete_cache=(3600, 3600)) as app:
        gr.Markdown("# gdpw — geometry-driven progressive warping\nUpload a portrait and a driving video (or a motion file), "
                    "or use the built-in demo head.")
        with gr.Row():
            source = gr.Image(label="Portrait", type="numpy", format="png", elem_id="source")
            driving = gr.Video(label="Driving video", elem_id="driving")
            motion_file = gr.File(label="... or a motion file (gdpw fit -o x.motion.npz)", file_types=[".npz"],
                                  type="filepath", elem_id="motion-file")
        with gr.Row():
            demo_btn = gr.Button("Use the demo assets", elem_id="use-demo")
            label = gr.Dropdown(labels, value=labels[0], label="Checkpoint (guidance)", elem_id="checkpoint")
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
        demo_btn.click(use_demo, outputs=[source, driving])
        run.click(animate, inputs=[source, driving, motion_file, label, motion, side], outputs=result)
        edit_btn.click(edit, inputs=[source, label, yaw, pitch, roll, jaw, *exps], outputs=edited)
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
