"""Videos (VoxCeleb or any talking-head footage) to a gdpw dataset: crops, FLAME fits, shards.

Each video becomes one clip shard: tracked by ``gdpw.fit.FaceTracker`` (one crop box per clip,
from its first detected face, the same recipe as ``gdpw animate``), cropped to ``size``; the
shard stores the crops, the fitted parameters with their orthographic cameras and the
image-space vertices. Identities are the videos' grandparent folders (VoxCeleb's ``id/video/clip.mp4``) or
their parent folders. Shards already written are skipped, so a run resumes; videos are spread
over worker processes. A bad video (unreadable, no face, several faces) is skipped and listed in
``failures.txt``; anything else (a full disk, a missing asset, a bug) stops the run, keeping the
shards already written.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from gdpw.common.config import flat
from gdpw.common.errors import DatasetError, FaceDetectionError, UsageError, VideoError
from gdpw.common.files import atomic_write, remove_partial
from gdpw.common.jobs import Job, Runner, Shard, run_job
from gdpw.fit import FaceTracker, TrackConfig
from gdpw.flame import FLAME, HeadConfig

from .dataset import ClipInfo, read_index, write_clip, write_index

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 256  # crop side in pixels
    max_frames: int = 300  # frames read per video
    heldout: tuple[str, ...] = ()  # identities for the 'test' split
    head: HeadConfig = flat(HeadConfig)
    track: TrackConfig = flat(TrackConfig)


def find_videos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)


def clip_name(video: Path, root: Path) -> tuple[str, str]:
    """(identity, clip name) of a video below ``root``."""
    rel = video.relative_to(root).with_suffix("")
    parts = rel.parts
    identity = parts[0] if len(parts) > 1 else rel.name
    return identity, "__".join(parts)


@dataclass(frozen=True)
class VideoItem:
    """One video of a preprocessing job and the clip shard it becomes."""

    video: Path
    shard: Path
    key: str  # its path relative to the input: stable across machines (what --shard slices by)
    identity: str
    split: str


@dataclass
class Worker:
    """What a worker loads once: the FLAME model and the tracker (MediaPipe, the fitter)."""

    cfg: PreprocessConfig
    flame: FLAME
    tracker: FaceTracker

    def close(self) -> None:
        self.tracker.close()


def load_worker(cfg: PreprocessConfig) -> Worker:
    flame = cfg.head.load()
    return Worker(cfg, flame, FaceTracker(flame, cfg.track, crop_size=cfg.size, blendshapes=cfg.head.load_blendshapes(),
                                          regressor=cfg.head.regressor_path()))


def process_video(worker: Worker, item: VideoItem) -> int:
    """Crop, fit and write one video's clip shard (atomically); its frame count."""
    import torch

    from gdpw.common.crop import crop

    from .video import read_video

    cfg = worker.cfg
    frames, info = read_video(item.video, cfg.max_frames)
    track = worker.tracker.track(list(frames), info.fps)
    crops = np.stack([crop(f, box, cfg.size) for f, box in zip(frames, track.boxes)])
    with torch.no_grad():
        verts = track.params.image_vertices(worker.flame).numpy()
    write_clip(item.shard, crops, verts.astype(np.float32), track.params)
    return len(track.params)


def shard_written(item: VideoItem) -> bool:
    return item.shard.exists()


def preprocess_job(src: str | os.PathLike[str], out: str | os.PathLike[str], cfg: PreprocessConfig) -> Job[Worker, VideoItem, int]:
    """Every video under ``src`` as one job: items in a stable order, a clip shard each under ``out``."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"no such video or folder: {src}")
    videos = find_videos(src) if src.is_dir() else [src]
    if not videos:
        raise VideoError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {src}")
    root = src if src.is_dir() else src.parent
    items = []
    for v in videos:
        identity, name = clip_name(v, root)
        items.append(VideoItem(v, out / "clips" / f"{name}.npz", v.relative_to(root).as_posix(), identity,
                               "test" if identity in cfg.heldout else "train"))
    # the video's fault: skipped and listed, the run goes on; anything else stops it
    return Job("preprocess", items, key=_key, setup=partial(load_worker, cfg), run=process_video, done=shard_written,
               bad_item=(VideoError, FaceDetectionError), close=Worker.close)


def _key(item: VideoItem) -> str:
    return item.key


def preprocess(src: str | os.PathLike[str], out: str | os.PathLike[str], cfg: PreprocessConfig,
               runner: Runner | None = None, progress: bool = True, merge: bool = False) -> tuple[list[ClipInfo], list[str]]:
    """Preprocess the videos of ``runner.shard`` (all without one) that have no shard yet; the
    clips written and the bad videos (``path: error``). Without a shard the dataset index and
    ``failures.txt`` are written; a shard writes ``failures.J-of-N.txt`` and leaves the index to
    ``merge`` (no processing: the index from every shard's clips, the videos still missing listed)."""
    runner = runner or Runner()
    out = Path(out)
    job = preprocess_job(src, out, cfg)
    _check_size(out, cfg.size)
    if merge:
        if runner.shard is not None:
            raise UsageError("--merge writes the index of all shards: run it without --shard")
        num_verts = cfg.head.load().num_verts
        reasons = _recorded_failures(out)
        errors = [f"{i.video}: {reasons.get(str(i.video), 'not processed by any shard yet')}"
                  for i in job.items if not i.shard.exists()]
    else:
        num_verts, cfg = _preflight(cfg)
        outcomes = run_job(replace(job, setup=partial(load_worker, cfg)), runner, progress)  # as the preflight found usable
        for o in outcomes:  # what a killed worker left of a clip written since (or before)
            if o.ok:
                remove_partial(o.item.shard)
        errors = [o.error if o.error.startswith(str(o.item.video)) else f"{o.item.video}: {o.error}"
                  for o in outcomes if o.error is not None]
        if runner.shard is not None:  # the index is the merge's
            _write_failures(out / f"failures.{Shard.parse(runner.shard).name}.txt", errors)
            return [_clip_info(o.item) for o in outcomes if o.ok], errors
    clips = [_clip_info(i) for i in job.items if i.shard.exists()]
    write_index(out, sorted(clips, key=lambda c: c.name), cfg.size, num_verts, {"crop": cfg.track.recipe()})
    _write_failures(out / "failures.txt", errors)
    return clips, errors


def _clip_info(item: VideoItem) -> ClipInfo:
    name = item.shard.stem
    return ClipInfo(name, item.identity, item.split, _shard_header(item.shard, "images")[0], item.shard)


def _shard_header(path: Path, key: str) -> tuple[int, ...]:
    """The shape of array ``key`` in a clip shard, read from its header (nothing decompressed but that)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"npy format version {version}")
            shape, _, _ = read(fh)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: unreadable clip shard ({type(err).__name__}: {err})") from None
    return tuple(shape)


def _write_failures(path: Path, errors: list[str]) -> None:
    if errors:
        with atomic_write(path) as fh:
            fh.write("".join(e + "\n" for e in errors).encode())
    elif path.exists():
        path.unlink()


def _recorded_failures(out: Path) -> dict[str, str]:
    """Each video's error as the shards recorded it (``failures.J-of-N.txt``)."""
    reasons = {}
    for path in sorted(out.glob("failures.*-of-*.txt")):
        for line in path.read_text().splitlines():
            video, sep, error = line.partition(": ")
            if sep:
                reasons[video] = error
    return reasons


def _check_size(out: Path, size: int) -> None:
    """Refuse to add ``size``-pixel clips to a dataset of another size (its index, or a shard, says which)."""
    if (out / "dataset.json").is_file():
        index, _ = read_index(out)
        found = index.get("image_size")
    else:
        written = sorted(p for p in (out / "clips").glob("*.npz") if not p.name.startswith(".")) if (out / "clips").is_dir() else []
        shard = written[0] if written else None
        found = _shard_header(shard, "images")[1] if shard is not None else size
    if found != size:
        raise UsageError(f"{out} holds {found}-pixel clips; use --size {found} to resume it, or another -o for {size}-pixel clips")


def _preflight(cfg: PreprocessConfig) -> tuple[int, PreprocessConfig]:
    """Fail before the first video for what would fail on every one (no landmark embedding, no
    DECA model); the FLAME model's vertex count, and the config the workers use: with a missing or
    unusable regressor (said in one line, here), landmark fitting."""
    flame = cfg.head.load()
    with FaceTracker(flame, cfg.track, regressor=cfg.head.regressor_path()) as tracker:
        if cfg.track.fitter != "deca":
            _ = tracker.fitter
        if cfg.track.fitter == "regressor" and tracker.regressor is None:
            cfg = replace(cfg, track=replace(cfg.track, fitter="landmarks"))
    return flame.num_verts, cfg
