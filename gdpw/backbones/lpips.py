"""LPIPS (Zhang et al. 2018, version 0.1) with the module names of the ``lpips`` package, so that
torchvision's AlexNet or VGG-16 weights and the package's linear-layer file load unchanged.

    d(x, y) = sum_l mean_hw  w_l . (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2

over five ReLU outputs ``f_l`` of the trunk, each normalised over channels, on images scaled to
[-1, 1] and shifted and scaled by the package's constants. Users bring both files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from gdpw.common.errors import CheckpointError

from .weights import load_checked, read_weights

Trunk = Literal["alex", "vgg"]

# torchvision's ``features``: (out channels, kernel, stride, padding) per conv, "M" max-pool (kernel, stride)
_LAYERS: dict[str, tuple[tuple[int, int, int, int] | tuple[str, int, int], ...]] = {
    "alex": ((64, 11, 4, 2), ("M", 3, 2), (192, 5, 1, 2), ("M", 3, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)),
    "vgg": ((64, 3, 1, 1), (64, 3, 1, 1), ("M", 2, 2), (128, 3, 1, 1), (128, 3, 1, 1), ("M", 2, 2),
            (256, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), ("M", 2, 2), (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1),
            ("M", 2, 2), (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1)),
}
_TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}  # indices of the five ReLUs LPIPS compares
TRUNK_FILES = {"alex": "torchvision's alexnet-owt-7be5be79.pth", "vgg": "torchvision's vgg16-397923af.pth"}
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


class _Linear(nn.Module):
    """One 1x1 conv to a single channel (the package's ``NetLinLayer``; index 0 held its dropout)."""

    def __init__(self, chns: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(chns, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """Perceptual distance (B,) between images in [0, 1]; ``trunk`` "alex" (the package's default) or "vgg"."""

    def __init__(self, trunk: Trunk = "alex") -> None:
        super().__init__()
        if trunk not in _LAYERS:
            raise ValueError(f"LPIPS trunk must be one of {sorted(_LAYERS)}, not {trunk!r}")
        self.trunk = trunk
        layers: list[nn.Module] = []
        chns = 3
        for spec in _LAYERS[trunk]:
            if spec[0] == "M":
                layers.append(nn.MaxPool2d(int(spec[1]), int(spec[2])))
            else:
                cout, k, s, p = (int(v) for v in spec)
                layers += [nn.Conv2d(chns, cout, k, stride=s, padding=p), nn.ReLU()]
                chns = cout
        self.features = nn.Sequential(*layers[: _TAPS[trunk][-1] + 1])
        widths = [self.features[i - 1].out_channels for i in _TAPS[trunk]]  # type: ignore[union-attr]
        for k, w in enumerate(widths):
            self.add_module(f"lin{k}", _Linear(w))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, trunk_path: str | Path, linear_path: str | Path, trunk: Trunk = "alex") -> LPIPS:
        """torchvision's ImageNet ``trunk`` weights and the ``lpips`` package's ``weights/v0.1/<trunk>.pth``."""
        net = cls(trunk)
        state = read_weights(trunk_path, f"LPIPS {trunk} trunk weights", TRUNK_FILES[trunk])
        load_checked(net, state, trunk_path, f"torchvision {trunk}", prefix="features.")
        lin = read_weights(linear_path, "LPIPS linear weights", f"the lpips package's weights/v0.1/{trunk}.pth")
        if not any(k.startswith("lin") for k in lin):
            raise CheckpointError(f"{linear_path}: not LPIPS linear weights (no 'lin*' keys)")
        return load_checked(net, lin, linear_path, f"LPIPS {trunk} linear", prefix="lin")

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        h = ((2 * x - 1) - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS[self.trunk]:
                out.append(h)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        for k, (fa, fb) in enumerate(zip(self.taps(a), self.taps(b))):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + EPS)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + EPS)
            total = total + getattr(self, f"lin{k}")((na - nb) ** 2).mean((1, 2, 3))
        return total
