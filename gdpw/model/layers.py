"""Building blocks of the GDPW generator and discriminator.

Every block convolution is spectrally normalised (``torch.nn.utils.spectral_norm``, whose
``weight_orig`` / ``weight_u`` / ``weight_v`` keys are the released checkpoints' keys) and
followed by BatchNorm and LeakyReLU(0.1), as in the official network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.1


def act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


def sn_conv(
    in_chns: int,
    out_chns: int,
    ksize: int,
    padding: int,
    spectral_norm: bool = True,
) -> nn.Conv2d:
    """A biased conv, wrapped in spectral norm unless ``spectral_norm`` is False."""
    conv = nn.Conv2d(in_chns, out_chns, kernel_size=ksize, padding=padding, bias=True)
    return nn.utils.spectral_norm(conv) if spectral_norm else conv


class ConvBlock(nn.Module):
    """conv -> BatchNorm -> LeakyReLU, with an optional resampling step.

    ``resample`` is ``"same"`` (SameBlock), ``"down"`` (avg-pool x2 after the activation, the
    official DownBlock) or ``"up"`` (nearest x2 before the conv, the official UpBlock).
    """

    def __init__(
        self,
        in_chns: int,
        out_chns: int,
        ksize: int = 3,
        padding: int = 1,
        resample: str = "same",
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        if resample not in ("same", "down", "up"):
            raise ValueError(f"resample must be 'same', 'down' or 'up', got {resample!r}")
        self.resample = resample
        self.conv = sn_conv(in_chns, out_chns, ksize, padding, spectral_norm)
        self.norm = nn.BatchNorm2d(out_chns, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        out = act(self.norm(self.conv(x)))
        if self.resample == "down":
            out = F.avg_pool2d(out, kernel_size=2)
        return out


class Spade(nn.Module):
    """Spatially-adaptive normalisation: param-free BatchNorm modulated by a guidance map."""

    def __init__(self, inp_chns: int, mod_chns: int, hid_chns: int, spectral_norm: bool = True) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(inp_chns, affine=False)
        self.shared_conv = nn.Sequential(
            sn_conv(mod_chns, hid_chns, 3, 1, spectral_norm), nn.LeakyReLU(LEAKY_SLOPE)
        )
        self.gamma_conv = sn_conv(hid_chns, inp_chns, 3, 1, spectral_norm)
        self.beta_conv = sn_conv(hid_chns, inp_chns, 3, 1, spectral_norm)

    def forward(self, x: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        hid = self.shared_conv(modulation)
        return self.norm(x) * (1 + self.gamma_conv(hid)) + self.beta_conv(hid)


class SpadeResBlock(nn.Module):
    """Pre-activation residual block with SPADE normalisation and a 1x1 shortcut conv."""

    def __init__(
        self, inp_chns: int, out_chns: int, mod_chns: int, hid_chns: int, spectral_norm: bool = True
    ) -> None:
        super().__init__()
        self.non_identity_shortcut: nn.Module | None = None
        if inp_chns != out_chns:
            self.non_identity_shortcut = sn_conv(inp_chns, out_chns, 1, 0, spectral_norm)
        self.spade1 = Spade(inp_chns, mod_chns, hid_chns, spectral_norm)
        self.conv1 = sn_conv(inp_chns, out_chns, 3, 1, spectral_norm)
        self.spade2 = Spade(out_chns, mod_chns, hid_chns, spectral_norm)
        self.conv2 = sn_conv(out_chns, out_chns, 3, 1, spectral_norm)

    def forward(self, x: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        out = self.conv1(act(self.spade1(x, modulation)))
        out = self.conv2(act(self.spade2(out, modulation)))
        shortcut = x if self.non_identity_shortcut is None else self.non_identity_shortcut(x)
        return out + shortcut


def gaussian_kernel_size(scale: float) -> tuple[float, int]:
    """Sigma and kernel size of the anti-alias blur for downsampling by ``scale`` (<= 1)."""
    sigma = (1.0 / scale - 1.0) / 2.0
    return sigma, 2 * round(sigma * 4) + 1


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then strided slicing; identity at scale 1.

    The blur is evaluated at the kept samples only (a strided depthwise conv): the same values as
    blurring the whole map and slicing it, as the released code does, without the discarded work
    (at 1/32 scale the full-resolution blur of a 256x256 map costs more than a decoder level). The
    kernel's size is odd, so the released code's zero padding is the conv's own symmetric padding
    (no padded copy of the map is made: on the CPU that copy cost more than the blur).

    The depthwise kernel is a persistent buffer named ``weight`` (the released checkpoints
    store it), initialised to the normalised Gaussian of ``gaussian_kernel_size``.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        sigma, ksize = gaussian_kernel_size(scale)
        self.scale = scale
        self.stride = int(round(1.0 / scale))
        self.padding = ksize // 2  # on every side: ksize is odd
        coords = torch.arange(ksize, dtype=torch.float32) - (ksize - 1) / 2
        if sigma > 0:
            g1 = torch.exp(-(coords**2) / (2 * sigma**2))
        else:
            g1 = torch.ones(1)
        kernel = g1[:, None] * g1[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, ksize, ksize).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding, groups=self.weight.shape[0])
