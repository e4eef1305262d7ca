"""Turn guidance maps into pictures a person can look at."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def flow_to_rgb(flow: torch.Tensor, max_norm: float | None = None) -> torch.Tensor:
    """(B, 2, H, W) flow to (B, 3, H, W) colour: hue is direction, saturation magnitude; white at zero."""
    dx, dy = flow[:, 0], flow[:, 1]
    mag = torch.sqrt(dx**2 + dy**2)
    scale = max_norm if max_norm is not None else float(mag.max().clamp_min(1e-8))
    sat = (mag / scale).clamp(0, 1)
    hue = (torch.atan2(dy, dx) / (2 * math.pi)) % 1.0
    # HSV (value 1) to RGB
    k = lambda n: (n + hue * 6) % 6  # noqa: E731
    chan = [1 - sat * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1) for n in (5, 3, 1)]
    return torch.stack(chan, dim=1)


def codes_to_rgb(codes: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, D, H, W) codes to colour by their first three principal components over covered pixels."""
    b, d, h, w = codes.shape
    flat = codes.permute(0, 2, 3, 1).reshape(-1, d)
    sel = flat if mask is None else flat[mask.reshape(-1) > 0]
    if sel.shape[0] < 3:
        return codes.new_zeros(b, 3, h, w)
    mean = sel.mean(0)
    _, _, v = torch.pca_lowrank(sel - mean, q=min(3, d), center=False)
    proj = (flat - mean) @ v
    lo, hi = proj.amin(0), proj.amax(0)
    rgb = ((proj - lo) / (hi - lo).clamp_min(1e-8)).reshape(b, h, w, -1).permute(0, 3, 1, 2)
    if rgb.shape[1] < 3:
        rgb = torch.cat([rgb, rgb.new_zeros(b, 3 - rgb.shape[1], h, w)], dim=1)
    return rgb if mask is None else rgb * mask


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float in [0, 1] to (H, W, 3) uint8."""
    if img.ndim == 3 and img.shape[0] == 3:
        img = img.permute(1, 2, 0)
    return (img.detach().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def save_png(img: torch.Tensor, path: str | Path) -> None:
    save_image(to_uint8(img), path)


def save_image(rgb: np.ndarray, path: str | Path) -> None:
    """An (H, W, 3) uint8 image, its format from the suffix, written atomically (nothing half-written)."""
    from PIL import Image

    from gdpw.common.files import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format=Image.registered_extensions().get(Path(path).suffix.lower()))


def hstack(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) to one (3, H, N * W) strip."""
    return torch.cat(list(images), dim=2)
