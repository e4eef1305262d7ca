"""Inference as a pipeline of small stages: track (crop + fit), transfer motion, render and
generate, paste back.

    animator = Animator(AnimateConfig())                 # the shipped demo checkpoint
    result = animator.animate(source_rgb, driving_frames, fps=25)
    result.frames                                         # (T, H, W, 3) uint8
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from gdpw.common.config import flat
from gdpw.common.crop import CropBox, CropRecipe, PasteBack, crop
from gdpw.common.errors import CheckpointError, ConfigError
from gdpw.common.images import resize_to_height, to_tensor, to_uint8
from gdpw.common.timing import StageTimes
from gdpw.fit import FaceTracker, Track, TrackConfig
from gdpw.flame import FlameSequence, HeadConfig
from gdpw.flame.lbs import batch_rodrigues, matrix_to_axis_angle
from gdpw.flame.motion import MotionFile
from gdpw.model import GuidedGenerator, SourceEncoding
from gdpw.model.checkpoint import Checkpoint, load_checkpoint
from gdpw.model.fold import CPU_MAX_CONV_BYTES, fold_for_inference
from gdpw.model.generator import GeneratorOutput, composite_at

from .graphed import GraphedDecode

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo_generator.pt"
Motion = Literal["relative", "absolute"]
PASTE_PLANS = 8  # paste-back plans kept (frame size, box, crop size): a video's or a stream's sources
LID_MIN_REFERENCE = 0.9  # the least openness a driver's first frame counts as its rest (a blink there must not blow the source's eyes open)


@dataclass(frozen=True)
class AnimateConfig:
    """Options shared by the CLI, the Python API and the web UI; per-call choices (motion, side
    by side) are arguments of ``Animator.animate``."""

    checkpoint: str | None = None  # gdpw or released checkpoint; default: the shipped demo generator
    allow_pickle: bool = False  # load checkpoints that need full unpickling (only files you trust)
    device: str = "cpu"  # torch device of the generator and the renderer
    batch_size: int = 8  # driving frames generated together
    paste_back: bool = True  # put the result back into the full source frame (else the crop alone)
    antialias: bool | None = None  # antialiased guidance maps; default: as the checkpoint was trained
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # the decoder's autocast; auto: fp16 on CUDA, fp32 on the CPU
    cuda_graph: Literal["auto", "on", "off"] = "auto"  # render + decode each batch as one captured CUDA graph; auto: on CUDA, falling back to eager if the capture fails
    detail: int = 1024  # alpha-blending checkpoints (the demo generator): warp the source crop at twice its size in the photo, up to this many pixels, not the network's size (0: off)
    detail_transfer: float = 1.0  # with detail: add the warped source's detail finer than the network's pixels where the network paints (0: off)
    paint_stretch: float = 1.5  # alpha-blending checkpoints: the network paints only where the driving mesh shows what the source cannot (triangles turned into view or stretched over this many times their source area, what the head uncovers); the warped source elsewhere (0: wherever the network chooses)
    head: HeadConfig = flat(HeadConfig)
    track: TrackConfig = flat(TrackConfig)


@dataclass
class Source:
    image: np.ndarray  # the full source frame
    box: CropBox
    crop: np.ndarray  # (S, S, 3) uint8
    fit: FlameSequence  # one frame


@dataclass
class EncodedSource:
    """The network's source half of one source, or of a batch of them (``Animator.encode``)."""

    guided: GuidedGenerator
    verts: torch.Tensor  # (1 or B, V, 3) the source meshes in image space
    encoding: SourceEncoding
    detail: torch.Tensor | None = None  # (1 or B, 3, R, R) the source crops at the photo's resolution (``composite_at``)
    cover: torch.Tensor | None = None  # (1 or B, 1, S, S) the source meshes' coverage, for the paint mask (``GuidedGenerator.source_coverage``)


@dataclass
class AnimationResult:
    frames: np.ndarray  # (T, H, W, 3) uint8
    crops: np.ndarray  # (T, R, R, 3) uint8, the generated crops (R: the network's size, or the detail resolution)
    timings: dict[str, float]  # seconds per stage


