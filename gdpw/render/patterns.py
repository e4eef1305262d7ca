"""The guidance patterns of GDPW, rendered from image-space meshes (see ``gdpw.flame.camera``).

* geometric displacement field: per-vertex source-minus-driving xy offsets (NDC), rendered on
  the driving mesh, back faces culled, zero off the mesh;
* posed neural codes: a learnable code per vertex rendered on the source and driving meshes;
* NMFC (normalised mean-face coordinates): the template's xyz scaled to [0, 1] rendered as colour,
  the pattern the paper compares against;
* paint mask (gdpw's, for alpha-blending generators at inference): where the driving mesh shows
  what the warped source cannot: triangles back-facing in the source or stretched well beyond their
  source area, and what the head uncovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .antialias import antialias as antialias_maps
from .rasterizer import CullMode, Fragments, face_normals_z, interpolate, rasterize


@dataclass
class GuidancePatterns:
    """Generator inputs for one (source, driving) batch; maps are (B, C, H, W)."""

    geom_disp: torch.Tensor  # (B, 2, H, W)
    codes_s: torch.Tensor | None  # (B, D, H, W) when codes were given
    codes_d: torch.Tensor | None
    mask_s: torch.Tensor  # (B, 1, H, W) source mesh coverage
    mask_d: torch.Tensor  # (B, 1, H, W) driving mesh coverage


def displacement_attrs(verts_s: torch.Tensor, verts_d: torch.Tensor) -> torch.Tensor:
    """Per-vertex source-minus-driving xy offsets (B, V, 2)."""
    return verts_s[..., :2] - verts_d[..., :2]


class DrivingMaps(NamedTuple):
    """The driving pass: displacement field (B, 2, H, W), driving codes (B, D, H, W) or None,
    coverage (B, 1, H, W), (static path) whether the rasteriser's buffer overflowed, and the paint
    mask (B, 1, H, W) when asked for (``paint_mask``)."""

    geom_disp: torch.Tensor
    codes_d: torch.Tensor | None
    mask: torch.Tensor
    overflow: torch.Tensor | None
    paint: torch.Tensor | None = None


def paint_mask(frags_d: Fragments, cover_s: torch.Tensor, verts_s: torch.Tensor, verts_d: torch.Tensor,
               faces: torch.Tensor, stretch: float, grow: int = 1) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1]: 1 where the driving mesh (rasterised as ``frags_d``) shows what the
    source image cannot give, so a generator may paint there; 0 where the warped source holds it.

    On the driving mesh a pixel is paintable on a triangle that is back-facing in the source (turned
    into view) or whose screen area grew more than ``stretch`` times (an opening mouth's seam). Off
    it, where the source mesh was (``cover_s`` (B, 1, H, W), its coverage): what the head uncovers.
    Off both meshes (background, hair) the warp holds. The mask is dilated by ``grow`` pixels and its
    edge softened over 3 pixels."""
    tri_s, tri_d = verts_s[:, faces], verts_d[:, faces]  # (B, F, 3, 3)
    area_s, area_d = -face_normals_z(tri_s), -face_normals_z(tri_d)  # front faces positive
    tiny = 1e-9
    new = (area_s <= tiny) | (area_d > stretch * area_s.clamp_min(tiny))  # (B, F)
    face = frags_d.face_map()  # (B, H, W)
    batch = torch.arange(face.shape[0], device=face.device).view(-1, 1, 1).expand_as(face)
    uncovered = cover_s[:, 0] > 0.5
    paint = torch.where(face >= 0, new[batch, face.clamp_min(0)], uncovered).unsqueeze(1).to(verts_d.dtype)
    if grow > 0:
        paint = F.max_pool2d(paint, 2 * grow + 1, 1, grow)
    return F.avg_pool2d(paint, 3, 1, 1, count_include_pad=False)


