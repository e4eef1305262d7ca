"""Tracking: faces found, cropped and fitted with FLAME, in one image or a whole video.

    with FaceTracker(FLAME(), TrackConfig()) as tracker:
        track = tracker.track(frames, fps=25)      # track.box, track.params (a FlameSequence)

A video is tracked inside one box (from its first detected face), so camera motion is kept;
cameras are in that box's NDC. The backend is MediaPipe landmarks + the FLAME landmark fitter,
or DECA's encoder.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from gdpw.common.config import validate
from gdpw.common.crop import CropBox, crop_box
from gdpw.common.errors import NoFaceError
from gdpw.common.timing import StageTimes
from gdpw.flame import FLAME, FlameSequence

from .detect import MediaPipeDetector, pick_face
from .fitter import FitConfig, LandmarkFitter, smooth_fit

DECA_BATCH = 16


@dataclass(frozen=True)
class TrackConfig:
    """How faces are found and fitted."""

    fitter: Literal["landmarks", "deca"] = "landmarks"  # FLAME fitting: MediaPipe landmarks, or DECA (FLAME 2020)
    deca_model: str | None = None  # DECA's deca_model.tar, for the deca fitter
    face_index: int | None = None  # which face when an image has several (0 = largest)
    crop_scale: float = 2.5  # crop side / landmark box side
    min_face_pixels: int = 24  # a smaller face counts as not found
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Track:
    """Where the face is and how it moves: the crop box and the FLAME parameters (cameras in the box's NDC)."""

    box: CropBox
    params: FlameSequence


class FaceTracker:
    """Detector + FLAME fitting (landmarks or DECA) + smoothing. Close it (or use ``with``) to free MediaPipe."""

    def __init__(self, flame: FLAME, cfg: TrackConfig | None = None, device: str | torch.device = "cpu",
                 timings: StageTimes | None = None) -> None:
        self.cfg = cfg = cfg or TrackConfig()
        self.flame = flame
        self.device = torch.device(device)
        self.timings = StageTimes() if timings is None else timings
        self._detector: MediaPipeDetector | None = None
        self._fitter: LandmarkFitter | None = None
        self.deca = None
        if cfg.fitter == "deca":
            from .deca import DecaEncoder, require_flame_2020

            require_flame_2020(flame.n_shape, flame.n_expression)  # before any work
            self.deca = DecaEncoder.from_file(cfg.deca_model or "deca_model.tar").to(self.device)

    @property
    def detector(self) -> MediaPipeDetector:
        if self._detector is None:
            self._detector = MediaPipeDetector()
        return self._detector

    @property
    def fitter(self) -> LandmarkFitter:
        """The landmark fitter (on the CPU), made on first use: the DECA path does not need it."""
        if self._fitter is None:
            on_cpu = self.flame if self.flame.v_template.device.type == "cpu" else copy.deepcopy(self.flame).cpu()
            self._fitter = LandmarkFitter(on_cpu, self.cfg.fit)
        return self._fitter

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stages --------------------------------------------------------------------------------
    def landmarks(self, image: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        """68 landmarks and the two iris centres (pixels) of the chosen face."""
        with self.timings.stage("detect"):
            face = pick_face(self.detector.detect(image), self.cfg.face_index, what)
        x0, y0, x1, y1 = face.box()
        if max(x1 - x0, y1 - y0) < self.cfg.min_face_pixels:
            raise NoFaceError(f"the face in {what} is too small ({max(x1 - x0, y1 - y0):.0f} px; "
                              f"need {self.cfg.min_face_pixels})")
        return face.ibug68, face.irises

    def fit_image(self, image: np.ndarray, what: str = "the source image") -> Track:
        """One portrait: its crop box and a one-frame fit."""
        lmk, iris = self.landmarks(image, what)
        box = crop_box(lmk, self.cfg.crop_scale)
        with self.timings.stage("fit"):
            if self.deca is not None:
                params = self._deca([image], [lmk], box)
            else:
                params = self.fitter.fit(_ndc(box, [lmk]), _ndc(box, [iris]))
        return Track(box, params)

    def track(self, frames: Sequence[np.ndarray], fps: float, shape: torch.Tensor | None = None) -> Track:
        """A video, inside the box of its first detected face; ``shape`` given keeps the identity fixed.

        Frames where no face is found reuse the nearest detected frame's landmarks; a video with
        faces in fewer than half of its frames is refused. Several faces without a chosen index
        stop the track.
        """
        found: list[tuple[np.ndarray, np.ndarray] | None] = []
        for i, frame in enumerate(frames):
            try:
                found.append(self.landmarks(frame, f"driving frame {i}"))
            except NoFaceError:
                found.append(None)
        hits = [i for i, f in enumerate(found) if f is not None]
        if len(hits) * 2 < len(found):
            raise NoFaceError(f"no face found in {len(found) - len(hits)} of {len(found)} driving frames")
        filled = [f if f is not None else found[min(hits, key=lambda h: abs(h - i))] for i, f in enumerate(found)]
        lmks = [f[0] for f in filled if f is not None]
        irises = [f[1] for f in filled if f is not None]
        box = crop_box(lmks[0], self.cfg.crop_scale)
        with self.timings.stage("fit"):
            if self.deca is not None:
                params = smooth_fit(self._deca(list(frames), lmks, box), fps, self.cfg.fit)
            else:
                params = self.fitter.track(_ndc(box, lmks), _ndc(box, irises), fps=fps, shape=shape)
        return Track(box, params)

    def _deca(self, images: list[np.ndarray], lmks: list[np.ndarray], box: CropBox) -> FlameSequence:
        """DECA fits in batches (one shape, the mean of the batches'), cameras in ``box``'s NDC."""
        from .deca import deca_fit

        assert self.deca is not None
        parts = [deca_fit(self.deca, images[i : i + DECA_BATCH], lmks[i : i + DECA_BATCH], [box] * len(images[i : i + DECA_BATCH]),
                          self.flame.n_shape, self.flame.n_expression).to("cpu") for i in range(0, len(images), DECA_BATCH)]
        return FlameSequence.cat(parts, shape=torch.stack([p.shape for p in parts]).mean(0))


def _ndc(box: CropBox, points: Sequence[np.ndarray]) -> torch.Tensor:
    """(T, N, 2) points in ``box``'s NDC."""
    return torch.from_numpy(np.stack([box.to_ndc(p) for p in points])).float()
