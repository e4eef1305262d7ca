"""Pretrained backbones whose weights users bring: VGG-19 (perceptual loss), InceptionV3 (FID),
ResNet-50 (DECA's encoder), and the paper's metric networks: ArcFace (CSIM), FAN (AKD), LPIPS;
one checked loader for their files."""

from .arcface import ArcFaceEmbedder, IResNet
from .fan import FAN, FanLandmarks
from .inception import FID_WEIGHTS, FIDInceptionV3
from .lpips import LPIPS
from .resnet import ResNet50Features
from .vgg import VGG19Features
from .weights import load_checked, read_weights

__all__ = ["FAN", "FID_WEIGHTS", "LPIPS", "ArcFaceEmbedder", "FIDInceptionV3", "FanLandmarks", "IResNet", "ResNet50Features", "VGG19Features", "load_checked", "read_weights"]
