"""Datasets: synthetic talking heads, gdpw's shard format, the official layout, pair sampling."""

from .dataset import (
    ClipInfo,
    DatasetError,
    GdpwClipSource,
    OfficialClipSource,
    PairDataset,
    PairSamplerConfig,
    mirror_map,
    read_index,
)
from .synth import SynthConfig, render_clip, write_synth_dataset

__all__ = [
    "ClipInfo",
    "DatasetError",
    "GdpwClipSource",
    "OfficialClipSource",
    "PairDataset",
    "PairSamplerConfig",
    "SynthConfig",
    "mirror_map",
    "read_index",
    "render_clip",
    "write_synth_dataset",
]
