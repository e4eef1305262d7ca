"""Inference pipeline: track, transfer motion, render and generate, paste back; edits."""

from gdpw.common.crop import CropBox, crop, crop_box, paste_back

from .animator import AnimateConfig, AnimationResult, Animator, Source, source_from_fit, stream_frames, transfer_motion
from .edit import EditSpec, apply_edit, parse_components, parse_sweep, sweep

__all__ = [
    "AnimateConfig",
    "AnimationResult",
    "Animator",
    "CropBox",
    "EditSpec",
    "Source",
    "apply_edit",
    "crop",
    "crop_box",
    "parse_components",
    "parse_sweep",
    "paste_back",
    "source_from_fit",
    "stream_frames",
    "sweep",
    "transfer_motion",
]
