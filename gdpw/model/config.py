"""Typed configurations of the networks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gdpw.common.config import from_dict, to_dict, validate
from gdpw.common.errors import ConfigError

from .warp import WarpConvention

Guidance = Literal["neural_codes", "geom_disp", "both"]
GUIDANCES: tuple[str, ...] = ("neural_codes", "geom_disp", "both")
FLOW_CHANNELS = 2


@dataclass(frozen=True)
class GeneratorConfig:
    """Hyper-parameters of the progressive-warping generator.

    The defaults are the released full-size network (141.8M parameters for ``neural_codes``).
    Channels at stride ``s`` are ``min(max_chns, max(int(base_chns * shrink_ratio * s), 16))``.
    """

    guidance: Guidance = "neural_codes"
    base_chns: int = 64
    shrink_ratio: float = 0.5
    max_chns: int = 1024
    num_levels: int = 6
    embed_dim: int = 16
    num_verts: int = 5023
    alpha_blend: bool = False
    # gdpw's option (the released network has it off): every predicted flow is a correction added to
    # the displacement field at its level, so the face follows the mesh from the first step
    flow_prior: bool = False
    spectral_norm: bool = True
    # "official" reproduces the released weights; "centers" is the corrected, consistent convention
    # (see gdpw.model.warp).
    warp_convention: WarpConvention = "official"

    def __post_init__(self) -> None:
        validate(self)
        if self.num_levels < 2:
            raise ConfigError(f"num_levels must be at least 2, got {self.num_levels}")
        if self.flow_prior and not self.uses_geom_disp:
            raise ConfigError(f"flow_prior needs the displacement field as guidance (geom_disp or both), not {self.guidance!r}")

    @property
    def uses_codes(self) -> bool:
        return self.guidance in ("neural_codes", "both")

    @property
    def uses_geom_disp(self) -> bool:
        return self.guidance in ("geom_disp", "both")

    @property
    def input_channels(self) -> int:
        """Encoder input: RGB plus the source's rendered codes when codes are used."""
        return 3 + (self.embed_dim if self.uses_codes else 0)

    @property
    def guidance_channels(self) -> int:
        """SPADE modulation: driving codes, then the displacement field, as guidance asks."""
        return (self.embed_dim if self.uses_codes else 0) + (FLOW_CHANNELS if self.uses_geom_disp else 0)

    @property
    def strides(self) -> list[int]:
        return [2**i for i in range(self.num_levels)]

    def channels(self, stride: int) -> int:
        return min(self.max_chns, max(int(self.base_chns * self.shrink_ratio * stride), 16))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        return from_dict(cls, data)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Hyper-parameters of the (multi-scale) PatchGAN discriminator; defaults are the released one."""

    scales: tuple[int, ...] = (1,)
    base_chns: int = 32
    max_chns: int = 512
    num_blocks: int = 4
    shrink_ratio: float = 1.0
    in_chns: int = 3
    spectral_norm: bool = True

    def channels(self) -> list[int]:
        nf = max(int(self.base_chns * self.shrink_ratio), 16)
        return [self.in_chns] + [min(nf * 2**i, self.max_chns) for i in range(self.num_blocks)]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscriminatorConfig:
        return from_dict(cls, data)