def transfer_motion(source: FlameSequence, driving: FlameSequence, motion: Motion = "relative",
                    lids: Sequence[int] = ()) -> FlameSequence:
    """The source's identity with the driving motion: absolute, or relative to driving frame 0
    (head rotation composed onto the source's, the other parameters offset, the camera scaled).

    ``lids`` (``FLAME.lid_components``): expression components that close an eyelid (1 closed).
    Relative motion scales their openness ``1 - value`` by the driver's openness over its first
    frame's, instead of offsetting: a driver's closed eye closes the source's whether the source's
    eyes are open wide or narrow, and the source's own openness is kept while the driver's is.
    """
    if motion == "absolute":
        return driving.replace(shape=source.shape)
    if motion != "relative":
        raise ConfigError(f"motion must be 'relative' or 'absolute', got {motion!r}")
    n = len(driving)
    r_src = batch_rodrigues(source.global_pose[:1]).expand(n, 3, 3)
    r_d = batch_rodrigues(driving.global_pose)
    r_d0 = batch_rodrigues(driving.global_pose[:1]).expand(n, 3, 3)

    def moved(k: str) -> torch.Tensor:
        return getattr(source, k)[:1] + getattr(driving, k) - getattr(driving, k)[:1]

    expression = moved("expression")
    if lids:
        idx = list(lids)
        open_s, open_d = 1 - source.expression[:1, idx], 1 - driving.expression[:, idx]
        open_d0 = open_d[:1].clamp_min(LID_MIN_REFERENCE)  # a first frame mid-blink
        expression[:, idx] = 1 - open_s * open_d / open_d0
    cam = moved("camera")
    cam[:, 0] = source.camera[0, 0] * driving.camera[:, 0] / driving.camera[0, 0]
    return driving.replace(shape=source.shape, expression=expression, neck_pose=moved("neck_pose"),
                           global_pose=matrix_to_axis_angle(r_d @ r_d0.transpose(1, 2) @ r_src),
                           jaw_pose=moved("jaw_pose"), eye_pose=moved("eye_pose"), camera=cam)


