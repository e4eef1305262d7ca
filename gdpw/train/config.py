"""Every hyper-parameter of a training run, in one typed config read from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gdpw.common.config import apply_overrides, from_dict, to_dict, validate
from gdpw.common.errors import ConfigError
from gdpw.common.files import write_text_atomic
from gdpw.model.config import DiscriminatorConfig, GeneratorConfig


@dataclass(frozen=True)
class LossConfig:
    """The losses and their weights. The defaults are the official code's objective (configs/paper.yaml);
    see docs/official_training.md."""

    l1: float = 10.0  # pixel L1 of the reconstruction (official LOSS_WEIGHTS.pix)
    perceptual: float = 10.0  # VGG-19 feature L1 of the reconstruction, per layer (relu1_1..relu5_1), over an image pyramid
    perceptual_levels: int = 4
    warp_perceptual: float = 10.0  # the official warp loss: the VGG loss of the source warped by every flow (area-downsampled)
    warp: float = 0.0  # gdpw's warp loss: L1 of the source warped by every flow (Gaussian-downsampled)
    gan: float = 1.0  # GAN term of the generator (official GAN_gen)
    feature_matching: float = 10.0  # per discriminator block
    warp_adversarial: bool = True  # GAN + feature matching also on the source warped by the finest flow, and D trained on it
    gan_mode: Literal["lsgan", "hinge"] = "lsgan"
    weight_decay: float = 0.0  # times the sum of squares of the generator's weights (official WEIGHT_DECAY)
    vgg_weights: str | None = None  # torchvision's vgg19-dcbbb9bb.pth
    random_vgg: bool = False  # a randomly initialised VGG (tests only)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def uses_vgg(self) -> bool:
        return self.perceptual > 0 or self.warp_perceptual > 0

    @property
    def uses_discriminator(self) -> bool:
        return self.gan > 0 or self.feature_matching > 0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)  # the official code's (Adam's defaults)
    # x gamma at each milestone: the paper's decays (the official code keeps 2e-4 and its authors lowered the
    # rate by hand through an override file; docs/official_training.md)
    milestones: tuple[int, ...] = (80_000, 160_000)
    gamma: float = 0.1


@dataclass(frozen=True)
class DataConfig:
    roots: tuple[str, ...] = ("data/synth",)
    layout: Literal["gdpw", "official"] = "gdpw"
    split: str = "train"
    flip_prob: float = 0.5
    flip_mapping: str | None = None  # the official flame_verts_flip_mapping.npy; None: built from the FLAME model
    jitter: float = 0.1  # brightness, contrast and saturation (torchvision's ColorJitter, as the official trainer)
    hue: float = 0.1
    workers: int = 0

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class TrainConfig:
    output: str = "runs/default"
    steps: int = 270_000
    batch_size: int = 8
    image_size: int | None = None  # crop size; None: the dataset's (checked against it when given)
    seed: int = 0
    init: str | None = None  # a checkpoint whose network weights start a new run (e.g. a lower-resolution one); fresh optimisers
    flame: str | None = None  # FLAME generic_model.pkl; None uses the demo head
    antialias: bool = False  # antialiased guidance maps (the official renderer's; the released models' input)
    engine: Literal["torch", "accelerate"] = "torch"  # torch: one process, or several under torchrun; accelerate: one process with HF Accelerate (mixed precision)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16 / fp16: autocast on GPU
    channels_last: bool = False  # networks and batches in channels_last memory format (faster convs on GPUs)
    log_every: int = 50
    image_every: int = 1000
    checkpoint_every: int = 1000
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        validate(self)
        if self.batch_size < 1 or self.steps < 1:
            raise ConfigError(f"batch_size and steps must be at least 1, got {self.batch_size} and {self.steps}")
        if min(self.log_every, self.image_every, self.checkpoint_every) < 1:
            raise ConfigError("log_every, image_every and checkpoint_every must be at least 1")
        if self.loss.warp_adversarial and self.loss.uses_discriminator and 1 not in self.discriminator.scales:
            raise ConfigError("loss.warp_adversarial needs a full-resolution discriminator (1 in discriminator.scales)")
        if self.image_size is not None:
            self.check_image_size(self.image_size)

    def check_image_size(self, size: int) -> None:
        """Refuse an image size the networks or the VGG losses cannot run at, before anything is built."""
        levels = self.generator.num_levels
        if size % 2 ** (levels - 1) or size < 2**levels:
            raise ConfigError(f"image size {size} must be a multiple of {2 ** (levels - 1)} and at least {2**levels} "
                              f"for generator.num_levels {levels}")
        # VGG-19 up to relu5_1 pools four times: its smallest input is 16 pixels
        if self.loss.perceptual > 0 and size // 2 ** (self.loss.perceptual_levels - 1) < 16:
            raise ConfigError(f"loss.perceptual at {size} px with perceptual_levels {self.loss.perceptual_levels} runs "
                              f"VGG-19 on a {size // 2 ** (self.loss.perceptual_levels - 1)}-pixel level (needs 16 or more)")
        if self.loss.warp_perceptual > 0 and size // 2 ** (levels - 2) < 16:
            raise ConfigError(f"loss.warp_perceptual at {size} px with {levels} levels runs VGG-19 on the "
                              f"{size // 2 ** (levels - 2)}-pixel coarsest flow (needs 16 or more); "
                              f"set loss.warp_perceptual: 0 or use {16 * 2 ** (levels - 2)} px")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_dict(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:  # its message spans lines: the mark and a caret
            raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
        return cls.from_dict(apply_overrides(data or {}, overrides or []))

    def save_yaml(self, path: str | Path) -> None:
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

