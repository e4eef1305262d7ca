"""Inference-time folding of a trained generator.

``fold_for_inference`` returns a copy of an eval-mode generator in which

* every spectrally normalised conv holds its normalised weight (``weight_orig / sigma``, sigma from
  the stored ``u`` and ``v``, exactly as ``torch.nn.utils.spectral_norm`` computes it in eval
  mode), so no normalisation runs per call;
* every conv followed by BatchNorm absorbs the BatchNorm's running statistics and affine;
* the parameter-free BatchNorm of each SPADE block becomes a per-channel scale and shift, and
  the gamma and beta convs (which read the same hidden map) become one conv.

Outputs stay equal up to float rounding. The folded copy cannot be trained further.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .generator import Generator
from .layers import ConvBlock, Spade


def _plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A conv without spectral-norm hooks, holding the weight the hook would compute in eval mode."""
    if hasattr(conv, "weight_orig"):
        w = conv.weight_orig.detach()
        u, v = conv.weight_u.detach(), conv.weight_v.detach()
        sigma = torch.dot(u, torch.mv(w.flatten(1), v))
        weight = w / sigma
    else:
        weight = conv.weight.detach()
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    out.weight.data.copy_(weight)
    if conv.bias is not None:
        out.bias.data.copy_(conv.bias.detach())
    else:
        out.bias.data.zero_()
    return out


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.data.mul_(scale.view(-1, 1, 1, 1))
    conv.bias.data.copy_((conv.bias.detach() - bn.running_mean) * scale + bn.bias.detach())
    return conv


class FoldedSpade(nn.Module):
    """SPADE with its BatchNorm as a per-channel affine and gamma/beta computed by one conv."""

    def __init__(self, spade: Spade) -> None:
        super().__init__()
        bn = spade.norm
        inv = 1.0 / torch.sqrt(bn.running_var + bn.eps)
        self.register_buffer("scale", inv.view(1, -1, 1, 1))
        self.register_buffer("shift", (-bn.running_mean * inv).view(1, -1, 1, 1))
        self.shared = _plain_conv(spade.shared_conv[0])
        gamma, beta = _plain_conv(spade.gamma_conv), _plain_conv(spade.beta_conv)
        self.channels = gamma.out_channels
        self.gamma_beta = nn.Conv2d(gamma.in_channels, 2 * self.channels, 3, padding=1)
        self.gamma_beta.weight.data.copy_(torch.cat([gamma.weight, beta.weight]))
        self.gamma_beta.bias.data.copy_(torch.cat([gamma.bias, beta.bias]))

    def forward(self, x: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        hid = nn.functional.leaky_relu(self.shared(modulation), 0.1)
        gamma, beta = self.gamma_beta(hid).split(self.channels, dim=1)
        return torch.addcmul(beta, x * self.scale + self.shift, 1 + gamma)


def fold_for_inference(gen: Generator) -> Generator:
    """A folded copy of ``gen`` (see the module docstring); ``gen`` is left untouched."""
    folded = copy.deepcopy(gen).eval()
    for module in list(folded.modules()):
        if isinstance(module, ConvBlock):
            module.conv = _fold_bn(_plain_conv(module.conv), module.norm)
            module.norm = nn.Identity()  # type: ignore[assignment]
        elif hasattr(module, "spade1"):  # SpadeResBlock
            module.spade1 = FoldedSpade(module.spade1)
            module.spade2 = FoldedSpade(module.spade2)
            module.conv1 = _plain_conv(module.conv1)
            module.conv2 = _plain_conv(module.conv2)
            if module.non_identity_shortcut is not None:
                module.non_identity_shortcut = _plain_conv(module.non_identity_shortcut)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded
