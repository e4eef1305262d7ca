"""DECA's coarse encoder as a fitting backend (``deca_model.tar``, which users bring).

DECA regresses FLAME shape (100), albedo (50), expression (50), pose (global 3 + jaw 3), an
orthographic camera (3) and lighting (27) from a 224x224 crop. The crop follows DECA's recipe for
68 landmarks: a square of 1.25 x 1.1 x the landmarks' mean box side around the box centre. The
camera is converted to the caller's crop, so fits from both backends are interchangeable.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gdpw.pipeline.crop import CropBox, crop

from .fitter import FlameFit

DECA_SIZE = 224
DECA_PARAMS = (("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50Features(nn.Module):
    """ResNet-50 up to global average pooling (2048 features), torchvision's module names."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes = 64
        for i, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))):
            down = None
            if stride != 1 or inplanes != planes * 4:
                down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
            layers = [Bottleneck(inplanes, planes, stride, down)] + [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class DecaEncoder(nn.Module):
    """DECA's ``E_flame``: ResNet-50 features, then 2048 -> 1024 -> 236 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = ResNet50Features()
        self.layers = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, sum(n for _, n in DECA_PARAMS)))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "DecaEncoder":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"DECA model not found: {path} (deca_model.tar from the DECA project)")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # corrupt files raise many types
            raise ValueError(f"{path}: not a readable DECA model ({type(err).__name__})") from None
        if not isinstance(raw, dict) or "E_flame" not in raw:
            raise ValueError(f"{path}: no 'E_flame' entry; not a DECA model")
        net = cls()
        state = raw["E_flame"]
        for key, ref in net.state_dict().items():
            if key not in state:
                raise ValueError(f"{path}: E_flame is missing {key!r}")
            if tuple(state[key].shape) != tuple(ref.shape):
                raise ValueError(f"{path}: E_flame {key!r} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}")
        net.load_state_dict({k: state[k] for k in net.state_dict()})
        return net.eval()

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
        raise ValueError(f"DECA predicts 100 shape and 50 expression coefficients of FLAME 2020; this FLAME model "
                         f"has {n_shape} and {n_expression} (the demo head cannot take DECA fits: pass --flame generic_model.pkl)")


@torch.no_grad()
def deca_fit(encoder: DecaEncoder, images: list[np.ndarray], landmarks: list[np.ndarray], boxes: list[CropBox],
             n_shape: int, n_expression: int) -> FlameFit:
    """FLAME fits of ``images`` (one per frame) with cameras in the NDC of ``boxes``."""
    require_flame_2020(n_shape, n_expression)
    crops, deca_boxes = [], []
    for img, lmk in zip(images, landmarks):
        box = deca_box(lmk)
        deca_boxes.append(box)
        crops.append(torch.from_numpy(np.array(crop(img, box, DECA_SIZE))).permute(2, 0, 1).float() / 255)
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
    return FlameFit(shape, expression, p["pose"][:, :3], p["pose"][:, 3:], torch.zeros(t, 6), torch.stack(cams))
