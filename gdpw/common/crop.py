"""Crop stage: square face boxes from landmarks (gdpw's framing and the official GDPW recipe),
crops, landmark coordinates and paste-back.

A ``CropBox`` is a square of the source image in continuous pixel coordinates (pixel index ``i``
spans ``[i, i + 1)``). The crop image samples the box; the crop's NDC (where fitted cameras put
vertices) is the same square moved by ``ndc_shift``: zero for gdpw's own recipe, half a crop pixel
for the official one, whose crops map the box to pixel indices while its vertices are divided by
the crop size (see ``official_boxes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

CropRecipe = Literal["gdpw", "official"]
OFFICIAL_SIZE = 256  # the official generator's crop
DECA_SIZE = 224  # DECA's input crop


@dataclass(frozen=True)
class CropBox:
    """A square region of the source image in continuous pixel coordinates (pixel i spans [i, i+1))."""

    x0: float
    y0: float
    size: float
    ndc_shift: float = 0.0  # the NDC square's offset from the image square, right and down (source pixels)

    @property
    def ndc_origin(self) -> tuple[float, float]:
        return self.x0 + self.ndc_shift, self.y0 + self.ndc_shift

    def to_ndc(self, points: np.ndarray) -> np.ndarray:
        """Pixel-centre coordinates (N, 2) to the crop's NDC ([-1, 1] across the box)."""
        return (points + 0.5 - np.array(self.ndc_origin)) / self.size * 2 - 1

    def image_transform(self, out_size: int) -> np.ndarray:
        """(3, 3) affine map from source pixel indices to crop pixel indices of an ``out_size`` crop."""
        k = out_size / self.size
        return np.array([[k, 0.0, (0.5 - self.x0) * k - 0.5], [0.0, k, (0.5 - self.y0) * k - 0.5], [0.0, 0.0, 1.0]])


def crop_box(landmarks: np.ndarray, scale: float = 2.5, shift: float = 0.0) -> CropBox:
    """gdpw's framing: a square centred on the 68 landmarks' bounding box, ``scale`` times its larger side.

    The default framing (head, hair and some shoulders) matches gdpw's synthetic training data;
    ``shift`` moves the centre down by that fraction of the box.
    """
    lo, hi = landmarks.min(0), landmarks.max(0)
    side = float(max(hi - lo)) * scale
    cx, cy = (lo + hi + 1.0) / 2
    cy = cy + shift * side
    return CropBox(float(cx - side / 2), float(cy - side / 2), side)


def official_geometry(landmarks: np.ndarray) -> tuple[float, float, float]:
    """The official recipe's box centre (pixel indices) and ``old_size`` from 68 landmarks."""
    left, top = landmarks.min(0)
    right, bottom = landmarks.max(0)
    old_size = float((right - left + bottom - top) / 2 * 1.1)
    return float(right - (right - left) / 2), float(bottom - (bottom - top) / 2), old_size


def official_boxes(landmarks: np.ndarray, out_size: int = OFFICIAL_SIZE) -> tuple[CropBox, CropBox]:
    """The official GDPW test-time crops of a face: DECA's (a square of ``int(1.25 old_size)``
    around the landmark box centre, to 224 x 224) and the generator's (``int(1.35 old_size)``,
    spanning ``[cy - 0.6 side, cy + 0.4 side]`` vertically, mapped to pixel indices 0..out-1).

    DECA's NDC puts pixel index ``p`` at ``-1 + 2 p / 224`` and the generator's vertices are
    divided by ``out_size``, so both NDC squares sit half a crop pixel right of and below the
    image squares (``ndc_shift``).
    """
    cx, cy, old_size = official_geometry(landmarks)
    s1, s2 = int(old_size * 1.25), int(old_size * 1.35)
    half1 = s1 / (2 * DECA_SIZE)
    deca = CropBox(cx - s1 / 2 + 0.5 - half1, cy - s1 / 2 + 0.5 - half1, float(s1), half1)
    half2 = s2 / (2 * (out_size - 1))
    out = CropBox(cx - s2 / 2 + 0.5 - half2, cy - 0.6 * s2 + 0.5 - half2, out_size * s2 / (out_size - 1), half2)
    return deca, out


