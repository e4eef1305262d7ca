"""Training: typed configs, losses and the trainer."""

from .config import DataConfig, LossConfig, OptimConfig, TrainConfig
from .trainer import Trainer

__all__ = ["DataConfig", "LossConfig", "OptimConfig", "TrainConfig", "Trainer"]
