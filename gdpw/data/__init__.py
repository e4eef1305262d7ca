"""Datasets: synthetic talking heads, gdpw's shard format, the official layout, pair sampling."""

from .dataset import (
    ClipInfo,
    ColorJitter,
    DatasetError,
    GdpwClipSource,
    OfficialClipSource,
    PairDataset,
    PairSamplerConfig,
    flip_pair,
    load_mirror_map,
    mirror_map,
    read_index,
)
from .synth import SynthConfig, render_clip, write_synth_dataset

__all__ = [
    "ClipInfo",
    "ColorJitter",
    "DatasetError",
    "GdpwClipSource",
    "OfficialClipSource",
    "PairDataset",
    "PairSamplerConfig",
    "SynthConfig",
    "flip_pair",
    "load_mirror_map",
    "mirror_map",
    "read_index",
    "render_clip",
    "write_synth_dataset",
]
