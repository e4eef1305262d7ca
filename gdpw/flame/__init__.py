"""FLAME head model: file loading, the layer, cameras and the built-in demo head."""

from .blendshapes import BlendshapeMap
from .camera import orthographic, perspective
from .flame import DEMO_HEAD, FLAME, FlameOutput, FlameParams, HeadConfig, contour_bins, resolve_flame_path
from .io import FlameData, FlameFileError, LandmarkEmbedding, load_flame, load_landmark_embedding
from .motion import MotionFile, is_motion_file, load_motion, save_motion
from .sequence import FlameSequence

__all__ = [
    "BlendshapeMap",
    "DEMO_HEAD",
    "FLAME",
    "FlameData",
    "FlameFileError",
    "FlameOutput",
    "FlameParams",
    "FlameSequence",
    "HeadConfig",
    "LandmarkEmbedding",
    "MotionFile",
    "contour_bins",
    "is_motion_file",
    "load_motion",
    "load_flame",
    "load_landmark_embedding",
    "orthographic",
    "perspective",
    "resolve_flame_path",
    "save_motion",
]
