"""Every hyper-parameter of a training run, in one typed config read from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gdpw.common.config import apply_overrides, from_dict, to_dict, validate
from gdpw.model.config import DiscriminatorConfig, GeneratorConfig


@dataclass(frozen=True)
class LossConfig:
    l1: float = 1.0
    perceptual: float = 10.0  # VGG-19 over a 4-level image pyramid; needs vgg_weights
    perceptual_levels: int = 4
    warp: float = 1.0  # L1 of the source warped by every predicted flow level
    gan: float = 1.0
    gan_mode: Literal["lsgan", "hinge"] = "lsgan"
    feature_matching: float = 10.0
    vgg_weights: str | None = None  # torchvision's vgg19-dcbbb9bb.pth
    random_vgg: bool = False  # a randomly initialised VGG (tests only)

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    milestones: tuple[int, ...] = (80_000, 160_000)
    gamma: float = 0.1


@dataclass(frozen=True)
class DataConfig:
    roots: tuple[str, ...] = ("data/synth",)
    layout: Literal["gdpw", "official"] = "gdpw"
    split: str = "train"
    flip_prob: float = 0.5
    jitter: float = 0.1
    hue: float = 0.02
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
    engine: Literal["torch", "accelerate"] = "torch"  # accelerate: multi-GPU / multi-node through HF Accelerate
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
        return cls.from_dict(apply_overrides(yaml.safe_load(path.read_text()) or {}, overrides or []))

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

