"""Tracking: landmark detection, crop boxes, FLAME fitting (landmarks or DECA) and smoothing."""

from .detect import FaceLandmarks, MediaPipeDetector, pick_face
from .fitter import FitConfig, LandmarkFitter, OneEuroFilter, smooth_fit
from .tracker import FaceTracker, StreamTracker, Track, TrackConfig

__all__ = [
    "FaceLandmarks",
    "FaceTracker",
    "FitConfig",
    "LandmarkFitter",
    "MediaPipeDetector",
    "OneEuroFilter",
    "StreamTracker",
    "Track",
    "TrackConfig",
    "pick_face",
    "smooth_fit",
]
