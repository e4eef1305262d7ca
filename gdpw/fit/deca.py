"""DECA's coarse encoder as a fitting backend (``deca_model.tar``, which users bring).

DECA regresses FLAME shape (100), albedo (50), expression (50), pose (global 3 + jaw 3), an
orthographic camera (3) and lighting (27) from a 224x224 crop. The crop follows DECA's recipe for
68 landmarks: a square of 1.25 x 1.1 x the landmarks' mean box side around the box centre. The
camera is converted to the caller's crop, so fits from both backends are interchangeable.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gdpw.backbones import ResNet50Features
from gdpw.backbones.weights import load_checked, read_weights
from gdpw.common.crop import CropBox, crop
from gdpw.common.errors import CheckpointError, FlameModelError
from gdpw.common.images import to_tensor
from gdpw.flame import FlameSequence

DECA_SIZE = 224
DECA_PARAMS = (("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))


class DecaEncoder(nn.Module):
    """DECA's ``E_flame``: ResNet-50 features, then 2048 -> 1024 -> 236 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = ResNet50Features()
        self.layers = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, sum(n for _, n in DECA_PARAMS)))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> DecaEncoder:
        raw = read_weights(path, "DECA model", "deca_model.tar from the DECA project")
        if "E_flame" not in raw:
            raise CheckpointError(f"{path}: no 'E_flame' entry; not a DECA model")
        return load_checked(cls(), raw["E_flame"], path, "DECA E_flame")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, 224, 224) RGB in [0, 1] to DECA's parameter groups."""
        params = self.layers(self.encoder(images))
        out, start = {}, 0
        for name, n in DECA_PARAMS:
            out[name] = params[:, start : start + n]
            start += n
        return out


def deca_box(landmarks: np.ndarray) -> CropBox:
    """DECA's crop for 68 landmarks (pixel-centre coordinates)."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    old = ((hi[0] - lo[0]) + (hi[1] - lo[1])) / 2 * 1.1
    size = old * 1.25
    cx, cy = (lo + hi + 1.0) / 2
    return CropBox(float(cx - size / 2), float(cy - size / 2), float(size))


def require_flame_2020(n_shape: int, n_expression: int) -> None:
    """Raise unless a FLAME model takes DECA's 100 shape and 50 expression coefficients."""
    if n_shape < 100 or n_expression < 50:
        raise FlameModelError(f"DECA predicts 100 shape and 50 expression coefficients of FLAME 2020; this FLAME model "
                              f"has {n_shape} and {n_expression} (the demo head cannot take DECA fits)")


@torch.no_grad()
def deca_fit(encoder: DecaEncoder, images: list[np.ndarray], landmarks: list[np.ndarray], boxes: list[CropBox],
             n_shape: int, n_expression: int) -> FlameSequence:
    """FLAME fits of ``images`` (one per frame) with cameras in the NDC of ``boxes``."""
    require_flame_2020(n_shape, n_expression)
    crops, deca_boxes = [], []
    for img, lmk in zip(images, landmarks):
        box = deca_box(lmk)
        deca_boxes.append(box)
        crops.append(to_tensor(crop(img, box, DECA_SIZE)))
    p = encoder(torch.stack(crops))
    cams = []
    for cam, src, dst in zip(p["cam"], deca_boxes, boxes):
        a = src.size / dst.size
        bx = 2 * ((src.x0 + src.size / 2) - (dst.x0 + dst.size / 2)) / dst.size
        by = 2 * ((src.y0 + src.size / 2) - (dst.y0 + dst.size / 2)) / dst.size
        s = cam[0] * a
        cams.append(torch.stack([s, cam[1] + bx / s, cam[2] - by / s]))
    t = len(images)
    shape = F.pad(p["shape"].mean(0), (0, n_shape - 100))
    expression = F.pad(p["exp"], (0, n_expression - 50))
    return FlameSequence(shape, expression, p["pose"][:, :3], p["pose"][:, 3:], torch.zeros(t, 6), torch.stack(cams))
