"""Rasterisation and the guidance patterns of GDPW."""

from .antialias import antialias, edge_opposites
from .patterns import (
    DrivingMaps,
    GuidancePatterns,
    nmfc_colors,
    paint_mask,
    render_attrs,
    render_driving,
    render_guidance,
    render_nmfc,
    render_source_codes,
)
from .rasterizer import Fragments, interpolate, rasterize

__all__ = [
    "DrivingMaps",
    "Fragments",
    "GuidancePatterns",
    "antialias",
    "edge_opposites",
    "interpolate",
    "nmfc_colors",
    "paint_mask",
    "rasterize",
    "render_attrs",
    "render_driving",
    "render_guidance",
    "render_nmfc",
    "render_source_codes",
]