def crop(image: np.ndarray, box: CropBox, out_size: int, border: Literal["black", "edge"] = "black") -> np.ndarray:
    """Resample ``box`` of an RGB uint8 image to an ``out_size`` square, bilinear at each crop
    pixel's centre; outside the image black (OpenCV's ``warpAffine`` with a constant border, the
    official crop) or, with ``border="edge"``, the nearest edge pixel."""
    h, w = image.shape[:2]
    k = box.size / out_size
    src = box.x0 + (np.arange(out_size) + 0.5) * k - 0.5, box.y0 + (np.arange(out_size) + 0.5) * k - 0.5
    (x0, fx), (y0, fy) = ((np.floor(c).astype(np.int64), c - np.floor(c)) for c in src)
    img = image.astype(np.float64)

    def taps(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        inside = (pos >= 0) & (pos < n)
        return np.clip(pos, 0, n - 1), (inside | (border == "edge")).astype(np.float64)

    (xa, ma), (xb, mb) = taps(x0, w), taps(x0 + 1, w)
    (ya, na), (yb, nb) = taps(y0, h), taps(y0 + 1, h)
    wx0, wx1 = (1 - fx) * ma, fx * mb
    wy0, wy1 = (1 - fy) * na, fy * nb
    rows0, rows1 = img[ya], img[yb]  # (out, W, 3)
    top = rows0[:, xa] * wx0[None, :, None] + rows0[:, xb] * wx1[None, :, None]
    bottom = rows1[:, xa] * wx0[None, :, None] + rows1[:, xb] * wx1[None, :, None]
    out = top * wy0[:, None, None] + bottom * wy1[:, None, None]
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def paste_back(frame: np.ndarray, patch: np.ndarray, box: CropBox, feather: float = 0.08) -> np.ndarray:
    """Blend a square ``patch`` (the generated crop) back into ``frame`` over ``box``.

    The blend weight falls off smoothly over ``feather`` of the box at its edges. A stream that
    pastes into frames of one size over one box keeps a ``PasteBack`` instead (its grid made once).
    """
    return PasteBack(frame.shape[:2], box, patch.shape[0], feather)(frame, patch)


class PasteBack:
    """``paste_back`` for one frame size, box and patch size: where each frame pixel falls in the
    patch, and its blend weight, are computed once; each call samples the patch there (bilinear,
    edges clamped) and blends it in."""

    def __init__(self, shape: tuple[int, ...], box: CropBox, n: int, feather: float = 0.08) -> None:
        h, w = shape[0], shape[1]
        x0, y0 = int(np.floor(box.x0)), int(np.floor(box.y0))
        x1, y1 = int(np.ceil(box.x0 + box.size)), int(np.ceil(box.y0 + box.size))
        self.region = (max(0, y0), max(0, x0), min(h, y1), min(w, x1))  # cy0, cx0, cy1, cx1
        cy0, cx0, cy1, cx1 = self.region
        self.grid: torch.Tensor | None = None
        if cx1 <= cx0 or cy1 <= cy0:
            return
        # each destination pixel centre as a fraction of the box: grid_sample's coordinates (-1..1
        # spans the patch's outer edges; border padding clamps to its edge pixels)
        u = (torch.arange(cx0, cx1, dtype=torch.float64) + 0.5 - box.x0) / box.size
        v = (torch.arange(cy0, cy1, dtype=torch.float64) + 0.5 - box.y0) / box.size
        self.grid = torch.stack(torch.broadcast_tensors(2 * u[None, :] - 1, 2 * v[:, None] - 1), -1)[None].float()
        edge = torch.minimum(torch.minimum(u, 1 - u)[None, :], torch.minimum(v, 1 - v)[:, None])
        self.alpha = (edge / feather).clamp(0, 1).float()[..., None]
        # the patch's coordinates (-1..1 over the box) as the frame's: x_frame = scale * x_patch + offset
        size = torch.tensor([box.size / w, box.size / h])
        self.to_frame = (size, torch.tensor([2 * box.x0 / w, 2 * box.y0 / h]) + size - 1)

    def __call__(self, frame: np.ndarray, patch: np.ndarray) -> np.ndarray:
        if self.grid is None:
            return frame.copy()
        p = torch.tensor(patch, dtype=torch.float32).permute(2, 0, 1)[None]  # a copy: the arrays may be read-only
        sample = F.grid_sample(p, self.grid, mode="bilinear", padding_mode="border", align_corners=False)[0].permute(1, 2, 0)
        return self.blend(frame, sample)

    def blend(self, frame: np.ndarray, region: torch.Tensor) -> np.ndarray:
        """``frame`` (uint8) with ``region`` ((h, w, 3) float, 0-255: the box's pixels in the frame,
        ``self.region``) blended in by the feathered weights."""
        out = frame.copy()  # uint8: only the box is blended in float, so memory follows the face, not the photo
        cy0, cx0, cy1, cx1 = self.region
        under = torch.tensor(frame[cy0:cy1, cx0:cx1], dtype=torch.float32)
        blended = under * (1 - self.alpha) + region * self.alpha + 0.5
        out[cy0:cy1, cx0:cx1] = blended.clamp_(0, 255).to(torch.uint8).numpy()
        return out
