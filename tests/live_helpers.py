"""Shared by the live tests: a synthetic head turning in front of the camera, and a way to read
how far a live result has turned."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdpw.data.synth import Clip, SynthConfig, head_turn, render_clip
from gdpw.flame import FLAME, FlameSequence
from gdpw.pipeline import Animator, EditSpec, Source, apply_edit
from gdpw.pipeline.live import LiveFrame


def turning_head(frames: int = 24, fps: float = 10.0) -> tuple[np.ndarray, Clip]:
    """A portrait (a synthetic head MediaPipe finds again in the demo generator's results) and a
    different synthetic head turning +-25 degrees once over ``frames`` (its yaw known per frame)."""
    flame = FLAME()
    cfg = SynthConfig(size=256, frames_per_clip=frames, seed=7, fps=fps)
    clip = render_clip(flame, cfg, 1, 1, motion=head_turn(flame, cfg, 1, 1))
    portrait = render_clip(flame, SynthConfig(size=256, frames_per_clip=1, seed=7), 3, 0).images[0]
    return portrait, clip


def yaw_of_results(animator: Animator, source: Source, shown: Sequence[LiveFrame]) -> list[float]:
    """For each live result, the yaw edit (degrees, -30..30 in steps of 5) of ``source`` whose
    rendering by the same generator it is nearest to, every other parameter (camera, expression,
    jaw, gaze) as the result's own target: absolute differences weighted by how much each pixel
    varies over the edits."""
    yaws = np.arange(-30, 31, 5)
    out = []
    for frame in shown:
        t = frame.target
        assert t is not None
        edits = FlameSequence.cat([
            apply_edit(source.fit, EditSpec(yaw=float(y)), convention=animator.recipe).replace(
                camera=t.camera, expression=t.expression, jaw_pose=t.jaw_pose, eye_pose=t.eye_pose, neck_pose=t.neck_pose)
            for y in yaws])
        bank = animator.animate_fit(source, edits).frames.astype(float)
        weight = bank.std(0).mean(-1)
        out.append(float(yaws[np.argmin([(np.abs(frame.image.astype(float) - b).mean(-1) * weight).sum() for b in bank])]))
    return out
