"""uint8 images (H, W, 3) / (N, H, W, 3) to float tensors (3, H, W) / (N, 3, H, W) in [0, 1], and back."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) to float (..., 3, H, W) in [0, 1]."""
    arr = np.ascontiguousarray(images)
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    return t.movedim(-1, -3).float().div(255)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float (..., 3, H, W) in [0, 1] (clamped) to uint8 (..., H, W, 3), rounded."""
    return (images.detach().clamp(0, 1).movedim(-3, -1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    """An RGB uint8 image scaled (bilinear) to ``height`` rows, aspect kept."""
    from PIL import Image

    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((max(1, round(w * height / h)), height), Image.Resampling.BILINEAR))


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """An (H, W, 3) uint8 image with its largest side at most ``max_side`` (shrunk with Lanczos; as is if smaller)."""
    from PIL import Image

    if max(image.shape[:2]) <= max_side:
        return image
    im = Image.fromarray(image)
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(im).copy()
