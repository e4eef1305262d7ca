"""Training losses as small objects, composed by a recipe (``Objective``), as in NVlabs' edm.

Each loss returns its *unweighted* terms by name and knows each term's weight; the objective
weighs them, sums every loss's terms, then the losses of a group, then the groups, in the order
the official ``trainer.py`` adds them (``recon``: pixel, VGG, feature matching, GAN; ``warp``: VGG
on the warped source, feature matching, GAN; ``reg``: weight decay). ``configs/paper.yaml`` is the
official recipe; gdpw's own variants (the L1 warp loss, hinge GAN) are options of the same objects.

The discriminator is called in the official order: during the generator's loss D(driving),
D(reconstruction), D(driving), D(warped source); during its own update the same pairs with the
fakes detached. Each call in train mode does one power iteration and one BatchNorm update, so the
order is part of the objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from gdpw.backbones import VGG19Features
from gdpw.common.errors import ConfigError
from gdpw.model.generator import GeneratorOutput
from gdpw.model.layers import AntiAliasDownsample
from gdpw.model.warp import WarpConvention, backward_warp

GanMode = Literal["lsgan", "hinge"]
Target = Literal["recon", "warp"]
Discriminate = Callable[..., tuple[list[torch.Tensor], list[torch.Tensor]]]


@dataclass
class LossInputs:
    """What the losses of one step see: the pair, the generator's output and its warp convention.

    ``d_outputs`` caches the discriminator's (features, logits) of each adversarial target's real
    and fake image, so feature matching and the GAN term share one pair of calls, as officially.
    """

    img_s: torch.Tensor
    img_d: torch.Tensor
    out: GeneratorOutput
    convention: WarpConvention
    d_outputs: dict[str, tuple[tuple[list[torch.Tensor], list[torch.Tensor]], ...]] = field(default_factory=dict)


class Loss(Protocol):
    """One loss: ``terms`` gives its unweighted terms by name; ``weight(name)`` their weights."""

    group: str

    def terms(self, x: LossInputs) -> dict[str, torch.Tensor]: ...

    def weight(self, name: str) -> float: ...


# -- image pyramids and perceptual features ---------------------------------------------------

class ImagePyramid(nn.Module):
    """The image at scales 1, 1/2, 1/4, ...: a Gaussian blur (sigma (1/s - 1)/2), then every (1/s)-th sample."""

    def __init__(self, levels: int, channels: int = 3) -> None:
        super().__init__()
        self.downs = nn.ModuleList(AntiAliasDownsample(channels, 1.0 / 2**i) for i in range(levels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [d(x) for d in self.downs]


def layerwise_l1(vgg: VGG19Features, fakes: Sequence[torch.Tensor], reals: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per VGG layer, the sum over the image pairs of the mean absolute feature difference (the
    official ``PerceptualLoss``: the real images' features first, then each fake's)."""
    real_feats = [vgg(r) for r in reals]
    per_layer: list[torch.Tensor] = []
    for fake, feats_r in zip(fakes, real_feats):
        terms = [F.l1_loss(a, b) for a, b in zip(vgg(fake), feats_r)]
        per_layer = terms if not per_layer else [s + t for s, t in zip(per_layer, terms)]
    return per_layer


@dataclass
class PixelL1:
    """Mean absolute error of the reconstruction (official ``pix``)."""

    weight_: float
    group: str = "recon"

    def terms(self, x: LossInputs) -> dict[str, torch.Tensor]:
        return {"pix": F.l1_loss(x.out.rec_img_d, x.img_d)}

    def weight(self, name: str) -> float:
        return self.weight_


@dataclass(eq=False)
class Perceptual:
    """VGG-19 feature L1 of the reconstruction over an image pyramid, one term per layer (relu1_1 ... relu5_1)."""

    vgg: VGG19Features
    levels: int
    weight_: float
    group: str = "recon"

    def __post_init__(self) -> None:
        self.pyramid = ImagePyramid(self.levels).to(self.vgg.mean.device)

    def terms(self, x: LossInputs) -> dict[str, torch.Tensor]:
        reals = [r.detach() for r in self.pyramid(x.img_d)]
        per_layer = layerwise_l1(self.vgg, self.pyramid(x.out.rec_img_d), reals)
        return {f"vgg_{k}": t for k, t in enumerate(per_layer)}

    def weight(self, name: str) -> float:
        return self.weight_


