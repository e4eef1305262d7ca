"""Inference-time folding of a trained generator.

``fold_for_inference`` returns a copy of an eval-mode generator in which

* every spectrally normalised conv holds its normalised weight (``weight_orig / sigma``, sigma from
  the stored ``u`` and ``v``, exactly as ``torch.nn.utils.spectral_norm`` computes it in eval
  mode), so no normalisation runs per call;
* every conv followed by BatchNorm absorbs the BatchNorm's running statistics and affine;
* the parameter-free BatchNorm of each SPADE block is absorbed into its gamma and beta convs,
  which read the same hidden map and become one conv: ``SPADE(x) = x * gamma' + beta'``;
* on the CPU (``max_conv_bytes``), convs with large weights are split into groups of output
  channels (``SplitConv2d``).

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
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True,
                    device=weight.device, dtype=weight.dtype)
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
    """SPADE as one multiply-add: ``x * gamma' + beta'``, both from one conv of the hidden map.

    With the BatchNorm written as ``x * s + t``, ``(x * s + t) * (1 + gamma) + beta`` equals
    ``x * gamma' + beta'`` for ``gamma' = s * (1 + gamma)`` and ``beta' = beta + t * (1 + gamma)``,
    both affine in the hidden map, so the conv weights absorb ``s`` and ``t``.
    """

    def __init__(self, spade: Spade) -> None:
        super().__init__()
        bn = spade.norm
        s = 1.0 / torch.sqrt(bn.running_var + bn.eps)
        t = -bn.running_mean * s
        self.shared = _plain_conv(spade.shared_conv[0])
        gamma, beta = _plain_conv(spade.gamma_conv), _plain_conv(spade.beta_conv)
        self.channels = gamma.out_channels
        w_gamma, b_gamma = gamma.weight.detach(), gamma.bias.detach()
        weight = torch.cat([s.view(-1, 1, 1, 1) * w_gamma, beta.weight + t.view(-1, 1, 1, 1) * w_gamma])
        bias = torch.cat([s * (1 + b_gamma), beta.bias + t * (1 + b_gamma)])
        self.gamma_beta = nn.Conv2d(gamma.in_channels, 2 * self.channels, 3, padding=1, device=weight.device, dtype=weight.dtype)
        self.gamma_beta.weight.data.copy_(weight)
        self.gamma_beta.bias.data.copy_(bias)

    def forward(self, x: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        hid = nn.functional.leaky_relu(self.shared(modulation), 0.1)
        gamma, beta = self.gamma_beta(hid).split(self.channels, dim=1)
        return torch.addcmul(beta, x, gamma)


class SplitConv2d(nn.Module):
    """A conv computed as several convs over groups of its output channels, concatenated.

    The same result up to rounding. It exists for oneDNN on the CPU, which reorders a conv's weight
    into its blocked layout on every call: for a weight of tens of megabytes (the 8x8 and 16x16
    levels of the full-size decoder) that reorder costs several times the convolution itself,
    while the reorder of a slice that stays in cache is cheap (``benchmarks/inference.py``).
    """

    def __init__(self, conv: nn.Conv2d, group_channels: int) -> None:
        super().__init__()
        self.parts = nn.ModuleList()
        for w, b in zip(conv.weight.detach().split(group_channels), conv.bias.detach().split(group_channels)):
            part = nn.Conv2d(conv.in_channels, w.shape[0], conv.kernel_size, conv.stride, conv.padding, device=w.device, dtype=w.dtype)
            part.weight.data.copy_(w)
            part.bias.data.copy_(b)
            self.parts.append(part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.parts], dim=1)


def split_wide_convs(module: nn.Module, max_conv_bytes: int) -> None:
    """Replace, in place, every ``nn.Conv2d`` whose fp32 weight exceeds ``max_conv_bytes`` by a
    ``SplitConv2d`` whose groups stay under it (but keep at least 32 output channels)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and child.bias is not None and child.groups == 1:
            per_channel = child.weight[0].numel() * 4
            group = max(32, max_conv_bytes // per_channel // 32 * 32)
            if group < child.out_channels:
                setattr(module, name, SplitConv2d(child, group))
        else:
            split_wide_convs(child, max_conv_bytes)


# A slice of this size stays in the L2/L3 caches of current x86 CPUs (measured on an AVX-512 EPYC).
CPU_MAX_CONV_BYTES = 8 * 2**20


def fold_for_inference(gen: Generator, max_conv_bytes: int | None = None) -> Generator:
    """A folded copy of ``gen`` (see the module docstring) on ``gen``'s device and in its dtype;
    ``gen`` is left untouched.

    ``max_conv_bytes``: split convs whose weights are larger (``CPU_MAX_CONV_BYTES`` suits the CPU);
    None keeps every conv whole, as GPUs prefer.
    """
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
    if max_conv_bytes is not None:
        split_wide_convs(folded, max_conv_bytes)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded
