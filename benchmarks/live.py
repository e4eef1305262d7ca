"""End-to-end latency of live animation: a synthetic talking head turning in front of a camera
(a clip played at camera rate on the camera thread, as ``gdpw live --camera`` reads one), each
newest frame tracked, animated and shown, frames that came meanwhile dropped.

Prints, per device (the CPU, and CUDA when there is one), the latency from capture to the shown
result (median and 90th percentile), the shown frame rate and its ratio to the camera's, the share
of camera frames dropped, and milliseconds per shown frame in each stage (detect, fit, render,
generate). The first frame (the full reference fit) is left out of the latency figures.

    python benchmarks/live.py [--seconds 10] [--camera-fps 25] [--iterations N] [--tracking fitting|regressor] [--checkpoint CKPT]

``--tracking``: each frame fitted to landmarks (L-BFGS from the previous frame) or read by the
head's FLAME regressor (``--iterations``: L-BFGS steps after it); by default both, side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gdpw.data.synth import SynthConfig, head_turn, render_clip
from gdpw.data.video import write_video
from gdpw.flame import FLAME
from gdpw.pipeline import AnimateConfig, Animator
from gdpw.pipeline.live import CameraReader, LiveConfig, LiveFrame, LiveSession, run_camera


def camera_clip(path: Path, seconds: float, fps: float) -> np.ndarray:
    """Write the camera's clip (a head turning twice while talking); returns the portrait to animate."""
    flame = FLAME()
    cfg = SynthConfig(size=256, frames_per_clip=max(2, round(seconds * fps)), seed=7, fps=fps)
    clip = render_clip(flame, cfg, 1, 1, motion=head_turn(flame, cfg, 1, 1, turns=2.0))
    write_video(path, clip.images, fps)
    return render_clip(flame, SynthConfig(size=256, frames_per_clip=1, seed=7), 3, 0).images[0]


def run(device: str, tracking: str, portrait: np.ndarray, video: Path, args: argparse.Namespace) -> float:
    """One stream; prints its line and returns its median latency (ms)."""
    with Animator(AnimateConfig(checkpoint=args.checkpoint, device=device)) as animator:
        session = LiveSession(animator, portrait, LiveConfig(iterations=args.iterations, tracking=tracking))  # type: ignore[arg-type]
        animator.timings.clear()
        shown_at: list[float] = []

        def show(frame: LiveFrame) -> None:
            shown_at.append(time.perf_counter())
            if len(shown_at) == 1:  # the stages per frame after the reference (its full fit is once per stream)
                animator.timings.clear()

        camera = CameraReader(str(video))
        try:
            shown = run_camera(session, camera, show=show)
        finally:
            camera.close()
    lat = np.array(session.stats.latencies[1:]) * 1000
    span = shown_at[-1] - shown_at[1] if len(shown_at) > 2 else float("nan")
    fps = (len(shown_at) - 2) / span if len(shown_at) > 2 else float("nan")
    per_frame = {k: v / max(1, len(shown) - 1) * 1000 for k, v in animator.timings.items()}
    stages = " ".join(f"{k} {v:.1f}" for k, v in per_frame.items())
    print(f"{device:5s} {tracking:9s} latency median {np.median(lat):6.0f} ms  p90 {np.percentile(lat, 90):6.0f} ms | "
          f"shown {fps:5.1f} fps = {fps / camera.fps:.2f}x the camera's {camera.fps:.0f} | "
          f"dropped {session.stats.dropped / max(1, camera.captured):.0%} of {camera.captured} | "
          f"without a face {session.stats.missed} | ms per frame: {stages}")
    return float(np.median(lat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the camera clip")
    parser.add_argument("--camera-fps", type=float, default=25.0)
    parser.add_argument("--iterations", type=int, help="L-BFGS steps per frame (default: LiveConfig's)")
    parser.add_argument("--tracking", choices=["fitting", "regressor"], help="LiveConfig.tracking (default: both, side by side)")
    parser.add_argument("--checkpoint", help="default: the shipped demo generator")
    args = parser.parse_args()
    torch.manual_seed(0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "camera.mp4"
        portrait = camera_clip(video, args.seconds, args.camera_fps)
        print(f"camera: {args.seconds:.0f} s at {args.camera_fps:.0f} fps (synthetic head turning twice); "
              f"{torch.get_num_threads()} CPU threads")
        for device in devices:
            medians = {t: run(device, t, portrait, video, args) for t in ([args.tracking] if args.tracking else ["fitting", "regressor"])}
            if len(medians) == 2:
                print(f"{device:5s} regressor / fitting median latency: {medians['regressor'] / medians['fitting']:.2f}x")


if __name__ == "__main__":
    main()