def warped_levels(x: LossInputs) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The source warped by every predicted flow and the driving image, both area-downsampled to the
    flow's size (full size at x1), in the flows' order (coarse to fine)."""
    warped, targets = [], []
    for flow in x.out.flows.values():
        size = flow.shape[2:]
        img_s, img_d = x.img_s, x.img_d
        if img_s.shape[2:] != size:
            img_s, img_d = F.interpolate(img_s, size, mode="area"), F.interpolate(img_d, size, mode="area")
        warped.append(backward_warp(img_s, flow, x.convention))
        targets.append(img_d)
    return warped, targets


@dataclass(eq=False)
class WarpPerceptual:
    """The official warp loss: VGG-19 feature L1 of the source warped by every predicted flow, the flow
    levels playing the role of the pyramid, one term per layer."""

    vgg: VGG19Features
    weight_: float
    group: str = "warp"

    def terms(self, x: LossInputs) -> dict[str, torch.Tensor]:
        warped, targets = warped_levels(x)
        return {f"vgg_{k}": t for k, t in enumerate(layerwise_l1(self.vgg, warped, targets))}

    def weight(self, name: str) -> float:
        return self.weight_


@dataclass
class WarpL1:
    """gdpw's warp loss: L1 between the driving image and the source warped by each flow, both
    Gaussian-downsampled to the flow's size."""

    weight_: float
    group: str = "warp"

    def terms(self, x: LossInputs) -> dict[str, torch.Tensor]:
        total = x.img_s.new_zeros(())
        for name, flow in x.out.flows.items():
            down = AntiAliasDownsample(3, 1.0 / int(name[1:])).to(x.img_s)
            total = total + (backward_warp(down(x.img_s), flow, x.convention) - down(x.img_d)).abs().mean()
        return {"l1": total}

    def weight(self, name: str) -> float:
        return self.weight_


# -- adversarial --------------------------------------------------------------------------------

def gan_loss_d(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor], mode: GanMode) -> torch.Tensor:
    """The discriminator's loss, summed over scales: LS ``mean((1 - D(real))^2 + D(fake)^2)`` or hinge."""
    terms = []
    for r, f in zip(real_logits, fake_logits):
        if mode == "lsgan":
            terms.append(torch.mean(torch.square(1 - r) + torch.square(f)))
        elif mode == "hinge":
            terms.append(torch.mean(F.relu(1 + f) + F.relu(1 - r)))
        else:
            raise ConfigError(f"gan_mode must be 'lsgan' or 'hinge', got {mode!r}")
    return sum(terms, real_logits[0].new_zeros(()))


def gan_loss_g(fake_logits: list[torch.Tensor], mode: GanMode) -> torch.Tensor:
    """The generator's GAN loss, summed over scales: LS ``mean((1 - D(fake))^2)`` or hinge ``mean(-D(fake))``."""
    terms = []
    for f in fake_logits:
        if mode == "lsgan":
            terms.append(torch.mean(torch.square(1 - f)))
        elif mode == "hinge":
            terms.append(torch.mean(-f))
        else:
            raise ConfigError(f"gan_mode must be 'lsgan' or 'hinge', got {mode!r}")
    return sum(terms, fake_logits[0].new_zeros(()))


