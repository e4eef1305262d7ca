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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gdpw.common.config import flat
from gdpw.common.errors import FaceDetectionError, UsageError, VideoError
from gdpw.common.files import atomic_write
from gdpw.fit import TrackConfig
from gdpw.flame import HeadConfig

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


def process_video(video: Path, shard: Path, cfg: PreprocessConfig) -> int:
    """Crop, fit and write one video; returns its frame count."""
    import torch

    from gdpw.common.crop import crop
    from gdpw.fit import FaceTracker

    from .video import read_video

    frames, info = read_video(video, cfg.max_frames)
    flame = cfg.head.load()
    with FaceTracker(flame, cfg.track, crop_size=cfg.size, blendshapes=cfg.head.load_blendshapes()) as tracker:
        track = tracker.track(list(frames), info.fps)
    crops = np.stack([crop(f, box, cfg.size) for f, box in zip(frames, track.boxes)])
    with torch.no_grad():
        verts = track.params.image_vertices(flame).numpy()
    write_clip(shard, crops, verts.astype(np.float32), track.params)
    return len(track.params)


def _job(args: tuple[Path, Path, PreprocessConfig]) -> tuple[Path, int, str | None]:
    video, shard, cfg = args
    try:
        return video, process_video(video, shard, cfg), None
    except (VideoError, FaceDetectionError) as err:  # the video's fault: listed, the run goes on
        return video, 0, str(err)


def preprocess(src: str | os.PathLike[str], out: str | os.PathLike[str], cfg: PreprocessConfig, workers: int = 1,
               progress: bool = True) -> tuple[list[ClipInfo], list[str]]:
    from tqdm import tqdm

    from .dataset import load_clip

    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"no such video or folder: {src}")
    videos = find_videos(src) if src.is_dir() else [src]
    if not videos:
        raise VideoError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {src}")
    root = src if src.is_dir() else src.parent
    _check_size(out, cfg.size)
    num_verts = _preflight(cfg)
    todo, clips, errors = [], [], []
    for v in videos:
        identity, name = clip_name(v, root)
        shard = out / "clips" / f"{name}.npz"
        split = "test" if identity in cfg.heldout else "train"
        if shard.exists():
            images = load_clip(shard)["images"]
            if images.shape[1] != cfg.size:
                raise UsageError(f"{out} holds {images.shape[1]}-pixel clips ({shard.name}); use --size {images.shape[1]} "
                                 f"to resume it, or another -o for {cfg.size}-pixel clips")
            clips.append(ClipInfo(name, identity, split, int(images.shape[0]), shard))
        else:
            todo.append((v, shard, cfg, ClipInfo(name, identity, split, 0, shard)))
    jobs = [(v, s, c) for v, s, c, _ in todo]
    infos = {v: info for v, _, _, info in todo}
    results = map(_job, jobs) if workers <= 1 else ProcessPoolExecutor(workers).map(_job, jobs)
    for video, n, err in tqdm(results, total=len(jobs), desc="preprocess", unit="video", disable=not progress):
        if err is not None:
            errors.append(f"{video}: {err}")
        else:
            clips.append(replace(infos[video], frames=n))
    write_index(out, sorted(clips, key=lambda c: c.name), cfg.size, num_verts, {"crop": cfg.track.recipe()})
    failures = out / "failures.txt"
    if errors:
        with atomic_write(failures) as fh:
            fh.write("".join(e + "\n" for e in errors).encode())
    elif failures.exists():
        failures.unlink()
    return clips, errors


def _check_size(out: Path, size: int) -> None:
    """Refuse to add ``size``-pixel clips to a dataset of another size (its index says which)."""
    if (out / "dataset.json").is_file():
        index, _ = read_index(out)
        if index.get("image_size") != size:
            raise UsageError(f"{out} is a dataset of {index.get('image_size')}-pixel clips; use --size "
                             f"{index.get('image_size')} to resume it, or another -o for {size}-pixel clips")


def _preflight(cfg: PreprocessConfig) -> int:
    """Fail before the first video for what would fail on every one (no landmark embedding, no
    DECA model); the FLAME model's vertex count."""
    from gdpw.fit import FaceTracker

    flame = cfg.head.load()
    with FaceTracker(flame, cfg.track) as tracker:
        if cfg.track.fitter == "landmarks":
            _ = tracker.fitter
    return flame.num_verts
