"""torchvision's VGG-19 ``features`` (same keys), for the perceptual loss."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .weights import load_checked, read_weights

VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
VGG19_OUTPUTS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """torchvision's VGG-19 ``features`` (same keys), returning relu1_1 ... relu5_1."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chns = 3
        for item in VGG19_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(chns, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                chns = int(item)
        self.features = nn.Sequential(*layers[: VGG19_OUTPUTS[-1] + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    @classmethod
    def from_torchvision_file(cls, path: str | Path) -> VGG19Features:
        """Load ``vgg19-dcbbb9bb.pth`` (torchvision's ImageNet weights), which users bring."""
        state = read_weights(path, "VGG-19 weights", "torchvision's vgg19-dcbbb9bb.pth; set loss.perceptual=0 to train without")
        return load_checked(cls(), state, path, "torchvision VGG-19", prefix="features.")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG19_OUTPUTS:
                out.append(h)
        return out
