"""One optimisation step: the generator, then the discriminator, as the official ``Trainer.step``.

The generator's loss is evaluated and the generator updated first; the discriminator's loss is
then computed on the generator's outputs from before that update (detached) and the
discriminator updated. ``TrainStep`` takes tensors and a closure that runs the generator, so the
trainer (which renders the guidance from FLAME vertices) and the reference tests (which feed the
official rasterisation) run the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from gdpw.model.generator import GeneratorOutput
from gdpw.model.warp import WarpConvention

from .config import LossConfig
from .losses import (
    Adversarial,
    Discriminate,
    Loss,
    LossInputs,
    LossValues,
    Objective,
    Perceptual,
    PixelL1,
    VGG19Features,
    WarpL1,
    WarpPerceptual,
    WeightDecay,
)


def build_objective(cfg: LossConfig, generator: nn.Module, discriminate: Discriminate | None,
                    vgg: VGG19Features | None) -> Objective:
    """The recipe of ``cfg``: the losses in the official code's order, those with weight 0 left out."""
    if cfg.uses_vgg and vgg is None:
        raise ValueError("the recipe's perceptual losses need a VGG-19")
    losses: list[Loss] = []
    if cfg.l1 > 0:
        losses.append(PixelL1(cfg.l1))
    if cfg.perceptual > 0:
        assert vgg is not None
        losses.append(Perceptual(vgg, cfg.perceptual_levels, cfg.perceptual))
    adversarial = discriminate is not None and cfg.uses_discriminator
    if adversarial:
        assert discriminate is not None
        losses.append(Adversarial(discriminate, "recon", cfg.gan, cfg.feature_matching, cfg.gan_mode))
    if cfg.warp_perceptual > 0:
        assert vgg is not None
        losses.append(WarpPerceptual(vgg, cfg.warp_perceptual))
    if cfg.warp > 0:
        losses.append(WarpL1(cfg.warp))
    if adversarial and cfg.warp_adversarial:
        assert discriminate is not None
        losses.append(Adversarial(discriminate, "warp", cfg.gan, cfg.feature_matching, cfg.gan_mode))
    if cfg.weight_decay > 0:
        losses.append(WeightDecay(generator, cfg.weight_decay))
    return Objective(losses)


@dataclass
class StepResult:
    g: LossValues
    d: LossValues | None
    out: GeneratorOutput

    def stats(self) -> dict[str, float]:
        """The weighted terms and totals as floats (``total_g``, ``d``)."""
        stats = {k: float(v.detach()) for k, v in self.g.weighted.items()}
        stats["total_g"] = float(self.g.total.detach())
        if self.d is not None:
            stats.update({k: float(v.detach()) for k, v in self.d.weighted.items()})
            stats["d"] = float(self.d.total.detach())
        return stats


@dataclass(eq=False)
class TrainStep:
    """The networks, their optimisers and the objective; ``backward`` and ``autocast`` come from the
    engine (plain PyTorch or Accelerate)."""

    objective: Objective
    discriminator: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    convention: WarpConvention
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward
    autocast: Callable[[], AbstractContextManager[object]] = nullcontext

    def __call__(self, img_s: torch.Tensor, img_d: torch.Tensor, forward: Callable[[], GeneratorOutput]) -> StepResult:
        """One step on the pair ``img_s``, ``img_d`` (B, 3, H, W); ``forward()`` runs the generator."""
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)  # its G-phase gradients are discarded officially
        with self.autocast():
            out = forward()
            x = LossInputs(img_s, img_d, out, self.convention)
            g = self.objective.generator_loss(x)
        self.opt_g.zero_grad(set_to_none=True)
        self.backward(g.total)
        self.opt_g.step()

        d = None
        if self.discriminator is not None and self.opt_d is not None and self.objective.adversarial:
            self.discriminator.requires_grad_(True)
            with self.autocast():
                d = self.objective.discriminator_loss(x)
            self.opt_d.zero_grad(set_to_none=True)
            self.backward(d.total)
            self.opt_d.step()
        return StepResult(g, d, out)
