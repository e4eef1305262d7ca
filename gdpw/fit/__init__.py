"""Face fitting: landmark detection, cropping and FLAME fitting."""

from .detect import FaceDetectionError, FaceLandmarks, MediaPipeDetector, pick_face
from .fitter import FitConfig, FlameFit, LandmarkFitter, OneEuroFilter

__all__ = [
    "FaceDetectionError",
    "FaceLandmarks",
    "FitConfig",
    "FlameFit",
    "LandmarkFitter",
    "MediaPipeDetector",
    "OneEuroFilter",
    "pick_face",
]
