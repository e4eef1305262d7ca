"""A batched triangle rasteriser in plain PyTorch (CPU and CUDA).

Vertices come in image space: x right and y down in NDC ([-1, 1] spans the image, pixel
centres at ``-1 + (2 i + 1) / W``, the ``align_corners=False`` convention) and z a depth that
grows away from the camera. Each triangle is tested against the pixel centres of its bounding
box, all triangles of the batch at once; a z-buffer keeps the nearest one per pixel, by one
``scatter_reduce(amin)`` over keys that pack the quantised depth above the triangle id.

Back faces are the triangles whose screen-space normal ``(v1 - v0) x (v2 - v0)`` has a positive
z. ``cull="official"`` does what the released GDPW renderer does: rasterise every triangle, then
clear the pixels whose nearest triangle is a back face (so a back face still hides what lies
behind it). ``cull="before"`` drops back faces before rasterising; ``cull="none"`` keeps all.

Barycentrics of the winning triangles are recomputed with autograd on, so ``interpolate`` passes
gradients to per-vertex attributes and, through the barycentrics, to vertex positions (not
through visibility).

``static=True`` computes the same fragments with shapes fixed by the mesh and the image: the
candidate (triangle, pixel) pairs go into a buffer of ``capacity`` entries instead of one sized
by the data, and the fragments are kept for every pixel (``Fragments.covered`` says which hold a
triangle). Nothing waits on the device, so the pass can be captured in a CUDA graph. A buffer too
small for the mesh is reported in ``Fragments.overflow`` (a device tensor); render again with the
default path then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

CullMode = Literal["official", "before", "none"]
_FACE_BITS = 25
_DEPTH_LEVELS = 2**37  # depth quantisation; 37 + 25 bits fit a signed int64
_EMPTY = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    """Rasterised triangles of a batch, stored for the covered pixels only.

    pix: (N,) flat pixel index ``b * H * W + y * W + x``; face: (N,) triangle id;
    bary: (N, 3) barycentric weights of the triangle's corners; depth: (N,) interpolated z.
    """

    batch: int
    height: int
    width: int
    pix: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    covered: torch.Tensor | None = None  # (N,) bool when the fragments hold every pixel (static path)
    overflow: torch.Tensor | None = None  # () bool: the static path's candidate buffer was too small

    def face_map(self) -> torch.Tensor:
        """(B, H, W) triangle id per pixel, -1 where no triangle is visible."""
        out = torch.full((self.batch * self.height * self.width,), -1, dtype=torch.long, device=self.pix.device)
        out[self.pix] = self.face if self.covered is None else torch.where(self.covered, self.face, -1)
        return out.view(self.batch, self.height, self.width)

    def mask(self) -> torch.Tensor:
        """(B, 1, H, W) float mask of covered pixels."""
        return (self.face_map() >= 0).to(self.bary.dtype).unsqueeze(1)

    def depth_map(self) -> torch.Tensor:
        """(B, H, W) depth, +inf where no triangle is visible."""
        out = torch.full((self.batch * self.height * self.width,), float("inf"), dtype=self.depth.dtype, device=self.pix.device)
        depth = self.depth.detach()
        out[self.pix] = depth if self.covered is None else torch.where(self.covered, depth, torch.inf)
        return out.view(self.batch, self.height, self.width)


def face_normals_z(tri: torch.Tensor) -> torch.Tensor:
    """z of ``(v1 - v0) x (v2 - v0)`` for triangles (..., 3, >=2)."""
    e1 = tri[..., 1, :2] - tri[..., 0, :2]
    e2 = tri[..., 2, :2] - tri[..., 0, :2]
    return e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]


def _to_pixels(verts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    x = (verts[..., 0] + 1) * (width / 2) - 0.5
    y = (verts[..., 1] + 1) * (height / 2) - 0.5
    return torch.stack([x, y, verts[..., 2]], dim=-1)


def _barycentric(tri: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Barycentrics (N, 3) of points (px, py) in pixel-space triangles (N, 3, >=2)."""
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    x1, y1 = tri[:, 1, 0], tri[:, 1, 1]
    x2, y2 = tri[:, 2, 0], tri[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    w0 = (x1 - px) * (y2 - py) - (y1 - py) * (x2 - px)
    w1 = (x2 - px) * (y0 - py) - (y2 - py) * (x0 - px)
    w2 = (x0 - px) * (y1 - py) - (y0 - py) * (x1 - px)
    return torch.stack([w0, w1, w2], dim=-1) / area.unsqueeze(-1)


def default_capacity(batch: int, n_faces: int, size: tuple[int, int]) -> int:
    """Candidate (triangle, pixel) pairs the static path makes room for: two layers of the image
    (a closed head covers its pixels with a front and a back face) plus four per triangle."""
    return batch * (2 * size[0] * size[1] + 4 * n_faces)


def rasterize(
    verts: torch.Tensor,
    faces: torch.Tensor,
    size: tuple[int, int],
    cull: CullMode = "official",
    static: bool = False,
    capacity: int | None = None,
) -> Fragments:
    """Rasterise (B, V, 3) image-space vertices with (F, 3) triangles into an (H, W) image.

    ``static``: shapes fixed by the mesh and image, no host synchronisation (see the module docstring).
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (B, V, 3), got {tuple(verts.shape)}")
    if cull not in ("official", "before", "none"):
        raise ValueError(f"cull must be 'official', 'before' or 'none', got {cull!r}")
    b, _, _ = verts.shape
    h, w = size
    n_faces = faces.shape[0]
    if n_faces >= 2**_FACE_BITS:
        raise ValueError(f"at most {2**_FACE_BITS - 1} triangles, got {n_faces}")
    if static:
        return _rasterize_static(verts, faces, size, cull, capacity or default_capacity(b, n_faces, size))
    device = verts.device

    with torch.no_grad():
        vp, tri, back, (xmin, xmax, ymin, ymax), keep = _triangles(verts, faces, size, cull)
        ids = keep.nonzero().squeeze(1)  # kept triangles, flat over the batch
        # per triangle: planes of two barycentrics and of depth, as functions of pixel (x, y)
        planes = _planes(tri.index_select(0, ids))  # (K, 3, 3)
        ok = torch.isfinite(planes).all(dim=2).all(dim=1)
        if not bool(ok.all()):
            ids, planes = ids[ok], planes[ok]
        x0 = xmin.index_select(0, ids).int()
        y0 = ymin.index_select(0, ids).int()
        bw = xmax.index_select(0, ids).int() - x0 + 1
        counts = bw * (ymax.index_select(0, ids).int() - y0 + 1)
        total = int(counts.sum())
        cand = torch.repeat_interleave(torch.arange(ids.numel(), device=device, dtype=torch.int32), counts, output_size=total)
        local = torch.arange(total, device=device, dtype=torch.int32) - (torch.cumsum(counts, 0, dtype=torch.int32) - counts).index_select(0, cand)
        cbw = bw.index_select(0, cand)
        row = local // cbw
        py = y0.index_select(0, cand) + row
        px = x0.index_select(0, cand) + (local - row * cbw)
        image, face_id = ids.div(n_faces, rounding_mode="floor"), ids.remainder(n_faces)  # per kept triangle
        keys, _ = _depth_keys(planes.index_select(0, cand), px, py, vp, face_id.index_select(0, cand))
        pix = (image * (h * w)).index_select(0, cand) + (py * w + px)
        zbuf = torch.full((b * h * w,), _EMPTY, dtype=torch.long, device=device)
        zbuf.scatter_reduce_(0, pix, keys, reduce="amin")
        win_pix = (zbuf != _EMPTY).nonzero().squeeze(1)
        win_face = zbuf.index_select(0, win_pix) & (2**_FACE_BITS - 1)
        win_b = win_pix // (h * w)
        if cull == "official":
            front = ~back.index_select(0, win_b * n_faces + win_face)
            win_pix, win_face, win_b = win_pix[front], win_face[front], win_b[front]
    wbary, wdepth = _visible(verts, faces, size, win_face, win_b, win_pix % (h * w))
    return Fragments(b, h, w, win_pix, win_face, wbary, wdepth)


def _triangles(verts: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
               cull: CullMode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
    """Pixel-space vertices (B, V, 3), the batch's triangles (B * F, 3, 3), which face backwards,
    the pixel-centre bounds of each (xmin, xmax, ymin, ymax) and which are worth testing."""
    b = verts.shape[0]
    h, w = size
    vp = _to_pixels(verts.detach(), h, w)
    flat_faces = (faces.unsqueeze(0) + (torch.arange(b, device=verts.device) * verts.shape[1]).view(b, 1, 1)).view(-1, 3)
    tri = vp.reshape(-1, 3)[flat_faces]
    back = face_normals_z(tri) > 0
    xy = tri[..., :2]
    lo = torch.minimum(torch.minimum(xy[:, 0], xy[:, 1]), xy[:, 2])
    hi = torch.maximum(torch.maximum(xy[:, 0], xy[:, 1]), xy[:, 2])
    xmin = lo[:, 0].ceil().clamp(0, w - 1)
    xmax = hi[:, 0].floor().clamp(-1, w - 1)
    ymin = lo[:, 1].ceil().clamp(0, h - 1)
    ymax = hi[:, 1].floor().clamp(-1, h - 1)
    # a box wholly left of or above the image is empty already (its max clamps to -1 below its min)
    keep = (xmax >= xmin) & (ymax >= ymin) & (lo[:, 0] <= w - 1) & (lo[:, 1] <= h - 1)
    if cull == "before":
        keep &= ~back
    return vp, tri, back, (xmin, xmax, ymin, ymax), keep


def _depth_keys(cp: torch.Tensor, px: torch.Tensor, py: torch.Tensor, vp: torch.Tensor, face_id: torch.Tensor,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """z-buffer keys of candidate (triangle, pixel) pairs: the quantised depth above the triangle
    id (in its mesh) where the pixel centre is inside (and ``valid``), empty elsewhere; and the inside mask."""
    vals = torch.addcmul(cp[:, :, 2], cp[:, :, 0], px.to(vp.dtype)[:, None])
    vals.addcmul_(cp[:, :, 1], py.to(vp.dtype)[:, None])  # (N, 3): w0, w1, z
    inside = (vals[:, 0] >= 0) & (vals[:, 1] >= 0) & (vals[:, 0] + vals[:, 1] <= 1)
    if valid is not None:
        inside &= valid
    zlo, zhi = vp[..., 2].min(), vp[..., 2].max()
    q = ((vals[:, 2] - zlo) * ((_DEPTH_LEVELS - 1) / (zhi - zlo).clamp_min(1e-12))).clamp(0, _DEPTH_LEVELS - 1).long()
    return torch.where(inside, (q << _FACE_BITS) | face_id, _EMPTY), inside


def _visible(verts: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], face: torch.Tensor, batch: torch.Tensor,
             rem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable barycentrics (N, 3) and depth (N,) of triangles ``face`` of meshes ``batch``
    at pixels ``rem`` (``y * W + x``)."""
    h, w = size
    vp_grad = _to_pixels(verts, h, w).reshape(-1, 3)
    corners = (faces.index_select(0, face) + (batch * verts.shape[1])[:, None]).view(-1)
    wtri = vp_grad.index_select(0, corners).view(-1, 3, 3)
    bary = _barycentric(wtri, (rem % w).to(vp_grad.dtype), (rem // w).to(vp_grad.dtype))
    return bary, (bary * wtri[..., 2]).sum(-1)


def _rasterize_static(verts: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], cull: CullMode,
                      capacity: int) -> Fragments:
    """The same fragments as ``rasterize``'s default path, every shape fixed in advance."""
    b = verts.shape[0]
    h, w = size
    n_faces = faces.shape[0]
    device = verts.device
    with torch.no_grad():
        vp, tri, back, (xmin, xmax, ymin, ymax), keep = _triangles(verts, faces, size, cull)
        planes = _planes(tri)
        keep &= torch.isfinite(planes).all(dim=2).all(dim=1)
        planes = torch.where(keep[:, None, None], planes, 0.0)
        x0, y0 = xmin.long(), ymin.long()
        bw = (xmax.long() - x0 + 1).clamp_min(0)
        counts = torch.where(keep, bw * (ymax.long() - y0 + 1).clamp_min(0), 0)
        ends = torch.cumsum(counts, 0)
        overflow = ends[-1] > capacity
        slot = torch.arange(capacity, device=device)
        cand = torch.searchsorted(ends, slot, right=True).clamp_max(b * n_faces - 1)  # the triangle of each slot
        local = slot - (ends - counts).index_select(0, cand)
        cbw = bw.index_select(0, cand).clamp_min(1)
        row = local // cbw
        py = y0.index_select(0, cand) + row
        px = x0.index_select(0, cand) + (local - row * cbw)
        keys, inside = _depth_keys(planes.index_select(0, cand), px, py, vp, cand % n_faces, valid=slot < ends[-1])
        pix = torch.where(inside, (cand // n_faces) * (h * w) + (py * w + px).clamp(0, h * w - 1), 0)
        zbuf = torch.full((b * h * w,), _EMPTY, dtype=torch.long, device=device)
        zbuf.scatter_reduce_(0, pix, keys, reduce="amin")
        covered = zbuf != _EMPTY
        face = torch.where(covered, zbuf & (2**_FACE_BITS - 1), 0)
        all_pix = torch.arange(b * h * w, device=device)
        pb = all_pix // (h * w)
        if cull == "official":
            covered &= ~back.index_select(0, pb * n_faces + face)
        face = torch.where(covered, face, 0)
    bary, depth = _visible(verts, faces, size, face, pb, all_pix % (h * w))
    bary = torch.where(covered[:, None], bary, 0.0)
    depth = torch.where(covered, depth, 0.0)
    return Fragments(b, h, w, all_pix, face, bary, depth, covered, overflow)


def _planes(tri: torch.Tensor) -> torch.Tensor:
    """(K, 3, 3) rows (w0, w1, z), each as coefficients (a, b, c) of a x + b y + c.

    Degenerate triangles give non-finite rows.
    """
    x0, y0, z0 = tri[:, 0, 0], tri[:, 0, 1], tri[:, 0, 2]
    x1, y1, z1 = tri[:, 1, 0], tri[:, 1, 1], tri[:, 1, 2]
    x2, y2, z2 = tri[:, 2, 0], tri[:, 2, 1], tri[:, 2, 2]
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    inv = torch.where(area.abs() > 1e-12, 1.0 / area, torch.full_like(area, float("inf")))
    # w0 = ((y1 - y2) x + (x2 - x1) y + (x1 y2 - x2 y1)) / area, and cyclically for w1, w2
    a = torch.stack([y1 - y2, y2 - y0, y0 - y1], dim=1) * inv[:, None]
    b = torch.stack([x2 - x1, x0 - x2, x1 - x0], dim=1) * inv[:, None]
    c = torch.stack([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], dim=1) * inv[:, None]
    zs = torch.stack([z0, z1, z2], dim=1)
    depth = torch.stack([(a * zs).sum(1), (b * zs).sum(1), (c * zs).sum(1)], dim=1)
    return torch.stack([torch.stack([a[:, 0], b[:, 0], c[:, 0]], 1), torch.stack([a[:, 1], b[:, 1], c[:, 1]], 1), depth], 1)


def interpolate(attrs: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Per-vertex attributes (B, V, C) or (V, C) to a (B, C, H, W) map, zeros off the mesh."""
    b, h, w = frags.batch, frags.height, frags.width
    if attrs.ndim == 2:
        attrs = attrs.unsqueeze(0)
    c = attrs.shape[-1]
    if attrs.shape[0] == 1:  # one attribute table for the whole batch: no per-image offsets
        table, offset = attrs[0], None
    else:
        table, offset = attrs.reshape(-1, c), (frags.pix // (h * w)) * attrs.shape[1]
    corners = faces.index_select(0, frags.face)
    vals: torch.Tensor | None = None
    for k in range(3):
        idx = corners[:, k] if offset is None else corners[:, k] + offset
        term = table.index_select(0, idx)
        weight = frags.bary[:, k : k + 1]
        vals = term * weight if vals is None else torch.addcmul(vals, term, weight)
    assert vals is not None
    out = attrs.new_zeros(b * h * w, c).index_put((frags.pix,), vals)
    return out.view(b, h, w, c).permute(0, 3, 1, 2)
