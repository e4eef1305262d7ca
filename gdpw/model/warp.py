"""Backward warping with flows in normalised device coordinates (NDC, [-1, 1]).

Two conventions, chosen per model by ``GeneratorConfig.warp_convention``:

* ``"official"`` (the released weights'): the identity grid is ``2 i / (W - 1) - 1`` but
  ``grid_sample`` is called with ``align_corners=False``, which puts pixel centres at
  ``(2 i + 1) / W - 1``; a zero flow is a slight zoom, and flow heads convert pixels to NDC by
  dividing by ``(W - 1) / 2``. The released checkpoints were trained this way, so it is the default.
* ``"centers"`` (corrected, for models trained from scratch): the identity grid is the pixel
  centres ``(2 i + 1) / W - 1``, sampled with ``align_corners=False``, and pixels convert to NDC by
  ``W / 2``. A zero flow is exactly the identity and NDC agrees with ``gdpw.render``'s, so a
  rendered displacement field warps exactly.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

WarpConvention = Literal["official", "centers"]


def identity_grid(
    height: int, width: int, dtype: torch.dtype, device: torch.device, convention: WarpConvention = "official"
) -> torch.Tensor:
    """(H, W, 2) grid of xy in [-1, 1] under ``convention``."""
    if height < 2 or width < 2:
        raise ValueError(f"cannot warp a {height}x{width} map: both sides must be at least 2")
    if convention == "official":
        ys = 2.0 * (torch.arange(height, dtype=dtype, device=device) / (height - 1)) - 1.0
        xs = 2.0 * (torch.arange(width, dtype=dtype, device=device) / (width - 1)) - 1.0
    else:
        ys = (2.0 * torch.arange(height, dtype=dtype, device=device) + 1.0) / height - 1.0
        xs = (2.0 * torch.arange(width, dtype=dtype, device=device) + 1.0) / width - 1.0
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def backward_warp(feat: torch.Tensor, flow: torch.Tensor, convention: WarpConvention = "official") -> torch.Tensor:
    """Sample ``feat`` (B, C, H, W) at ``grid + flow``; ``flow`` is (B, 2, H, W) NDC offsets, xy.

    Out-of-range samples read zeros.
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be (B, 2, H, W), got {tuple(flow.shape)}")
    if flow.shape[2:] != feat.shape[2:]:
        raise ValueError(f"flow size {tuple(flow.shape[2:])} differs from feature size {tuple(feat.shape[2:])}")
    grid = identity_grid(feat.shape[2], feat.shape[3], feat.dtype, feat.device, convention)
    grid = grid.unsqueeze(0) + flow.permute(0, 2, 3, 1)
    out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if not feat.is_contiguous() and feat.is_contiguous(memory_format=torch.channels_last):
        # grid_sample returns NCHW; keep a channels-last caller channels-last (no mixed-layout ops after)
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def pixels_to_ndc_flow(flow_px: torch.Tensor, convention: WarpConvention = "official") -> torch.Tensor:
    """Convert a (B, 2, H, W) flow in pixels to NDC offsets under ``convention``."""
    h, w = flow_px.shape[2:]
    if convention == "official":
        # The operation order (divide, then double) matches the released network bit for bit.
        return 2 * torch.cat([flow_px[:, :1] / (w - 1), flow_px[:, 1:2] / (h - 1)], dim=1)
    return 2 * torch.cat([flow_px[:, :1] / w, flow_px[:, 1:2] / h], dim=1)
