"""Crop stage: a square face box from landmarks, crops, landmark coordinates and paste-back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CropBox:
    """A square region of the source image in continuous pixel coordinates (pixel i spans [i, i+1))."""

    x0: float
    y0: float
    size: float

    def to_ndc(self, points: np.ndarray) -> np.ndarray:
        """Pixel-centre coordinates (N, 2) to the crop's NDC ([-1, 1] across the box)."""
        return (points + 0.5 - np.array([self.x0, self.y0])) / self.size * 2 - 1


def crop_box(landmarks: np.ndarray, scale: float = 2.5, shift: float = 0.0) -> CropBox:
    """Square box centred on the 68 landmarks' bounding box, ``scale`` times its larger side.

    The default framing (head, hair and some shoulders) matches gdpw's synthetic training data;
    ``shift`` moves the centre down by that fraction of the box.
    """
    lo, hi = landmarks.min(0), landmarks.max(0)
    side = float(max(hi - lo)) * scale
    cx, cy = (lo + hi + 1.0) / 2
    cy = cy + shift * side
    return CropBox(float(cx - side / 2), float(cy - side / 2), side)


def crop(image: np.ndarray, box: CropBox, out_size: int) -> np.ndarray:
    """Resample ``box`` of an RGB uint8 image to ``out_size`` square; outside the image is black."""
    im = Image.fromarray(image)
    data = (box.x0, box.y0, box.x0 + box.size, box.y0 + box.size)
    return np.asarray(im.transform((out_size, out_size), Image.Transform.EXTENT, data, Image.Resampling.BILINEAR))


def paste_back(frame: np.ndarray, patch: np.ndarray, box: CropBox, feather: float = 0.08) -> np.ndarray:
    """Blend a square ``patch`` (the generated crop) back into ``frame`` over ``box``.

    The blend weight falls off smoothly over ``feather`` of the box at its edges.
    """
    h, w = frame.shape[:2]
    x0, y0 = int(np.floor(box.x0)), int(np.floor(box.y0))
    x1, y1 = int(np.ceil(box.x0 + box.size)), int(np.ceil(box.y0 + box.size))
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return frame.copy()
    # where each destination pixel centre falls in the patch
    ys, xs = np.mgrid[cy0:cy1, cx0:cx1].astype(np.float32) + 0.5
    u = (xs - box.x0) / box.size
    v = (ys - box.y0) / box.size
    n = patch.shape[0]
    px = np.clip(u * n - 0.5, 0, n - 1)
    py = np.clip(v * n - 0.5, 0, n - 1)
    x_lo, y_lo = np.floor(px).astype(int), np.floor(py).astype(int)
    x_hi, y_hi = np.minimum(x_lo + 1, n - 1), np.minimum(y_lo + 1, n - 1)
    fx, fy = (px - x_lo)[..., None], (py - y_lo)[..., None]
    p = patch.astype(np.float32)
    sample = (p[y_lo, x_lo] * (1 - fx) * (1 - fy) + p[y_lo, x_hi] * fx * (1 - fy)
              + p[y_hi, x_lo] * (1 - fx) * fy + p[y_hi, x_hi] * fx * fy)
    edge = np.minimum(np.minimum(u, 1 - u), np.minimum(v, 1 - v))
    alpha = np.clip(edge / feather, 0, 1)[..., None]
    out = frame.astype(np.float32).copy()
    region = out[cy0:cy1, cx0:cx1]
    out[cy0:cy1, cx0:cx1] = region * (1 - alpha) + sample * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
