"""Inference as a pipeline of small stages: crop, fit, transfer motion, render, generate, paste back.

    animator = Animator(AnimateConfig())                 # the shipped demo checkpoint
    result = animator.animate(source_rgb, driving_frames, fps=25)
    result.frames                                         # (T, H, W, 3) uint8
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from gdpw.fit import FitConfig, FlameFit, LandmarkFitter, MediaPipeDetector, pick_face
from gdpw.fit.detect import FaceDetectionError
from gdpw.flame import FLAME, FlameParams, load_landmark_embedding, orthographic
from gdpw.flame.lbs import batch_rodrigues, matrix_to_axis_angle
from gdpw.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from gdpw.model.fold import CPU_MAX_CONV_BYTES, fold_for_inference
from gdpw.render import render_guidance

from .crop import CropBox, crop, crop_box, paste_back

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo_generator.pt"
MIN_FACE_PIXELS = 24


@dataclass(frozen=True)
class AnimateConfig:
    """Options shared by the CLI, the Python API and the web UI."""

    checkpoint: str | None = None  # gdpw or released checkpoint; None = the shipped demo generator
    flame: str | None = None  # FLAME generic_model.pkl; None = the demo head
    landmark_embedding: str | None = None  # 68-point embedding for FLAME (DECA's landmark_embedding.npy, ...)
    motion: Literal["relative", "absolute"] = "relative"
    crop_scale: float = 2.5
    face_index: int | None = None  # which face when there are several (0 = largest)
    paste_back: bool = True  # put the result back into the full source frame
    side_by_side: bool = False  # source | driving | result
    batch_size: int = 8
    device: str = "cpu"
    allow_pickle: bool = False
    fitter: Literal["landmarks", "deca"] = "landmarks"  # FLAME fitting backend
    deca_model: str | None = None  # deca_model.tar, for fitter "deca"
    fit: FitConfig = field(default_factory=FitConfig)


@dataclass
class Source:
    image: np.ndarray  # the full source frame
    box: CropBox
    crop: np.ndarray  # (S, S, 3) uint8
    fit: FlameFit  # one frame


@dataclass
class AnimationResult:
    frames: np.ndarray  # (T, H, W, 3) uint8
    crops: np.ndarray  # (T, S, S, 3) uint8, the generator's outputs
    timings: dict[str, float]  # seconds per stage


class Animator:
    def __init__(self, cfg: AnimateConfig | None = None) -> None:
        self.cfg = cfg = cfg or AnimateConfig()
        path = Path(cfg.checkpoint) if cfg.checkpoint else DEMO_CHECKPOINT
        self.checkpoint: Checkpoint = load_checkpoint(path, allow_pickle=cfg.allow_pickle)
        self.device = torch.device(cfg.device)
        embedding = load_landmark_embedding(cfg.landmark_embedding) if cfg.landmark_embedding else None
        self.flame = FLAME(cfg.flame, landmark_embedding=embedding).to(self.device)
        gen_cfg = self.checkpoint.generator_config
        if gen_cfg.uses_codes and gen_cfg.num_verts != self.flame.num_verts:
            raise CheckpointError(
                f"{path}: the checkpoint's neural codes are for {gen_cfg.num_verts} vertices but the FLAME model "
                f"has {self.flame.num_verts}; use the FLAME model it was trained with"
            )
        # inference copy: spectral norm and BatchNorm folded, channels_last, wide convs split on the CPU
        max_conv_bytes = CPU_MAX_CONV_BYTES if self.device.type == "cpu" else None
        folded = fold_for_inference(self.checkpoint.build_generator(), max_conv_bytes)
        self.generator = folded.to(self.device).to(memory_format=torch.channels_last)
        self.size = self.checkpoint.image_size
        self._fitter: LandmarkFitter | None = None
        self.deca = None
        if cfg.fitter == "deca":
            from gdpw.fit.deca import DecaEncoder, require_flame_2020

            require_flame_2020(self.flame.n_shape, self.flame.n_expression)  # before any work
            self.deca = DecaEncoder.from_file(cfg.deca_model or "deca_model.tar").to(self.device)
        elif cfg.fitter != "landmarks":
            raise ValueError(f"fitter must be 'landmarks' or 'deca', got {cfg.fitter!r}")
        self._detector: MediaPipeDetector | None = None
        self.timings: dict[str, float] = defaultdict(float)

    # -- stages --------------------------------------------------------------------------------
    @property
    def fitter(self) -> LandmarkFitter:
        """The landmark fitter (on the CPU), made on first use: the DECA path does not need it."""
        if self._fitter is None:
            on_cpu = self.flame if self.device.type == "cpu" else copy.deepcopy(self.flame).cpu()
            self._fitter = LandmarkFitter(on_cpu, self.cfg.fit)
        return self._fitter

    @property
    def detector(self) -> MediaPipeDetector:
        if self._detector is None:
            self._detector = MediaPipeDetector()
        return self._detector

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def _timed(self, stage: str, start: float) -> None:
        self.timings[stage] += time.perf_counter() - start

    def landmarks(self, image: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        """68 landmarks and iris centres (pixels) of the chosen face."""
        t = time.perf_counter()
        face = pick_face(self.detector.detect(image), self.cfg.face_index, what)
        x0, y0, x1, y1 = face.box()
        if max(x1 - x0, y1 - y0) < MIN_FACE_PIXELS:
            raise FaceDetectionError(f"the face in {what} is too small ({max(x1 - x0, y1 - y0):.0f} px; need {MIN_FACE_PIXELS})")
        self._timed("detect", t)
        return face.ibug68, face.irises

    def prepare_source(self, image: np.ndarray) -> Source:
        """Crop and fit the source portrait."""
        lmk, iris = self.landmarks(image, "the source image")
        box = crop_box(lmk, self.cfg.crop_scale)
        t = time.perf_counter()
        if self.deca is not None:
            fit = self._deca([image], [lmk], box, fps=None)
        else:
            fit = self.fitter.fit(torch.from_numpy(box.to_ndc(lmk))[None].float(), torch.from_numpy(box.to_ndc(iris))[None].float())
        self._timed("fit", t)
        return Source(image, box, crop(image, box, self.size), fit)

    def fit_driving(self, frames: Sequence[np.ndarray], fps: float, shape: torch.Tensor | None = None) -> tuple[FlameFit, CropBox]:
        """Track the driving video inside one box (from its first detected face), so camera motion is kept.

        Returns the fit (cameras in the box's NDC) and the box.

        Frames where no face is found reuse the nearest detected frame's landmarks; a video with
        faces in fewer than half of its frames is refused.
        """
        found: list[tuple[np.ndarray, np.ndarray] | None] = []
        for i, frame in enumerate(frames):
            try:
                found.append(self.landmarks(frame, f"driving frame {i}"))
            except FaceDetectionError as err:
                if "faces found" in str(err) or "--face-index" in str(err):
                    raise  # several faces: the user has to choose
                found.append(None)
        hits = [i for i, f in enumerate(found) if f is not None]
        if len(hits) * 2 < len(found):
            raise FaceDetectionError(f"no face found in {len(found) - len(hits)} of {len(found)} driving frames")
        filled = [found[min(hits, key=lambda h: abs(h - i))] if f is None else f for i, f in enumerate(found)]
        lmks = [f[0] for f in filled if f is not None]
        irises = [f[1] for f in filled if f is not None]
        box = crop_box(lmks[0], self.cfg.crop_scale)
        t = time.perf_counter()
        if self.deca is not None:
            fit = self._deca(list(frames), lmks, box, fps)
        else:
            lmk_t = torch.from_numpy(np.stack([box.to_ndc(x) for x in lmks])).float()
            iris_t = torch.from_numpy(np.stack([box.to_ndc(x) for x in irises])).float()
            fit = self.fitter.track(lmk_t, iris_t, fps=fps, shape=shape)
        self._timed("fit", t)
        return fit, box

    def _deca(self, images: list[np.ndarray], lmks: list[np.ndarray], box: CropBox, fps: float | None) -> FlameFit:
        """DECA fits in batches, cameras in ``box``'s NDC, smoothed over time like the tracker's."""
        from gdpw.fit.deca import deca_fit
        from gdpw.fit.fitter import smooth_fit

        parts = [deca_fit(self.deca, images[i : i + 16], lmks[i : i + 16], [box] * len(images[i : i + 16]),
                          self.flame.n_shape, self.flame.n_expression) for i in range(0, len(images), 16)]
        fields = ("expression", "global_pose", "jaw_pose", "eye_pose", "camera")
        fit = FlameFit(torch.stack([p.shape for p in parts]).mean(0), *(torch.cat([getattr(p, k) for p in parts]).cpu() for k in fields))
        return fit if fps is None else smooth_fit(fit, fps, self.cfg.fit)

    def transfer(self, source: FlameFit, driving: FlameFit) -> FlameFit:
        """The source's identity with the driving motion, absolute or relative to driving frame 0."""
        n = len(driving)
        shape = source.shape
        if self.cfg.motion == "absolute":
            return FlameFit(shape, driving.expression, driving.global_pose, driving.jaw_pose, driving.eye_pose, driving.camera)
        r_src = batch_rodrigues(source.global_pose[:1]).expand(n, 3, 3)
        r_d = batch_rodrigues(driving.global_pose)
        r_d0 = batch_rodrigues(driving.global_pose[:1]).expand(n, 3, 3)
        pose = matrix_to_axis_angle(r_d @ r_d0.transpose(1, 2) @ r_src)
        delta = lambda k: getattr(driving, k) - getattr(driving, k)[:1]  # noqa: E731
        cam = source.camera[:1].expand(n, 3).clone()
        cam[:, 0] = cam[:, 0] * driving.camera[:, 0] / driving.camera[0, 0]
        cam[:, 1:] = cam[:, 1:] + delta("camera")[:, 1:]
        return FlameFit(
            shape,
            source.expression[:1] + delta("expression"),
            pose,
            source.jaw_pose[:1] + delta("jaw_pose"),
            source.eye_pose[:1] + delta("eye_pose"),
            cam,
        )

    @torch.no_grad()
    def generate(self, source: Source, target: FlameFit) -> np.ndarray:
        """Generated crops (T, S, S, 3) uint8 for every frame of ``target``."""
        gen = self.generator
        size = (self.size, self.size)
        img_s = torch.from_numpy(np.array(source.crop)).permute(2, 0, 1)[None].float().div(255).to(self.device)
        img_s = img_s.contiguous(memory_format=torch.channels_last)
        verts_s = self.vertices(source.fit, [0])
        embeds = gen.embeds if gen.cfg.uses_codes else None
        encoding = None  # the source half of the network, computed once for all frames
        out = []
        for start in range(0, len(target), self.cfg.batch_size):
            idx = list(range(start, min(len(target), start + self.cfg.batch_size)))
            t = time.perf_counter()
            verts_d = self.vertices(target, idx)
            b = len(idx)
            pat = render_guidance(verts_s.expand(b, -1, -1), verts_d, self.flame.faces, size, embeds)
            self._timed("render", t)
            t = time.perf_counter()
            if encoding is None:
                encoding = gen.encode(img_s, None if pat.codes_s is None else pat.codes_s[:1])
            res = gen.decode(encoding, pat.geom_disp, pat.codes_d).rec_img_d
            out.append((res.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8))
            self._timed("generate", t)
        return np.concatenate(out)

    def vertices(self, fit: FlameFit, idx: list[int]) -> torch.Tensor:
        """Image-space vertices (n, V, 3) of frames ``idx`` of a fit, on the animator's device."""
        params = FlameParams(**{k: (None if v is None else v.to(self.device)) for k, v in vars(fit.params(idx)).items()})
        return orthographic(self.flame(params).vertices, fit.camera[idx].to(self.device))

    def compose(self, source: Source, crops: np.ndarray, driving: Sequence[np.ndarray] | None) -> np.ndarray:
        """Final frames: pasted back into the source frame (or the crops), optionally side by side."""
        t = time.perf_counter()
        frames = []
        for i, c in enumerate(crops):
            main = paste_back(source.image, c, source.box) if self.cfg.paste_back else c
            if self.cfg.side_by_side:
                h = main.shape[0]
                panels = [resize_to_height(source.image, h), resize_to_height(driving[i], h) if driving is not None else None, main]
                main = np.concatenate([p for p in panels if p is not None], axis=1)
            frames.append(main)
        self._timed("compose", t)
        return np.stack(frames)

    # -- whole jobs ----------------------------------------------------------------------------
    def animate(self, source_image: np.ndarray, driving_frames: Sequence[np.ndarray], fps: float = 25.0) -> AnimationResult:
        self.timings.clear()
        source = self.prepare_source(source_image)
        driving, _ = self.fit_driving(driving_frames, fps)
        crops = self.generate(source, self.transfer(source.fit, driving))
        return AnimationResult(self.compose(source, crops, driving_frames), crops, dict(self.timings))

    def animate_fit(self, source: Source, target: FlameFit) -> AnimationResult:
        """Drive a prepared source with explicit FLAME parameters (edits, sweeps, the demo)."""
        crops = self.generate(source, target)
        return AnimationResult(self.compose(source, crops, None), crops, dict(self.timings))


def resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((max(1, round(w * height / h)), height), Image.Resampling.BILINEAR))


def source_from_fit(image: np.ndarray, fit: FlameFit) -> Source:
    """A source whose fit is known (a synthetic render): the whole image is the crop."""
    size = image.shape[0]
    return Source(image, CropBox(0.0, 0.0, float(size)), image, fit)

