"""Backward warping with flows in normalised device coordinates (NDC, [-1, 1]).

Two conventions are supported:

* ``align_corners=False`` (the released weights' convention): the identity grid is
  ``linspace(-1, 1, W)`` (pixel centres at ``-1 + 2 i / (W - 1)``) but ``grid_sample`` is called
  with ``align_corners=False``, which puts pixel centres at ``-1 + (2 i + 1) / W``. A zero flow is
  therefore a slight zoom, not the identity. The released checkpoints were trained with it, so
  it stays the default.
* ``align_corners=True`` (the corrected convention): the same grid sampled with
  ``align_corners=True``; a zero flow is exactly the identity. Use it for models trained from
  scratch (``GeneratorConfig.warp_align_corners``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_grid(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(H, W, 2) grid of xy in [-1, 1] with (W-1) and (H-1) spacing."""
    if height < 2 or width < 2:
        raise ValueError(f"cannot warp a {height}x{width} map: both sides must be at least 2")
    ys = 2.0 * (torch.arange(height, dtype=dtype, device=device) / (height - 1)) - 1.0
    xs = 2.0 * (torch.arange(width, dtype=dtype, device=device) / (width - 1)) - 1.0
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def backward_warp(feat: torch.Tensor, flow: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Sample ``feat`` (B, C, H, W) at ``grid + flow``; ``flow`` is (B, 2, H, W) NDC offsets, xy.

    Out-of-range samples read zeros.
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W), got {tuple(flow.shape)}")
    if flow.shape[2:] != feat.shape[2:]:
        raise ValueError(f"flow size {tuple(flow.shape[2:])} differs from feature size {tuple(feat.shape[2:])}")
    grid = identity_grid(feat.shape[2], feat.shape[3], feat.dtype, feat.device)
    grid = grid.unsqueeze(0) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)


def pixels_to_ndc_flow(flow_px: torch.Tensor) -> torch.Tensor:
    """Convert a (B, 2, H, W) flow in pixels to NDC offsets: divide by (W-1)/2 and (H-1)/2."""
    h, w = flow_px.shape[2:]
    # The operation order (divide, then double) matches the released network bit for bit.
    return 2 * torch.cat([flow_px[:, :1] / (w - 1), flow_px[:, 1:2] / (h - 1)], dim=1)
