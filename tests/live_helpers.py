"""Shared by the live tests: a synthetic head turning in front of the camera, and a way to read
how far an animated portrait has turned."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdpw.data.synth import Clip, SynthConfig, head_turn, render_clip
from gdpw.flame import FLAME
from gdpw.pipeline import Animator, EditSpec, Source, apply_edit


def turning_head(frames: int = 24, fps: float = 10.0) -> tuple[np.ndarray, Clip]:
    """A portrait (a synthetic head MediaPipe finds again in the demo generator's results) and a
    different synthetic head turning +-25 degrees once over ``frames`` (its yaw known per frame)."""
    flame = FLAME()
    cfg = SynthConfig(size=256, frames_per_clip=frames, seed=7, fps=fps)
    clip = render_clip(flame, cfg, 1, 1, motion=head_turn(flame, cfg, 1, 1))
    portrait = render_clip(flame, SynthConfig(size=256, frames_per_clip=1, seed=7), 3, 0).images[0]
    return portrait, clip


def yaw_of_results(animator: Animator, source: Source, images: Sequence[np.ndarray]) -> list[float]:
    """For each animated portrait, the yaw edit (degrees, -30..30 in steps of 5) of ``source`` whose
    rendering by the same generator it is nearest to (mean absolute difference)."""
    yaws = np.arange(-30, 31, 5)
    bank = [animator.animate_fit(source, apply_edit(source.fit, EditSpec(yaw=float(y)), convention=animator.recipe))
            .frames[0].astype(float) for y in yaws]
    return [float(yaws[np.argmin([np.abs(img.astype(float) - b).mean() for b in bank])]) for img in images]