class Animator:
    """A face tracker, a guided generator and compositing. Close it (or use ``with``) when done."""

    def __init__(self, cfg: AnimateConfig | None = None) -> None:
        self.cfg = cfg = cfg or AnimateConfig()
        path = Path(cfg.checkpoint) if cfg.checkpoint else DEMO_CHECKPOINT
        self.checkpoint: Checkpoint = load_checkpoint(path, allow_pickle=cfg.allow_pickle)
        self.device = torch.device(cfg.device)
        self.flame = cfg.head.load().to(self.device)
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
        self.antialias = self.checkpoint.antialias if cfg.antialias is None else cfg.antialias
        cuda = self.device.type == "cuda"
        precision = ("fp16" if cuda else "fp32") if cfg.precision == "auto" else cfg.precision
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        if cfg.cuda_graph == "on" and not cuda:
            raise ConfigError("CUDA graphs need a CUDA device")
        self.timings = StageTimes(sync=torch.cuda.synchronize if cuda else None)  # GPU stages timed to completion
        self._pastes: dict[tuple[tuple[int, ...], CropBox, int], PasteBack] = {}  # by frame size, box, crop size
        self.tracker = FaceTracker(self.flame, cfg.track, self.device, self.timings, default_recipe=self.checkpoint.recipe,
                                   crop_size=self.size, blendshapes=cfg.head.load_blendshapes(),
                                   regressor=cfg.head.regressor_path())

    @property
    def recipe(self) -> CropRecipe:
        """The crop recipe in use: the official one (absolute motion, Euler edits) or gdpw's."""
        return self.tracker.recipe

    def close(self) -> None:
        self.tracker.close()

    def __enter__(self) -> Animator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stages --------------------------------------------------------------------------------
    def prepare_source(self, image: np.ndarray) -> Source:
        """Crop and fit the source portrait."""
        return self._source(image, self.tracker.fit_image(image))

    def prepare_sources(self, image: np.ndarray) -> list[Source]:
        """Every face of a group photo, largest first."""
        return [self._source(image, track) for track in self.tracker.fit_faces(image)]

    def _source(self, image: np.ndarray, track: Track) -> Source:
        return Source(image, track.box, crop(image, track.box, self.size), track.params)

    def track_driving(self, frames: Sequence[np.ndarray], fps: float) -> Track:
        return self.tracker.track(frames, fps)

    def encode(self, source: Source) -> EncodedSource:
        """The source half of the network, computed once per portrait (``decode`` reuses it)."""
        return self._encode([source])

    @torch.no_grad()
    def _encode(self, sources: Sequence[Source]) -> EncodedSource:
        """One source, or a batch of them each driving the same frame of a batch (video-to-video)."""
        guided = GuidedGenerator(self.generator, self.flame.faces, self.antialias, static=self.device.type == "cuda",
                                 paint_stretch=self.cfg.paint_stretch)
        img_s = torch.stack([to_tensor(s.crop) for s in sources]).to(self.device).contiguous(memory_format=torch.channels_last)
        with self.timings.stage("render"):
            verts_s = torch.cat([s.fit.image_vertices(self.flame, [0]) for s in sources])
            cover = guided.source_coverage(verts_s, (self.size, self.size))
        with self.timings.stage("generate"), self._autocast():
            encoding = guided.encode(img_s, verts_s)
        side = min(self.cfg.detail, round(2 * max(s.box.size for s in sources)))  # 2x: each bilinear resampling blurs less
        detail = None
        if self.checkpoint.generator_config.alpha_blend and side > self.size:
            detail = torch.stack([to_tensor(crop(s.image, s.box, side, border="edge")) for s in sources]).to(self.device)
        return EncodedSource(guided, verts_s, encoding, detail, cover)

    @torch.no_grad()
    def decode(self, encoded: EncodedSource, target: FlameSequence, idx: Sequence[int]) -> np.ndarray:
        """Generated crops (B, R, R, 3) uint8 for frames ``idx`` of ``target`` (R: ``EncodedSource.detail``'s size, else the network's)."""
        out = self._decode(encoded, target, idx)
        with self.timings.stage("generate"):
            return self._image(encoded, out)

    @torch.no_grad()
    def _decode(self, encoded: EncodedSource, target: FlameSequence, idx: Sequence[int]) -> GeneratorOutput:
        with self.timings.stage("render"):
            verts_d = target.image_vertices(self.flame, list(idx))
            maps = encoded.guided.driving_guidance(encoded.verts, verts_d, (self.size, self.size), cover_s=encoded.cover)
        with self.timings.stage("generate"), self._autocast():
            return encoded.guided.decode_maps(encoded.encoding, maps)

    @property
    def composites_in_frame(self) -> bool:
        """Whether ``decode_into`` composites in the photo (``composite_in_frame``): paste-back and
        detail on, a checkpoint that blends by alpha with "centers" warps (the demo generator)."""
        gen = self.checkpoint.generator_config
        return self.cfg.paste_back and self.cfg.detail > 0 and gen.alpha_blend and gen.warp_convention == "centers"

    @torch.no_grad()
    def decode_into(self, source: Source, encoded: EncodedSource, target: FlameSequence) -> np.ndarray:
        """Frame 0 of ``target`` generated and put into the source photo: composited there in one
        resampling of the photo when ``composites_in_frame``, else ``compose(decode(...))``."""
        if not self.composites_in_frame:
            return self.compose(source, self.decode(encoded, target, [0]))[0]
        out = self._decode(encoded, target, [0])
        with self.timings.stage("compose"):
            return self._composite(source, out, 0, source.image)

    def _composite(self, source: Source, out: GeneratorOutput, index: int, into: np.ndarray) -> np.ndarray:
        """Frame ``index`` of ``out`` composited in ``source``'s photo, blended into ``into`` (the photo, or a frame with other faces in)."""
        plan = self._plan(source.image.shape, source.box, self.size)
        return composite_in_frame(plan, source.image, out, self.cfg.detail_transfer, index, into)

    def _image(self, encoded: EncodedSource, out: GeneratorOutput) -> np.ndarray:
        """The decoder's output as uint8 crops: its image, or composited at the detail resolution."""
        if encoded.detail is None:
            return to_uint8(out.rec_img_d.float())
        return to_uint8(composite_at(out, encoded.detail, encoded.guided.cfg.warp_convention, self.cfg.detail_transfer))

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def generate(self, source: Source, target: FlameSequence) -> np.ndarray:
        """Generated crops (T, R, R, 3) uint8 for every frame of ``target``."""
        return np.concatenate(list(self.generate_batches(source, target)))

    def generate_batches(self, source: Source, target: FlameSequence) -> Iterator[np.ndarray]:
        """``generate``, a batch of crops at a time (the source encoded once)."""
        for crops, _ in self._generated(source, target):
            assert crops is not None
            yield crops

    def _generated(self, source: Source, target: FlameSequence,
                   crops: bool = True) -> Iterator[tuple[np.ndarray | None, GeneratorOutput]]:
        """Per batch of ``target``'s frames: the crops and the decoder's output they were made from
        (without ``crops``, None for the crops when ``composites_in_frame``: the frames need only the output)."""
        encoded = self.encode(source)
        graphed = self.capture(encoded)
        for idx in self._batches(len(target)):
            if graphed is None:
                out = self._decode(encoded, target, idx)
            else:
                with self.timings.stage("render"):
                    verts_d = target.image_vertices(self.flame, idx)
                with self.timings.stage("generate"), torch.no_grad():
                    out = graphed(verts_d)
            if not crops and self.composites_in_frame:
                yield None, out
                continue
            with self.timings.stage("generate"), torch.no_grad():
                image = self._image(encoded, out)
            yield image, out  # outside the stage: the consumer's time is its own

    def capture(self, encoded: EncodedSource) -> GraphedDecode | None:
        """Render + decode for this source captured as one CUDA graph, or None to run them eagerly:
        on the CPU, with ``cuda_graph="off"``, or when the capture fails under ``"auto"`` (one line
        says why; ``"on"`` raises instead)."""
        if self.cfg.cuda_graph == "off" or self.device.type != "cuda":
            return None
        print("building the CUDA graph of render + decode (once per video; --cuda-graph off skips it) ...", flush=True)
        try:
            with self.timings.stage("capture"):
                return GraphedDecode(encoded.guided, encoded.encoding, encoded.verts, self.cfg.batch_size, self._autocast(),
                                     cover_s=encoded.cover)
        except RuntimeError as err:
            if self.cfg.cuda_graph == "on":
                raise
            print(f"the CUDA graph capture failed ({str(err).splitlines()[0]}); rendering and decoding eagerly", flush=True)
            return None

    def generate_video(self, sources: Sequence[Source], target: FlameSequence) -> np.ndarray:
        """Video-to-video: crop t generated from ``sources[t]`` (a source video's frame t) and frame t
        of ``target``, in batches."""
        return np.concatenate([self.decode(self._encode([sources[i] for i in idx]), target, idx)
                               for idx in self._batches(len(target))])

    def _batches(self, n: int) -> list[list[int]]:
        """Frame indices 0..n-1 in batches of ``batch_size``."""
        return [list(range(s, min(n, s + self.cfg.batch_size))) for s in range(0, n, self.cfg.batch_size)]

    def compose(self, source: Source | Sequence[Source], crops: np.ndarray | None, driving: Sequence[np.ndarray] | None = None,
                side_by_side: bool = False, others: Sequence[tuple[Source, np.ndarray]] = (),
                outputs: Sequence[GeneratorOutput] | None = None) -> np.ndarray:
        """Final frames: pasted back into the source frame (or the crops), optionally source | driving |
        result. ``source``: one, or one per frame (a source video). ``others``: more faces of the same
        frame with their crops, pasted back too. ``outputs``: the decoder's outputs the crops were
        made from (the first face's, then the others'): with them, when ``composites_in_frame``,
        each face is composited in the photo (``composite_in_frame``: one resampling, sharper)
        instead of its crop pasted back (``crops`` may then be None)."""
        fused = outputs is not None and self.composites_in_frame and isinstance(source, Source)
        if crops is None and not fused:
            raise ValueError("compose needs the crops unless it composites the outputs in the photo")
        n = outputs[0].alpha.shape[0] if crops is None and outputs is not None else len(crops)  # type: ignore[arg-type]
        frames = []
        with self.timings.stage("compose"):
            for i in range(n):
                src = source if isinstance(source, Source) else source[i]
                if fused:
                    assert outputs is not None
                    main = self._composite(src, outputs[0], i, src.image)
                    for k, (other, _) in enumerate(others, 1):
                        main = self._composite(other, outputs[k], i, main)
                elif self.cfg.paste_back:
                    assert crops is not None
                    main = self._paste(src.image, crops[i], src.box)
                    for other, other_crops in others:
                        main = self._paste(main, other_crops[i], other.box)
                else:
                    assert crops is not None
                    main = crops[i]
                if side_by_side:
                    h = main.shape[0]
                    panels = [resize_to_height(src.image, h), resize_to_height(driving[i], h) if driving is not None else None, main]
                    main = np.concatenate([p for p in panels if p is not None], axis=1)
                frames.append(main)
        return np.stack(frames)

    def _paste(self, frame: np.ndarray, crop: np.ndarray, box: CropBox) -> np.ndarray:
        """``paste_back``, its plan kept for the next frames of the same size and box (a video's, a stream's)."""
        return self._plan(frame.shape, box, crop.shape[0])(frame, crop)

    def _plan(self, shape: tuple[int, ...], box: CropBox, n: int) -> PasteBack:
        key = (shape[:2], box, n)
        if key not in self._pastes:
            if len(self._pastes) >= PASTE_PLANS:
                self._pastes.pop(next(iter(self._pastes)))
            self._pastes[key] = PasteBack(shape, box, n)
        return self._pastes[key]

    # -- whole jobs ----------------------------------------------------------------------------
    def animate(self, source_image: np.ndarray, driving_frames: Sequence[np.ndarray], fps: float = 25.0,
                motion: Motion | None = None, side_by_side: bool = False, all_faces: bool = False) -> AnimationResult:
        """Animate a portrait with a driving video (frames as RGB uint8 arrays). ``motion``: the
        official recipe's default is absolute (as ``face_reenact_demo``), gdpw's relative.
        ``all_faces``: every face of a group photo follows the driver, each pasted back in place."""
        return self._collect(self.animate_stream(source_image, driving_frames, fps, motion, side_by_side, all_faces))

    def animate_stream(self, source_image: np.ndarray, driving_frames: Sequence[np.ndarray], fps: float = 25.0,
                       motion: Motion | None = None, side_by_side: bool = False, all_faces: bool = False,
                       crops: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``animate`` a batch at a time: (frames, crops) per batch, for consumers that overlap
        their work (writing the video) with the generation (``gdpw.common.background.Background``).
        Without ``crops``, a consumer of the frames alone: the crops are None where the frames do not
        need them (``composites_in_frame``), which saves their making (at twice the face's size in the photo)."""
        self.timings.clear()
        sources = self.prepare_sources(source_image) if all_faces else [self.prepare_source(source_image)]
        driving = self.track_driving(driving_frames, fps)
        yield from self.drive_stream(sources, driving.params, motion, driving_frames, side_by_side, crops)

    def animate_motion(self, source_image: np.ndarray, motion_file: MotionFile, motion: Motion | None = None,
                       all_faces: bool = False) -> AnimationResult:
        """Animate a portrait (or every face of a group photo) with a motion file's performance (``gdpw.flame.motion``)."""
        return self._collect(self.animate_motion_stream(source_image, motion_file, motion, all_faces))

    def animate_motion_stream(self, source_image: np.ndarray, motion_file: MotionFile, motion: Motion | None = None,
                              all_faces: bool = False, crops: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``animate_motion`` a batch at a time (see ``animate_stream``, and its ``crops``)."""
        self.timings.clear()
        motion = motion or self.default_motion
        if motion == "absolute" and motion_file.recipe != self.recipe:
            raise ConfigError(f"the motion was fitted in {motion_file.recipe}-recipe crops but this checkpoint uses the "
                              f"{self.recipe} recipe: absolute motion would misplace the head (relative motion works)")
        sources = self.prepare_sources(source_image) if all_faces else [self.prepare_source(source_image)]
        yield from self.drive_stream(sources, motion_file.params, motion, crops=crops)

    def animate_video(self, source_frames: Sequence[np.ndarray], fps: float, driving: FlameSequence,
                      motion: Motion | None = None, keep_source_pose: bool = False,
                      driving_frames: Sequence[np.ndarray] | None = None, side_by_side: bool = False) -> AnimationResult:
        """Video-to-video: source frame t re-driven by driving frame t (the shorter sets the length;
        a one-frame driver holds for the whole source). The source video is tracked with one
        identity; expression, jaw and gaze follow the driver as a portrait's would, moved from the
        source's first frame. The head pose and camera are the driver's too, or with
        ``keep_source_pose`` each source frame's own (only the face changes: dubbing)."""
        self.timings.clear()
        motion = motion or self.default_motion
        if len(driving) == 1:  # one driving image holds for the whole source
            driving = driving.repeat(len(source_frames))
            driving_frames = None if driving_frames is None else [driving_frames[0]] * len(source_frames)
        n = min(len(source_frames), len(driving))
        frames = list(source_frames[:n])
        track = self.tracker.track(frames, fps)
        own = track.params
        target = transfer_motion(own.select([0]), driving.select(list(range(n))), motion, self.flame.lid_components)
        if keep_source_pose:
            target = target.replace(global_pose=own.global_pose, neck_pose=own.neck_pose, camera=own.camera)
        sources = [Source(f, box, crop(f, box, self.size), own.select([t])) for t, (f, box) in enumerate(zip(frames, track.boxes))]
        crops = self.generate_video(sources, target)
        shown = None if driving_frames is None else list(driving_frames)[:n]
        return AnimationResult(self.compose(sources, crops, shown, side_by_side), crops, dict(self.timings))

    @property
    def default_motion(self) -> Motion:
        """Absolute for the official recipe (as the paper's demo), relative for gdpw's."""
        return "absolute" if self.recipe == "official" else "relative"

    def drive(self, sources: Sequence[Source], driving: FlameSequence, motion: Motion | None = None,
              driving_frames: Sequence[np.ndarray] | None = None, side_by_side: bool = False) -> AnimationResult:
        """Prepared sources (faces of one frame) driven by FLAME parameters over time (fitted,
        edited or from a motion file); the result's crops are the first face's."""
        return self._collect(self.drive_stream(sources, driving, motion, driving_frames, side_by_side))

    def drive_stream(self, sources: Sequence[Source], driving: FlameSequence, motion: Motion | None = None,
                     driving_frames: Sequence[np.ndarray] | None = None, side_by_side: bool = False,
                     crops: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``drive`` a batch at a time: (composed frames, the first face's crops) per batch (``crops``: as ``animate_stream``'s)."""
        motion = motion or self.default_motion
        streams = [self._generated(s, transfer_motion(s.fit, driving, motion, self.flame.lid_components), crops) for s in sources]
        start = 0
        for batch in zip(*streams):
            made, outs = [c for c, _ in batch], [o for _, o in batch]
            n = outs[0].alpha.shape[0]
            shown = None if driving_frames is None else driving_frames[start : start + n]
            others = list(zip(sources[1:], made[1:]))
            yield self.compose(sources[0], made[0], shown, side_by_side, others, outs), made[0]  # type: ignore[arg-type]
            start += n

    def _collect(self, batches: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> AnimationResult:
        parts = list(batches)
        crops = [c for _, c in parts if c is not None]
        assert len(crops) == len(parts), "a collected animation keeps its crops"
        return AnimationResult(np.concatenate([f for f, _ in parts]), np.concatenate(crops), dict(self.timings))

    def animate_fit(self, source: Source, target: FlameSequence) -> AnimationResult:
        """Drive a prepared source with explicit FLAME parameters (edits, sweeps, the demo)."""
        return self._collect(self.animate_fit_stream(source, target))

    def animate_fit_stream(self, source: Source, target: FlameSequence,
                           crops: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``animate_fit`` a batch at a time: (frames, crops), so a long sweep is never held whole (``crops``: as ``animate_stream``'s)."""
        for made, out in self._generated(source, target, crops):
            yield self.compose(source, made, outputs=[out]), made


def stream_frames(batches: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> Iterator[np.ndarray]:
    """The frames of a stream's batches (``animate_stream`` and the like: (frames, crops) each), one at a time."""
    for frames, _ in batches:
        yield from frames


@torch.no_grad()
def composite_in_frame(plan: PasteBack, frame: np.ndarray, out: GeneratorOutput, transfer: float = 1.0, index: int = 0,
                       into: np.ndarray | None = None) -> np.ndarray:
    """An alpha-blending generator's result ("centers" warps; frame ``index`` of ``out``)
    composited straight into ``frame``, the source photo whose box ``plan`` pastes into, the photo
    resampled once; blended into ``into`` instead when given (a frame with other faces already in).

    At each frame pixel of the box, the network's image, alpha, final flow and warped source are
    read at its place in the crop, and the photo where the flow sends it: ``composite_at`` at the
    photo's own resolution without its crop, warp and paste-back resamplings (each bilinear
    resampling blurs). Where alpha is high, ``transfer`` times the warped photo's detail finer than
    the network's pixels (the warped photo less the network's own warped source) is added."""
    into = frame if into is None else into
    if plan.grid is None:
        return into.copy()
    dev = out.alpha.device
    grid = plan.grid.to(dev)  # (1, h, w, 2): the box's frame pixels in the crop's coordinates
    maps = torch.cat([out.out_img, out.alpha, out.flows["x1"], out.warp_img_s], 1)[index : index + 1].float()
    image, alpha, flow, coarse = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border",
                                               align_corners=False)[0].split([3, 1, 2, 3])
    scale, offset = (t.to(dev) for t in plan.to_frame)  # crop coordinates to the frame's (-1..1)
    size = torch.tensor([frame.shape[1], frame.shape[0]], device=dev)
    # the part of the photo the flow reaches (pixels, clamped to the photo), bounded by the grid's and the flow's extremes
    corners = (grid[0, 0, 0], grid[0, -1, -1])  # the grid's least and greatest x and y
    reach = [(g + f) * scale + offset for g, f in zip(corners, flow.flatten(1).aminmax(dim=1))]
    lo = ((reach[0] + 1) * size / 2 - 1).floor().clamp_min(0).long()
    hi = torch.minimum(((reach[1] + 1) * size / 2 + 1).ceil().long(), size.long())
    lo = torch.minimum(lo, hi - 1)
    x0, y0, x1, y1 = (*lo.tolist(), *hi.tolist())
    part = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1])).to(dev).permute(2, 0, 1)[None].float() / 255
    # grid + flow (crop coordinates) to the part's own -1..1, one affine map
    a = scale * size / (hi - lo)
    b = ((offset + 1) * size / 2 - lo) / (hi - lo) * 2 - 1
    where = torch.addcmul(b, grid[0] + flow.permute(1, 2, 0), a)
    warped = F.grid_sample(part, where[None], mode="bilinear", padding_mode="border", align_corners=False)[0]
    # image * alpha + warped * (1 - alpha) + transfer * alpha * (warped - coarse)
    paint = image - transfer * coarse
    if transfer != 1.0:
        paint += (transfer - 1) * warped
    result = torch.addcmul(warped, alpha, paint)
    return plan.blend(into, (result.clamp_(0, 1) * 255).permute(1, 2, 0).cpu())


def source_from_fit(image: np.ndarray, fit: FlameSequence) -> Source:
    """A source whose fit is known (a synthetic render): the whole image is the crop."""
    size = image.shape[0]
    return Source(image, CropBox(0.0, 0.0, float(size)), image, fit)
