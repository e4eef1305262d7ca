"""Pretrained backbones whose weights users bring: VGG-19 (perceptual loss), InceptionV3 (FID),
ResNet-50 (DECA's encoder); one checked loader for their files."""

from .inception import FID_WEIGHTS, FIDInceptionV3
from .resnet import ResNet50Features
from .vgg import VGG19Features
from .weights import load_checked, read_weights

__all__ = ["FID_WEIGHTS", "FIDInceptionV3", "ResNet50Features", "VGG19Features", "load_checked", "read_weights"]
