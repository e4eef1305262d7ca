"""Tracking: faces found, cropped and fitted with FLAME, in one image or a whole video.

    with FaceTracker(FLAME(), TrackConfig()) as tracker:
        track = tracker.track(frames, fps=25)      # track.box, track.params (a FlameSequence)

Two crop recipes: gdpw's own tracks a video inside one box (from its first detected face), so
camera motion is kept; the official GDPW recipe crops every frame by its own landmarks
(``gdpw.common.crop.official_boxes``), as the released models saw. Cameras are in each frame's
box NDC. The backend is MediaPipe landmarks + the FLAME landmark fitter, or DECA's encoder (whose
codes are smoothed over time before their cameras move into the crop, as the official code does).
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from gdpw.common.config import validate
from gdpw.common.crop import CropBox, CropRecipe, crop_box, official_boxes
from gdpw.common.errors import NoFaceError
from gdpw.common.timing import StageTimes
from gdpw.flame import FLAME, BlendshapeMap, FlameSequence
from gdpw.flame.sequence import FRAME_FIELDS

from .detect import DetectedFace, FaceDetector, FaceLandmarks, MediaPipeDetector, pick_face
from .fitter import FitConfig, LandmarkFitter, OneEuroFilter, Smoothing, smooth_fit, smoothing
from .regressor import FlameRegressor, Reference, RegressorError

DECA_BATCH = 16
SOLVE_STEPS = 1  # Gauss-Newton steps of the regressor's joint solve: from the previous frame's expression, one is as good as two (docs/real_follow.md)
READ_PROGRESS = 500  # a video read by the regressor shows a progress bar from this many frames


@dataclass(frozen=True)
class TrackConfig:
    """How faces are found and fitted."""

    fitter: Literal["landmarks", "regressor", "deca"] = "landmarks"  # FLAME fitting: MediaPipe landmarks; the head's FLAME regressor solved on them from a first frame fitted to them (videos; landmarks when the head has none); or DECA (FLAME 2020)
    deca_model: str | None = None  # DECA's deca_model.tar, for the deca fitter
    face_index: int | None = None  # which face when an image has several (0 = largest)
    crop: Literal["auto", "gdpw", "official"] = "auto"  # crop recipe; auto: the checkpoint's (official for released ones)
    crop_scale: float = 2.5  # gdpw recipe: crop side / landmark box side
    min_face_pixels: int = 24  # a smaller face counts as not found
    fit: FitConfig = field(default_factory=FitConfig)

    def __post_init__(self) -> None:
        validate(self)

    def recipe(self, default: CropRecipe = "gdpw") -> CropRecipe:
        """The crop recipe: the configured one, or ``default`` (a checkpoint's) for "auto"."""
        return default if self.crop == "auto" else self.crop


@dataclass
class Track:
    """Where the face is and how it moves: a crop box per frame and the FLAME parameters (each
    frame's camera in its box's NDC)."""

    boxes: list[CropBox]
    params: FlameSequence

    @property
    def box(self) -> CropBox:
        """The first frame's box (a portrait's only one)."""
        return self.boxes[0]


class FaceTracker:
    """Detector + FLAME fitting (landmarks or DECA) + smoothing. Close it (or use ``with``) to free MediaPipe."""

    def __init__(self, flame: FLAME, cfg: TrackConfig | None = None, device: str | torch.device = "cpu",
                 timings: StageTimes | None = None, default_recipe: CropRecipe = "gdpw", crop_size: int = 256,
                 detector: FaceDetector | None = None, blendshapes: BlendshapeMap | None = None,
                 regressor: str | os.PathLike[str] | None = None) -> None:
        self.cfg = cfg = cfg or TrackConfig()
        self.recipe: CropRecipe = cfg.recipe(default_recipe)
        self.crop_size = crop_size  # the official recipe maps its box onto this many pixels
        self.smoothing: Smoothing = smoothing(cfg.fit, self.recipe)
        self.flame = flame
        self.device = torch.device(device)
        self.timings = StageTimes() if timings is None else timings
        self._detector = detector  # MediaPipe's face landmarker unless another is given
        self.blendshapes = blendshapes  # MediaPipe's blendshapes as expression observations, when the head has a map
        self._fitter: LandmarkFitter | None = None
        self.regressor_path = None if regressor is None else Path(regressor)  # loaded on first use (live tracking)
        self._regressor: FlameRegressor | None = None
        self.deca = None
        if cfg.fitter == "deca":
            from .deca import DecaEncoder, require_flame_2020

            require_flame_2020(flame.n_shape, flame.n_expression)  # before any work
            self.deca = DecaEncoder.from_file(cfg.deca_model or "deca_model.tar").to(self.device)

    @property
    def detector(self) -> FaceDetector:
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

    @property
    def regressor(self) -> FlameRegressor | None:
        """The head's FLAME regressor, loaded on first use; None (and one line on stderr, once) when
        there is none or it cannot be used: tracking then fits landmarks instead."""
        if self._regressor is None and self.regressor_path is not None:
            try:
                self._regressor = FlameRegressor.from_file(self.regressor_path, self.fitter.flame)
            except RegressorError as err:
                print(f"{err}; tracking by fitting landmarks instead", file=sys.stderr)
                self.regressor_path = None
        return self._regressor

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stages --------------------------------------------------------------------------------
    def landmarks(self, image: np.ndarray, what: str,
                  face_index: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """68 landmarks and the two iris centres (pixels) of the chosen face (``face_index``, else
        the config's), and its expression and jaw as its blendshapes predict them (None without a map)."""
        return self._observe(self.face(image, what, face_index), what)

    def face(self, image: np.ndarray, what: str, face_index: int | None = None) -> DetectedFace:
        """The chosen face (``face_index``, else the config's) as the detector gives it."""
        with self.timings.stage("detect"):
            return pick_face(self.detector.detect(image), self.cfg.face_index if face_index is None else face_index, what)

    def _observe(self, face: DetectedFace, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``landmarks``' answer for a detected face; a face under ``min_face_pixels`` counts as none."""
        x0, y0, x1, y1 = face.box()
        if max(x1 - x0, y1 - y0) < self.cfg.min_face_pixels:
            raise NoFaceError(f"the face in {what} is too small ({max(x1 - x0, y1 - y0):.0f} px; "
                              f"need {self.cfg.min_face_pixels})")
        scores = getattr(face, "blendshapes", None)
        observed = self.blendshapes.predict(scores) if self.blendshapes is not None and scores else None
        return face.ibug68, face.irises, observed

    def box(self, landmarks: np.ndarray) -> CropBox:
        """The crop box of a face by the tracker's recipe."""
        if self.recipe == "official":
            return official_boxes(landmarks, self.crop_size)[1]
        return crop_box(landmarks, self.cfg.crop_scale)

    def fit_image(self, image: np.ndarray, what: str = "the source image", face_index: int | None = None) -> Track:
        """One portrait: its crop box and a one-frame fit."""
        return self._fit_face(image, *self.landmarks(image, what, face_index))

    def fit_faces(self, image: np.ndarray, what: str = "the source image") -> list[Track]:
        """Every face of a group photo (largest first), from one detection."""
        with self.timings.stage("detect"):
            faces = self.detector.detect(image)
        if not faces:
            raise NoFaceError(f"no face found in {what}")
        return [self._fit_face(image, *self._observe(face, f"face {i} of {what}")) for i, face in enumerate(faces)]

    def _fit_face(self, image: np.ndarray, lmk: np.ndarray, iris: np.ndarray, observed: np.ndarray | None) -> Track:
        box = self.box(lmk)
        with self.timings.stage("fit"):
            if self.deca is not None:
                params = self._deca([image], [lmk], [box], fps=1.0)
            else:
                params = self.fitter.fit(_ndc([box], [lmk]), _ndc([box], [iris]), observed=_stack([observed]))
        return Track([box], params)

    def track(self, frames: Sequence[np.ndarray], fps: float, shape: torch.Tensor | None = None) -> Track:
        """A video; ``shape`` given keeps the identity fixed. gdpw's recipe crops every frame like
        the first detected face, the official one each frame by its own landmarks.

        Frames where no face is found reuse the nearest detected frame's landmarks; a video with
        faces in fewer than half of its frames is refused. Several faces without a chosen index
        stop the track.
        """
        found: list[tuple[DetectedFace, np.ndarray, np.ndarray, np.ndarray | None] | None] = []
        for i, frame in enumerate(frames):
            what = f"driving frame {i}"
            try:
                face = self.face(frame, what)
                found.append((face, *self._observe(face, what)))
            except NoFaceError:
                found.append(None)
        hits = [i for i, f in enumerate(found) if f is not None]
        if len(hits) * 2 < len(found):
            raise NoFaceError(f"no face found in {len(found) - len(hits)} of {len(found)} driving frames")
        filled = [f if f is not None else found[min(hits, key=lambda h: abs(h - i))] for i, f in enumerate(found)]
        faces = [f[0] for f in filled if f is not None]
        lmks = [f[1] for f in filled if f is not None]
        irises = [f[2] for f in filled if f is not None]
        observed = _stack([f[3] for f in filled if f is not None])
        boxes = [self.box(x) for x in lmks] if self.recipe == "official" else [self.box(lmks[0])] * len(lmks)
        readable = [f for f in faces if isinstance(f, FaceLandmarks) and f.pose is not None]
        regressor = self.regressor if self.cfg.fitter == "regressor" and len(readable) == len(faces) else None
        with self.timings.stage("fit"):
            if self.deca is not None:
                params = self._deca(list(frames), lmks, boxes, fps)
            else:
                lmk, iris = _ndc(boxes, lmks), _ndc(boxes, irises)
                if regressor is not None:
                    fit = self._read_video(regressor, readable, boxes, lmk, iris, observed, shape)
                else:
                    fit = self.fitter.track(lmk, iris, shape=shape, observed=observed)
                params = smooth_fit(fit, fps, self.smoothing)
        return Track(boxes, params)

    def read(self, regressor: FlameRegressor, face: FaceLandmarks, box: CropBox, lmk: torch.Tensor, iris: torch.Tensor,
             observed: torch.Tensor | None, anchor: Reference, last: FlameSequence, iterations: int = 0) -> FlameSequence:
        """One frame (``lmk`` (1, 68, 2), ``iris`` (1, 2, 2) in ``box``'s NDC) read by ``regressor``
        against ``anchor`` (a reference frame, ``FlameRegressor.reference``): jaw, eyes and camera
        from the network; from MediaPipe's turn and ``last``'s expression (the previous frame's),
        expression, head pose and camera solved together on the landmarks (``SOLVE_STEPS``
        Gauss-Newton steps of ``LandmarkFitter.solve``), then ``iterations`` L-BFGS steps."""
        fit = regressor.predict(face, box, anchor, head=regressor.head_rotation(face, anchor))  # its jaw, eyes and camera are kept
        fit = fit.replace(expression=last.expression.clone())
        fit = self.fitter.solve(lmk, iris, fit, observed, pose=True, iterations=SOLVE_STEPS)
        if iterations > 0:
            fit = self.fitter.refine(lmk, iris, fit, iterations, observed=observed)
        return fit

    def _read_video(self, regressor: FlameRegressor, faces: Sequence[FaceLandmarks], boxes: Sequence[CropBox], lmk: torch.Tensor,
                    iris: torch.Tensor, observed: torch.Tensor | None, shape: torch.Tensor | None) -> FlameSequence:
        """A video by the regressor: its first frame fitted fully (with its identity fitted on key
        frames, unless ``shape``), every later frame ``read`` against the first from the one before."""
        obs = [None if observed is None else observed[i : i + 1] for i in range(len(faces))]
        if shape is None:
            frames = [self.fitter.key_frame_fit(lmk, iris, observed).select([0])]
        else:
            frames = [self.fitter.fit(lmk[:1], iris[:1], shape=shape, observed=obs[0])]
        anchor = regressor.reference(faces[0], boxes[0], frames[0])
        for i in tqdm(range(1, len(faces)), desc="read", unit="frame", disable=len(faces) < READ_PROGRESS):
            frames.append(self.read(regressor, faces[i], boxes[i], lmk[i : i + 1], iris[i : i + 1], obs[i], anchor, frames[-1]))
        fit = FlameSequence.cat(frames)
        return fit.replace(landmark_error=self.fitter.landmark_rms(lmk, fit))

    def stream(self, iterations: int | None = None, regressor: bool = False) -> StreamTracker:
        """Causal tracking of a live stream, frame by frame (``StreamTracker``)."""
        return StreamTracker(self, iterations, regressor)

    def _deca(self, images: list[np.ndarray], lmks: list[np.ndarray], boxes: list[CropBox], fps: float) -> FlameSequence:
        """DECA's codes in batches, smoothed over time (expression, pose, camera), then their cameras
        moved from each DECA crop into ``boxes``' NDC: the official order."""
        from .deca import deca_codes, deca_sequence

        assert self.deca is not None
        parts = [deca_codes(self.deca, images[i : i + DECA_BATCH], lmks[i : i + DECA_BATCH]) for i in range(0, len(images), DECA_BATCH)]
        codes = {k: torch.cat([p[0][k].cpu() for p in parts]) for k in ("shape", "exp", "pose", "cam")}
        codes.update({k: self.smoothing(codes[k], fps) for k in ("exp", "pose", "cam")})
        deca_boxes = [b for p in parts for b in p[1]]
        return deca_sequence(codes, deca_boxes, boxes, self.flame.n_shape, self.flame.n_expression)


class StreamTracker:
    """A live stream tracked causally: frame after frame, with no look-ahead.

    The first frame with a face is the stream's reference: fitted fully, it fixes the identity
    (shape) and, in gdpw's recipe, the crop box. Every later frame is refined from the previous
    one (``LandmarkFitter.refine``: ``iterations`` L-BFGS steps, default ``FITTING_ITERATIONS``);
    or, with ``regressor`` (and a head that has one, and MediaPipe's faces), read by the FLAME
    regressor against the reference (``FaceTracker.read``: jaw, eyes and camera from the network,
    the head turned as MediaPipe's transformation matrices turned, expression, head pose and camera
    then solved together on the landmarks from the previous frame's expression), then
    ``iterations`` L-BFGS steps (default ``REGRESSOR_ITERATIONS``). Fits are smoothed by a
    One-Euro filter that sees only the past (time from the frames' own timestamps; in gdpw's recipe
    at ``FitConfig.stream_min_cutoff``), the camera's scale (how near the head is) by a slower one
    of its own (``FitConfig.stream_scale_cutoff``).
    ``reset`` makes the next frame the reference.

        stream = tracker.stream()
        box, params = stream.step(frame, time.perf_counter())    # NoFaceError when none is found
    """

    REGRESSOR_ITERATIONS = 0  # L-BFGS steps after the regressor (docs/benchmarks.md: live)
    FITTING_ITERATIONS = 30  # L-BFGS steps from the previous frame without one

    def __init__(self, tracker: FaceTracker, iterations: int | None = None, regressor: bool = False) -> None:
        self.tracker = tracker
        self.regressor = tracker.regressor if regressor and tracker.deca is None else None
        default = self.REGRESSOR_ITERATIONS if self.regressor is not None else self.FITTING_ITERATIONS
        self.iterations = default if iterations is None else iterations
        fit_cfg = tracker.cfg.fit  # the config's: a DECA stream has no fitter
        s = smoothing(fit_cfg, tracker.recipe, stream=True)
        self._filters = {k: OneEuroFilter(1.0, s.min_cutoff, s.beta) for k in FRAME_FIELDS} if s.min_cutoff > 0 else {}
        if self._filters and not s.per_frame and fit_cfg.stream_scale_cutoff > 0:  # the camera's scale: its own cutoff, no speed term
            self._filters["camera"] = OneEuroFilter(1.0, torch.tensor([fit_cfg.stream_scale_cutoff, s.min_cutoff, s.min_cutoff]),
                                                    torch.tensor([0.0, s.beta, s.beta]))
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next frame with a face becomes the reference."""
        self.reference: FlameSequence | None = None  # the first frame's (smoothed) fit
        self._box: CropBox | None = None
        self._last: FlameSequence | None = None  # the previous frame's raw fit (the warm start)
        self._anchor: Reference | None = None  # the reference frame as the regressor reads against it (its raw fit)
        self._time: float | None = None
        for f in self._filters.values():
            f.reset()

    def step(self, frame: np.ndarray, timestamp: float) -> tuple[CropBox, FlameSequence]:
        """The crop box and the smoothed one-frame fit of ``frame`` (captured at ``timestamp``, seconds)."""
        t = self.tracker
        face_index = 0 if t.cfg.face_index is None else t.cfg.face_index  # several faces: the largest
        face = t.face(frame, "the camera frame", face_index)
        lmk, iris, observed = t._observe(face, "the camera frame")
        fit: FlameSequence | None = None
        if self._last is None:  # the reference: a portrait's box and full fit, identity included
            track = t._fit_face(frame, lmk, iris, observed)
            box, fit = track.box, track.params
        else:
            box = t.box(lmk) if t.recipe == "official" else self._box
        assert box is not None
        readable = face if isinstance(face, FaceLandmarks) and face.pose is not None else None  # what the regressor reads
        with t.timings.stage("fit"):
            if fit is not None:  # the reference: made ready for the regressor
                self._anchor = None if readable is None or self.regressor is None else self.regressor.reference(readable, box, fit)
            elif t.deca is not None:
                fit = t._deca([frame], [lmk], [box], fps=1.0)
            else:
                assert self._last is not None
                lmk_ndc, iris_ndc, obs = _ndc([box], [lmk]), _ndc([box], [iris]), _stack([observed])
                if self.regressor is not None and self._anchor is not None and readable is not None:
                    fit = t.read(self.regressor, readable, box, lmk_ndc, iris_ndc, obs, self._anchor, self._last, self.iterations)
                else:  # refined from the previous frame
                    fit = t.fitter.refine(lmk_ndc, iris_ndc, self._last, self.iterations or self.FITTING_ITERATIONS, observed=obs)
        self._last = fit
        dt = None if self._time is None else max(timestamp - self._time, 1e-3)
        per_frame = t.smoothing.per_frame or dt is None
        fit = fit.replace(**{k: f.step(getattr(fit, k), None if per_frame else dt) for k, f in self._filters.items()})
        self._time = timestamp
        if self.reference is None:
            self.reference, self._box = fit, box
        return box, fit


def _stack(observed: Sequence[np.ndarray | None]) -> torch.Tensor | None:
    """(T, K) blendshape observations, or None unless every frame has one."""
    if not observed or any(o is None for o in observed):
        return None
    return torch.from_numpy(np.stack(observed)).float()  # type: ignore[arg-type]


def _ndc(boxes: Sequence[CropBox], points: Sequence[np.ndarray]) -> torch.Tensor:
    """(T, N, 2) points, each frame's in its box's NDC."""
    return torch.from_numpy(np.stack([box.to_ndc(p) for box, p in zip(boxes, points)])).float()
