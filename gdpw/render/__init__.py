"""Rasterisation and the guidance patterns of GDPW."""

from .patterns import (
    GuidancePatterns,
    nmfc_colors,
    render_attrs,
    render_driving,
    render_guidance,
    render_nmfc,
    render_source_codes,
)
from .rasterizer import Fragments, interpolate, rasterize

__all__ = [
    "Fragments",
    "GuidancePatterns",
    "interpolate",
    "nmfc_colors",
    "rasterize",
    "render_attrs",
    "render_driving",
    "render_guidance",
    "render_nmfc",
    "render_source_codes",
]
