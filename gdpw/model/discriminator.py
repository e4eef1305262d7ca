"""The PatchGAN discriminator of GDPW, single- or multi-scale."""

from __future__ import annotations

import torch
from torch import nn

from .config import DiscriminatorConfig
from .layers import AntiAliasDownsample, ConvBlock


class PatchDiscriminator(nn.Module):
    """``num_blocks`` down blocks (4x4 conv, BN, LeakyReLU, avg-pool), then a 4x4 logits conv."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        chns = cfg.channels()
        self.layers = nn.ModuleList(
            ConvBlock(chns[i], chns[i + 1], ksize=4, padding=2, resample="down", spectral_norm=cfg.spectral_norm)
            for i in range(cfg.num_blocks)
        )
        self.out_convs = nn.ModuleList([nn.Conv2d(chns[-1], 1, kernel_size=4, padding=2)])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = []
        out = x
        for layer in self.layers:
            out = layer(out)
            feats.append(out)
        return feats, [self.out_convs[0](feats[-1])]


class MultiScaleDiscriminator(nn.Module):
    """One PatchGAN per scale, each on an anti-aliased downsampled copy of the image.

    Returns the features of every block and the logits, scale after scale.
    """

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.discs = nn.ModuleDict({f"x{s}": PatchDiscriminator(cfg) for s in cfg.scales})
        self.downs = nn.ModuleDict({f"x{s}": AntiAliasDownsample(cfg.in_chns, 1.0 / s) for s in cfg.scales})

    def forward(self, img: torch.Tensor, scale: str | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every scale's features and logits; ``scale`` ("x1", ...): that scale's PatchGAN alone, on
        ``img`` as it is (the official ``discriminator[reso]``, which the warp loss calls)."""
        if scale is not None:
            if scale not in self.discs:
                raise ValueError(f"the discriminator has no scale {scale!r} (it has {list(self.discs)})")
            return self.discs[scale](img)
        all_feats: list[torch.Tensor] = []
        all_logits: list[torch.Tensor] = []
        for name, disc in self.discs.items():
            feats, logits = disc(self.downs[name](img))
            all_feats += feats
            all_logits += logits
        return all_feats, all_logits
