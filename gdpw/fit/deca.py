"""DECA's coarse encoder as a fitting backend (``deca_model.tar``, which users bring).

DECA regresses FLAME shape (100), albedo (50), expression (50), pose (global 3 + jaw 3), an
orthographic camera (3) and lighting (27) from a 224x224 crop, made by the official recipe
(``gdpw.common.crop.official_boxes``). The camera is converted into the caller's crop, so fits
from both backends are interchangeable.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gdpw.backbones import ResNet50Features
from gdpw.backbones.weights import load_checked, read_weights
from gdpw.common.crop import DECA_SIZE, CropBox, crop, official_boxes
from gdpw.common.errors import CheckpointError, FlameModelError
from gdpw.common.images import to_tensor
from gdpw.flame import FlameSequence

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
        return split_code(self.layers(self.encoder(images)))


def split_code(code: torch.Tensor) -> dict[str, torch.Tensor]:
    """DECA's code (B, 236) in its groups (``decompose_code``): shape, tex, exp, pose (global 3 +
    jaw 3), cam (scale, tx, ty), light (B, 9, 3), and the zero eye pose GDPW's DECA adds."""
    out, start = {}, 0
    for name, n in DECA_PARAMS:
        out[name] = code[:, start : start + n]
        start += n
    out["light"] = out["light"].reshape(-1, 9, 3)
    out["eye_pose"] = code.new_zeros(code.shape[0], 6)
    return out


def require_flame_2020(n_shape: int, n_expression: int) -> None:
    """Raise unless a FLAME model takes DECA's 100 shape and 50 expression coefficients."""
    if n_shape < 100 or n_expression < 50:
        raise FlameModelError(f"DECA predicts 100 shape and 50 expression coefficients of FLAME 2020; this FLAME model "
                              f"has {n_shape} and {n_expression} (the demo head cannot take DECA fits)")


@torch.no_grad()
def deca_codes(encoder: DecaEncoder, images: list[np.ndarray], landmarks: list[np.ndarray]) -> tuple[dict[str, torch.Tensor], list[CropBox]]:
    """DECA's codes of ``images`` (one per frame), each from its official 224 crop, and those crops' boxes."""
    boxes = [official_boxes(lmk)[0] for lmk in landmarks]
    crops = torch.stack([to_tensor(crop(img, box, DECA_SIZE)) for img, box in zip(images, boxes)])
    return encoder(crops.to(next(encoder.parameters()).device)), boxes


def convert_camera(cam: torch.Tensor, src: CropBox, dst: CropBox) -> torch.Tensor:
    """An orthographic camera (3,) projecting into ``src``'s NDC, made to project the same points
    into ``dst``'s NDC (both NDC squares through ``CropBox.ndc_origin``)."""
    a = src.size / dst.size
    (sx, sy), (dx, dy) = src.ndc_origin, dst.ndc_origin
    bx = 2 * ((sx + src.size / 2) - (dx + dst.size / 2)) / dst.size
    by = 2 * ((sy + src.size / 2) - (dy + dst.size / 2)) / dst.size
    s = cam[0] * a
    return torch.stack([s, cam[1] + bx / s, cam[2] - by / s])


def deca_sequence(codes: dict[str, torch.Tensor], deca_boxes: list[CropBox], boxes: list[CropBox],
                  n_shape: int, n_expression: int) -> FlameSequence:
    """FLAME parameters of DECA codes (one shape: their mean) with each frame's camera moved from
    its DECA crop into ``boxes``' NDC."""
    require_flame_2020(n_shape, n_expression)
    cams = torch.stack([convert_camera(c, src, dst) for c, src, dst in zip(codes["cam"].cpu(), deca_boxes, boxes)])
    pose = codes["pose"].cpu()
    return FlameSequence(F.pad(codes["shape"].mean(0).cpu(), (0, n_shape - 100)), F.pad(codes["exp"].cpu(), (0, n_expression - 50)),
                         pose[:, :3], pose[:, 3:], torch.zeros(len(boxes), 6), cams)


def deca_fit(encoder: DecaEncoder, images: list[np.ndarray], landmarks: list[np.ndarray], boxes: list[CropBox],
             n_shape: int, n_expression: int) -> FlameSequence:
    """FLAME fits of ``images`` (one per frame, unsmoothed) with cameras in the NDC of ``boxes``."""
    require_flame_2020(n_shape, n_expression)
    codes, deca_boxes = deca_codes(encoder, images, landmarks)
    return deca_sequence(codes, deca_boxes, boxes, n_shape, n_expression)
