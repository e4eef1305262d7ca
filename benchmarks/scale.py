"""Preprocessing throughput on this machine, side by side in one run, and what it means for VoxCeleb.

    python benchmarks/scale.py [--clips 8] [--frames 32] [--size 256]

Makes synthetic talking-head clips (the demo head), then preprocesses them with each runner of
the same job (``gdpw.common.jobs``): this process, a local pool of 2, Ray with 1 and 2 workers
(if Ray is installed). Prints clips/s and frames/s for each and their ratio to the single process,
the per-frame cost of each stage (decode, track = detect + fit, crop + write) measured in this
process, and the hours VoxCeleb1 and VoxCeleb2 would take on 1, 10 and 100 machines like this one
(projected from the measured frames/s: say so when quoting them).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

# public figures: VoxCeleb1 has 153,516 utterances (22,496 videos), VoxCeleb2 1,128,246 utterances
VOXCELEB = {"VoxCeleb1": 153_516, "VoxCeleb2": 1_128_246}
FRAMES_PER_UTTERANCE = 200  # about 8 s at 25 fps; gdpw preprocess reads at most --max-frames (300)


def make_clips(root: Path, clips: int, frames: int, size: int) -> None:
    from gdpw.data.synth import SynthConfig, render_clip
    from gdpw.data.video import write_video
    from gdpw.flame import FLAME

    flame = FLAME()
    for i in range(clips):
        clip = render_clip(flame, SynthConfig(size=size, frames_per_clip=frames, seed=5), 2, i)
        (root / f"id{i % 4:03d}").mkdir(parents=True, exist_ok=True)
        write_video(root / f"id{i % 4:03d}" / f"{i:05d}.mp4", clip.images, 25.0)


def stage_costs(src: Path, cfg) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Seconds per frame of each stage, over every clip, in this process."""
    import torch

    from gdpw.common.crop import crop
    from gdpw.common.errors import FaceDetectionError
    from gdpw.data.dataset import write_clip
    from gdpw.data.preprocess import find_videos, load_worker
    from gdpw.data.video import read_video

    worker = load_worker(cfg)
    totals = {"decode": 0.0, "track (detect + fit)": 0.0, "crop + vertices + write": 0.0}
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, video in enumerate(find_videos(src)):
            t0 = time.perf_counter()
            frames, info = read_video(video, cfg.max_frames)
            t1 = time.perf_counter()
            try:
                track = worker.tracker.track(list(frames), info.fps)
            except FaceDetectionError:  # the clip every runner left out
                continue
            t2 = time.perf_counter()
            crops = np.stack([crop(f, box, cfg.size) for f, box in zip(frames, track.boxes)])
            with torch.no_grad():
                verts = track.params.image_vertices(worker.flame).numpy()
            write_clip(Path(tmp) / f"{k}.npz", crops, verts.astype(np.float32), track.params)
            t3 = time.perf_counter()
            totals["decode"] += t1 - t0
            totals["track (detect + fit)"] += t2 - t1
            totals["crop + vertices + write"] += t3 - t2
            n += len(frames)
    worker.close()
    return {k: v / n for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()

    from gdpw.common.jobs import Runner
    from gdpw.data.preprocess import PreprocessConfig, preprocess

    work = Path(tempfile.mkdtemp(prefix="gdpw_scale_"))
    try:
        src = work / "videos"
        make_clips(src, args.clips, args.frames, args.size)
        cfg = PreprocessConfig(size=args.size)
        runners = {"this process": Runner(), "local pool, 2 workers": Runner(workers=2)}
        try:
            import ray  # noqa: F401

            runners["Ray, 1 worker"] = Runner(engine="ray", workers=1)
            runners["Ray, 2 workers"] = Runner(engine="ray", workers=2)
        except ImportError:
            print("Ray is not installed: its rows are left out (pip install 'gdpw[ray]')")
        rates, done = {}, None
        for name, runner in runners.items():
            out = work / name.replace(" ", "_").replace(",", "")
            start = time.perf_counter()
            clips, errors = preprocess(src, out, cfg, runner, progress=False)
            wall = time.perf_counter() - start  # Ray's start-up and the workers' set-up included
            names = sorted(c.name for c in clips)  # a synthetic clip MediaPipe rejects is left out, by every runner
            assert done is None or names == done, (names, done)
            done, frames = names, sum(c.frames for c in clips)
            rates[name] = frames / wall
        base = rates["this process"]
        print(f"\n{len(done)} clips x {args.frames} frames at {args.size} px ({args.clips - len(done)} rejected), measured here "
              "(wall time including worker start-up):\n")
        print("| runner | clips/s | frames/s | vs this process |\n| --- | --- | --- | --- |")
        for name, rate in rates.items():
            print(f"| {name} | {rate * len(done) / frames:.3f} | {rate:.1f} | {rate / base:.2f}x |")
        print("\nper-frame cost of each stage, this process (measured):\n")
        print("| stage | ms per frame |\n| --- | --- |")
        for stage, sec in stage_costs(src, cfg).items():
            print(f"| {stage} | {sec * 1000:.1f} |")
        best = max(rates.values())
        print(f"\nVoxCeleb at {FRAMES_PER_UTTERANCE} frames per utterance, projected from the best measured rate "
              f"({best:.1f} frames/s per machine of this size):\n")
        print("| dataset | utterances | 1 machine | 10 machines | 100 machines |\n| --- | --- | --- | --- | --- |")
        for dataset, n in VOXCELEB.items():
            hours = n * FRAMES_PER_UTTERANCE / best / 3600
            print(f"| {dataset} | {n:,} | {hours:,.0f} h | {hours / 10:,.0f} h | {hours / 100:,.1f} h |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
