"""Training losses: pixel L1, VGG-19 perceptual over an image pyramid, warp, GAN, feature matching."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gdpw.model.layers import AntiAliasDownsample
from gdpw.model.warp import WarpConvention, backward_warp

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
    def from_torchvision_file(cls, path: str | Path) -> "VGG19Features":
        """Load ``vgg19-dcbbb9bb.pth`` (torchvision's ImageNet weights), which users bring."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"VGG-19 weights not found: {path} (torchvision's vgg19-dcbbb9bb.pth; set loss.perceptual=0 to train without)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = cls()
        own = {k: v for k, v in state.items() if k.startswith("features.") and k in net.state_dict()}
        missing = [k for k in net.state_dict() if k.startswith("features.") and k not in own]
        if missing:
            raise ValueError(f"{path}: not torchvision VGG-19 weights (missing {missing[0]!r})")
        net.load_state_dict({**net.state_dict(), **own})
        return net.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG19_OUTPUTS:
                out.append(h)
        return out


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
            raise ValueError(f"gan_mode must be 'lsgan' or 'hinge', got {mode!r}")
    return total


def gan_loss_g(fake_logits: list[torch.Tensor], mode: str) -> torch.Tensor:
    total = fake_logits[0].new_zeros(())
    for f in fake_logits:
        total = total + (((f - 1) ** 2).mean() if mode == "lsgan" else -f.mean())
    return total


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    total = fake_feats[0].new_zeros(())
    for r, f in zip(real_feats, fake_feats):
        total = total + (f - r.detach()).abs().mean()
    return total