def render_driving(
    verts_s: torch.Tensor,
    verts_d: torch.Tensor,
    faces: torch.Tensor,
    size: tuple[int, int],
    embeds: torch.Tensor | None = None,
    cull: CullMode = "official",
    antialias: bool = False,
    static: bool = False,
    paint_stretch: float = 0.0,
    cover_s: torch.Tensor | None = None,
) -> DrivingMaps:
    """The driving pass: displacement field, driving codes when ``embeds`` are given, the
    driving mesh's coverage (see ``DrivingMaps``). ``antialias`` blends the
    maps across silhouette edges as the official renderer does (``gdpw.render.antialias``).
    ``paint_stretch`` > 0 also gives the paint mask with that stretch (``paint_mask``), from the
    source mesh's coverage ``cover_s`` (1 or B, 1, H, W) when given (it is the same for every frame
    of a video), else rasterised here."""
    frags_d = rasterize(verts_d, faces, size, cull, static)
    attrs_d = displacement_attrs(verts_s, verts_d)
    if embeds is not None:
        attrs_d = torch.cat([attrs_d, embeds.to(attrs_d).expand(verts_d.shape[0], -1, -1)], dim=-1)
    maps_d = interpolate(attrs_d, faces, frags_d)
    if antialias:
        maps_d = antialias_maps(maps_d, frags_d, verts_d, faces, static=static)
    paint = None
    if paint_stretch > 0:
        cover_s = rasterize(verts_s, faces, size, cull, static).mask() if cover_s is None else cover_s.expand(verts_d.shape[0], -1, -1, -1)
        paint = paint_mask(frags_d, cover_s, verts_s, verts_d, faces, paint_stretch)
    return DrivingMaps(maps_d[:, :2], maps_d[:, 2:] if embeds is not None else None, frags_d.mask(), frags_d.overflow, paint)


def render_source_codes(
    verts_s: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], embeds: torch.Tensor, cull: CullMode = "official",
    antialias: bool = False, static: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The source pass: codes (B, D, H, W) on the source mesh and its coverage (B, 1, H, W)."""
    frags_s = rasterize(verts_s, faces, size, cull, static)
    codes = interpolate(embeds, faces, frags_s)
    return (antialias_maps(codes, frags_s, verts_s, faces, static=static) if antialias else codes), frags_s.mask()


def render_guidance(
    verts_s: torch.Tensor,
    verts_d: torch.Tensor,
    faces: torch.Tensor,
    size: tuple[int, int],
    embeds: torch.Tensor | None = None,
    cull: CullMode = "official",
    antialias: bool = False,
    static: bool = False,
) -> GuidancePatterns:
    """Both patterns for a batch of source and driving meshes: two rasterisations in all."""
    d = render_driving(verts_s, verts_d, faces, size, embeds, cull, antialias, static)
    if embeds is None:
        return GuidancePatterns(d.geom_disp, None, d.codes_d, rasterize(verts_s, faces, size, cull, static).mask(), d.mask)
    codes_s, mask_s = render_source_codes(verts_s, faces, size, embeds, cull, antialias, static)
    return GuidancePatterns(d.geom_disp, codes_s, d.codes_d, mask_s, d.mask)


def nmfc_colors(template: torch.Tensor) -> torch.Tensor:
    """Normalised mean-face coordinates of a (V, 3) template: each axis scaled to [0, 1]."""
    lo = template.amin(0, keepdim=True)
    hi = template.amax(0, keepdim=True)
    return (template - lo) / (hi - lo).clamp_min(1e-8)


def render_nmfc(
    verts: torch.Tensor, faces: torch.Tensor, template: torch.Tensor, size: tuple[int, int], cull: CullMode = "official"
) -> torch.Tensor:
    """(B, 3, H, W) NMFC image of posed meshes; zero off the mesh."""
    return interpolate(nmfc_colors(template), faces, rasterize(verts, faces, size, cull))


def render_attrs(
    verts: torch.Tensor, faces: torch.Tensor, attrs: torch.Tensor, size: tuple[int, int], cull: CullMode = "official"
) -> tuple[torch.Tensor, Fragments]:
    """Any per-vertex attributes rendered on posed meshes, with the fragments."""
    frags = rasterize(verts, faces, size, cull)
    return interpolate(attrs, faces, frags), frags


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (B, V, 3) of (B, V, 3) meshes."""
    tri = verts[:, faces]
    n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    out = torch.zeros_like(verts)
    for k in range(3):
        out.index_add_(1, faces[:, k], n)
    return torch.nn.functional.normalize(out, dim=-1)


def render_shaded(
    verts_world: torch.Tensor,
    verts_img: torch.Tensor,
    faces: torch.Tensor,
    size: tuple[int, int],
    albedo: torch.Tensor | None = None,
    light: tuple[float, float, float] = (0.3, 0.4, 1.0),
) -> torch.Tensor:
    """(B, 3, H, W) Lambertian shading of meshes lit from ``light`` (world space), zero off the mesh.

    ``albedo`` is per-vertex colour (B, V, 3) or (V, 3); grey when None.
    """
    normals = vertex_normals(verts_world, faces)
    direction = torch.nn.functional.normalize(torch.tensor(light, dtype=verts_world.dtype, device=verts_world.device), dim=0)
    shade = 0.25 + 0.75 * (normals @ direction).clamp_min(0).unsqueeze(-1)
    color = shade * (0.8 if albedo is None else albedo)
    img, _ = render_attrs(verts_img, faces, color.expand(verts_img.shape[0], -1, 3), size)
    return img
