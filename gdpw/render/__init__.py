"""Rasterisation and the guidance patterns of GDPW."""

from .patterns import GuidancePatterns, nmfc_colors, render_attrs, render_guidance, render_nmfc
from .rasterizer import Fragments, interpolate, rasterize

__all__ = [
    "Fragments",
    "GuidancePatterns",
    "interpolate",
    "nmfc_colors",
    "rasterize",
    "render_attrs",
    "render_guidance",
    "render_nmfc",
]