@dataclass(eq=False)
class Adversarial:
    """Feature matching (one term per discriminator block) and the GAN term of one target: the
    reconstruction through the whole discriminator, or the source warped by the finest flow through
    its full-resolution PatchGAN alone (``scale="x1"``, the official ``discriminator[reso]``)."""

    discriminate: Discriminate
    target: Target
    gan: float
    feature_matching: float
    mode: GanMode = "lsgan"

    @property
    def group(self) -> str:
        return self.target

    def pair(self, x: LossInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, fake) images of the target."""
        fake = x.out.rec_img_d if self.target == "recon" else x.out.warp_img_s
        return x.img_d, fake

    def scale(self) -> str | None:
        return None if self.target == "recon" else "x1"

    def terms(self, x: LossInputs) -> dict[str, torch.Tensor]:
        if self.target not in x.d_outputs:
            real, fake = self.pair(x)
            x.d_outputs[self.target] = (self.discriminate(real, scale=self.scale()), self.discriminate(fake, scale=self.scale()))
        (real_feats, _), (fake_feats, fake_logits) = x.d_outputs[self.target]
        out: dict[str, torch.Tensor] = {}
        if self.feature_matching > 0:
            out.update({f"feat_match_{i}": F.l1_loss(r, f) for i, (r, f) in enumerate(zip(real_feats, fake_feats))})
        if self.gan > 0:
            out["gan_g"] = gan_loss_g(fake_logits, self.mode)
        return out

    def weight(self, name: str) -> float:
        return self.gan if name == "gan_g" else self.feature_matching

    def discriminator_loss(self, x: LossInputs) -> torch.Tensor:
        """The discriminator's loss on this target (fake detached)."""
        real, fake = self.pair(x)
        _, real_logits = self.discriminate(real, scale=self.scale())
        _, fake_logits = self.discriminate(fake.detach(), scale=self.scale())
        return gan_loss_d(real_logits, fake_logits, self.mode)


@dataclass(eq=False)
class WeightDecay:
    """Sum of squares of the generator's parameters whose name contains 'weight' (the official
    regulariser: spectral-norm ``weight_orig``, BatchNorm and plain conv weights; not ``embeds``)."""

    network: nn.Module
    weight_: float
    group: str = "reg"

    def terms(self, x: LossInputs) -> dict[str, torch.Tensor]:
        total: torch.Tensor | float = 0
        for name, p in self.network.named_parameters():
            if "weight" in name:
                total = total + torch.sum(torch.square(p))
        return {"l2": torch.as_tensor(total)}

    def weight(self, name: str) -> float:
        return self.weight_


# -- the recipe ---------------------------------------------------------------------------------

@dataclass
class LossValues:
    """One evaluation of an objective: weighted and unweighted terms named ``group/term``, and the total."""

    weighted: dict[str, torch.Tensor]
    unweighted: dict[str, torch.Tensor]
    total: torch.Tensor


@dataclass(eq=False)
class Objective:
    """The generator's losses, and the discriminator's from the adversarial ones among them."""

    losses: list[Loss]
    d_weight: float = 1.0  # official GAN_discrim

    def generator_loss(self, x: LossInputs) -> LossValues:
        weighted: dict[str, torch.Tensor] = {}
        unweighted: dict[str, torch.Tensor] = {}
        groups: dict[str, list[torch.Tensor]] = {}
        for loss in self.losses:
            parts = []
            for name, value in loss.terms(x).items():
                key = f"{loss.group}/{name}"
                if key in weighted:
                    raise ConfigError(f"two losses of the recipe write the term {key!r}")
                unweighted[key] = value
                weighted[key] = value * loss.weight(name)
                parts.append(weighted[key])
            groups.setdefault(loss.group, []).append(sum(parts, 0))  # type: ignore[arg-type]
        total = sum((sum(g, 0) for g in groups.values()), 0)
        return LossValues(weighted, unweighted, torch.as_tensor(total, device=x.img_d.device))

    @property
    def adversarial(self) -> list[Adversarial]:
        return [loss for loss in self.losses if isinstance(loss, Adversarial)]

    def discriminator_loss(self, x: LossInputs) -> LossValues:
        """Each adversarial target's discriminator loss (``d/recon``, ``d/warp``) and their sum."""
        unweighted = {f"d/{adv.target}": adv.discriminator_loss(x) for adv in self.adversarial}
        weighted = {k: v * self.d_weight for k, v in unweighted.items()}
        total = sum(weighted.values(), 0)
        return LossValues(weighted, unweighted, torch.as_tensor(total, device=x.img_d.device))
