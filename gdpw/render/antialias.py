"""Analytic silhouette antialiasing, the method of nvdiffrast's ``antialias`` (Laine et al., "Modular
Primitives for High-Performance Differentiable Rendering", 2020), which the official GDPW renderer
applies to its guidance maps.

For every pair of horizontally or vertically adjacent pixels whose visible triangles differ, the
nearer of the two triangles (the only one when the other pixel is background) is examined: if one
of its edges is a silhouette edge (the triangle across it folds back on screen, or there is none)
and crosses the segment between the two pixel centres at a steep enough angle, the two colours are
blended by where it crosses: the pixel the triangle covers less than half of moves towards its
neighbour's colour by ``|0.5 - d|``, ``d`` the crossing's distance from the covered pixel's centre.
All pairs read the input colours; their contributions add up.

The result is differentiable in the colours and, through the crossing positions, in the vertices.
``static=True`` examines every pixel pair with masks instead of gathering the differing ones, so
shapes are fixed and nothing waits on the device (CUDA graphs); the result is the same.
"""

from __future__ import annotations

import torch

from .rasterizer import Fragments

EPS = 1.0 / 16  # a crossing this far outside the segment still counts (clamped), as in nvdiffrast


def edge_opposites(faces: torch.Tensor) -> torch.Tensor:
    """(F, 3): for corner ``i`` of each triangle, the vertex across the opposite edge in the
    neighbouring triangle, or the corner itself where the edge has no neighbour (always a silhouette)."""
    n = faces.shape[0]
    a = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0]])  # edge i joins corners i+1 and i+2
    b = torch.cat([faces[:, 2], faces[:, 0], faces[:, 1]])
    own = torch.cat([faces[:, 0], faces[:, 1], faces[:, 2]])
    nv = int(faces.max()) + 1
    key = torch.minimum(a, b) * nv + torch.maximum(a, b)
    key_sorted, order = torch.sort(key, stable=True)
    out = own.clone()
    if key.numel() > 1:
        same = key_sorted[1:] == key_sorted[:-1]
        first = torch.ones_like(key_sorted, dtype=torch.bool)
        first[1:] = ~same
        # the first two triangles of each edge see each other
        pair = same & first[:-1]
        i, j = order[:-1][pair], order[1:][pair]
        out[i], out[j] = own[j], own[i]
    return out.view(3, n).T.contiguous()


def _same_sign(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.signbit(a) == torch.signbit(b)


def antialias(image: torch.Tensor, frags: Fragments, verts: torch.Tensor, faces: torch.Tensor,
              opposites: torch.Tensor | None = None, static: bool = False) -> torch.Tensor:
    """Antialias ``image`` (B, C, H, W) rendered with ``frags`` from image-space ``verts`` (B, V, 3)."""
    b, c, h, w = image.shape
    opposites = edge_opposites(faces) if opposites is None else opposites
    face_map = frags.face_map()
    depth_map = frags.depth_map()
    # pixel coordinates of the vertices (pixel centres at integers), as the rasteriser uses
    px_verts = torch.stack([(verts[..., 0] + 1) * (w / 2) - 0.5, (verts[..., 1] + 1) * (h / 2) - 0.5], -1)
    colours = image.permute(0, 2, 3, 1).reshape(b * h * w, c)
    deltas, targets = [], []
    for down in (False, True):
        f0 = face_map[:, :-1, :] if down else face_map[:, :, :-1]
        f1 = face_map[:, 1:, :] if down else face_map[:, :, 1:]
        differ = f0 != f1
        if static:  # every pair, masked
            bi, yi, xi = (g.reshape(-1) for g in torch.meshgrid(*(torch.arange(n, device=image.device) for n in differ.shape),
                                                                indexing="ij"))
            differ = differ.reshape(-1)
        else:
            bi, yi, xi = torch.nonzero(differ, as_tuple=True)
            if bi.numel() == 0:
                continue
        y1, x1 = (yi + 1, xi) if down else (yi, xi + 1)
        tri0, tri1 = face_map[bi, yi, xi], face_map[bi, y1, x1]
        use0 = (tri0 >= 0) & ((tri1 < 0) | (depth_map[bi, yi, xi] < depth_map[bi, y1, x1]))
        tri = torch.where(use0, tri0, tri1).clamp_min(0)
        ds = torch.where(use0, 1.0, -1.0).to(verts.dtype)
        ref = torch.stack([torch.where(use0, xi, x1), torch.where(use0, yi, y1)], -1).to(verts.dtype)
        corners = px_verts[bi[:, None], faces[tri]] - ref[:, None]  # (N, 3, 2) relative to the pixel centre
        across = px_verts[bi[:, None], opposites[tri]] - ref[:, None]
        x, y = corners[..., 0], corners[..., 1]
        ox, oy = across[..., 0], across[..., 1]
        j, k = [1, 2, 0], [2, 0, 1]
        area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
        wings = (x[:, j] - ox) * (y[:, k] - oy) - (x[:, k] - ox) * (y[:, j] - oy)
        silhouette = _same_sign(wings, area[:, None])
        if down:  # measure along the segment's direction
            x, y = y, x
        dx, dy = x[:, k] - x[:, j], y[:, k] - y[:, j]
        num = ds[:, None] * (x[:, j] * dy - y[:, j] * dx)
        crosses = ~_same_sign(y[:, j], y[:, k])
        ratio = torch.where(crosses, num / torch.where(crosses, dy, torch.ones_like(dy)), torch.full_like(num, -torch.inf))
        r0, r1, r2 = ratio.unbind(1)
        edge = torch.where((r2 > r0) & (r2 > r1), 2, torch.where(r1 > r0, 1, 0))
        pick = edge[:, None]
        usable = (silhouette.gather(1, pick) & (dy.abs().gather(1, pick) >= dx.abs().gather(1, pick))).squeeze(1)
        dc = ratio.gather(1, pick).squeeze(1)
        hit = usable & (dc > -EPS) & (dc < 1 + EPS)
        alpha = ds * (0.5 - dc.clamp(0, 1))
        flat0 = (bi * h + yi) * w + xi
        flat1 = (bi * h + y1) * w + x1
        if static:
            alpha = torch.where(hit & differ, alpha, 0.0)
        else:
            hit_idx = hit.nonzero().squeeze(1)
            alpha, flat0, flat1 = alpha[hit_idx], flat0[hit_idx], flat1[hit_idx]
        deltas.append(alpha[:, None] * (colours[flat1] - colours[flat0]))
        targets.append(torch.where(alpha > 0, flat0, flat1))
    if not deltas:
        return image
    out = colours.index_add(0, torch.cat(targets), torch.cat(deltas).to(colours.dtype))
    return out.view(b, h, w, c).permute(0, 3, 1, 2)
