"""Cameras that map FLAME's world space (x right, y up, z towards the viewer) to image space.

Image space is what the renderer and the generator use: x right and y down in normalised device
coordinates ([-1, 1] spans the image, pixel centres at -1 + (2 i + 1) / W) and z a depth that
grows away from the camera.
"""

from __future__ import annotations

import torch


def orthographic(verts: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """DECA-style weak perspective. verts: (B, V, 3); cam: (B, 3) = [scale, tx, ty]."""
    s = cam[:, None, 0:1]
    xy = (verts[..., :2] + cam[:, None, 1:3]) * s
    return torch.cat([xy[..., :1], -xy[..., 1:2], -verts[..., 2:3]], dim=-1)


def perspective(verts: torch.Tensor, focal: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Pinhole camera on the +z axis looking at the origin.

    focal: (B,) focal length in NDC units (2 / field-of-view width at unit depth);
    translation: (B, 3) added to the vertices; the camera sits at the origin looking down -z,
    so a head at z = -distance is in view. Depth is the distance along the view axis.
    """
    p = verts + translation[:, None, :]
    depth = (-p[..., 2:3]).clamp_min(1e-6)
    f = focal[:, None, None]
    return torch.cat([f * p[..., :1] / depth, -f * p[..., 1:2] / depth, depth], dim=-1)
