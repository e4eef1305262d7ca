"""Training losses: pixel L1, VGG-19 perceptual over an image pyramid, warp, GAN, feature matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gdpw.backbones import VGG19Features
from gdpw.common.errors import ConfigError
from gdpw.model.layers import AntiAliasDownsample
from gdpw.model.warp import WarpConvention, backward_warp


class ImagePyramid(nn.Module):
    def __init__(self, levels: int, channels: int = 3) -> None:
        super().__init__()
        self.downs = nn.ModuleList(AntiAliasDownsample(channels, 1.0 / 2**i) for i in range(levels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [d(x) for d in self.downs]


class PerceptualLoss(nn.Module):
    def __init__(self, vgg: VGG19Features, levels: int) -> None:
        super().__init__()
        self.vgg = vgg
        self.pyramid = ImagePyramid(levels)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        total = fake.new_zeros(())
        for f, r in zip(self.pyramid(fake), self.pyramid(real)):
            for a, b in zip(self.vgg(f), self.vgg(r)):
                total = total + (a - b.detach()).abs().mean()
        return total


def warp_loss(
    img_s: torch.Tensor, img_d: torch.Tensor, flows: dict[str, torch.Tensor], convention: WarpConvention
) -> torch.Tensor:
    """L1 between the driving image and the source warped by each flow level, at that level's size."""
    total = img_s.new_zeros(())
    for name, flow in flows.items():
        scale = 1.0 / int(name[1:])
        down = AntiAliasDownsample(3, scale).to(img_s)
        total = total + (backward_warp(down(img_s), flow, convention) - down(img_d)).abs().mean()
    return total


def gan_loss_d(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor], mode: str) -> torch.Tensor:
    total = real_logits[0].new_zeros(())
    for r, f in zip(real_logits, fake_logits):
        if mode == "lsgan":
            total = total + ((r - 1) ** 2).mean() + (f**2).mean()
        elif mode == "hinge":
            total = total + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        else:
            raise ConfigError(f"gan_mode must be 'lsgan' or 'hinge', got {mode!r}")
    return total


def gan_loss_g(fake_logits: list[torch.Tensor], mode: str) -> torch.Tensor:
    total = fake_logits[0].new_zeros(())
    for f in fake_logits:
        if mode == "lsgan":
            total = total + ((f - 1) ** 2).mean()
        elif mode == "hinge":
            total = total - f.mean()
        else:
            raise ConfigError(f"gan_mode must be 'lsgan' or 'hinge', got {mode!r}")
    return total


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    total = fake_feats[0].new_zeros(())
    for r, f in zip(real_feats, fake_feats):
        total = total + (f - r.detach()).abs().mean()
    return total
