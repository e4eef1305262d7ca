"""Networks of GDPW: the progressive-warping generator and the PatchGAN discriminator."""

from .config import GUIDANCES, DiscriminatorConfig, GeneratorConfig
from .discriminator import MultiScaleDiscriminator, PatchDiscriminator
from .generator import Generator, GeneratorOutput, SourceEncoding
from .guided import GuidedGenerator
from .warp import backward_warp

__all__ = [
    "GUIDANCES",
    "DiscriminatorConfig",
    "GeneratorConfig",
    "Generator",
    "GeneratorOutput",
    "GuidedGenerator",
    "MultiScaleDiscriminator",
    "PatchDiscriminator",
    "SourceEncoding",
    "backward_warp",
]
