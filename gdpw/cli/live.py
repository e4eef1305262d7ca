"""``gdpw live``: a portrait driven live by a camera, in the browser or from a local camera."""

from __future__ import annotations

import argparse
import sys
import time

from gdpw.cli.app import EXCLUDED, app_config, launch
from gdpw.common.config import add_arguments, from_args
from gdpw.common.errors import UsageError
from gdpw.pipeline import AnimateConfig
from gdpw.pipeline.live import LiveConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("live", help="drive a portrait live with a webcam (browser) or a local camera",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  gdpw live --source face.jpg                          # the web UI's Live tab: the browser's webcam drives it
  gdpw live --source face.jpg --camera 0 -o live.mp4   # /dev/video0, headless; the shown frames recorded
  gdpw live --source face.jpg --camera talk.mp4 -o live.mp4 --max-frames 200   # a video played as a camera
  gdpw live --source face.jpg --camera 0 --save-motion me.motion.npz && gdpw animate --source other.jpg --driving me.motion.npz -o out.mp4

Motion is relative to the first frame with a face (the neutral); frames that arrive while one is
being animated are dropped, not queued. The latency (capture to result) and fps are printed.""")
    p.add_argument("--source", required=True, help="the portrait to animate")
    p.add_argument("--camera", help="a local camera (index or /dev/videoN) or a video file played at its own rate; "
                                    "default: serve the web page, whose webcam drives the portrait")
    p.add_argument("-o", "--output", help="with --camera: record the shown frames as an mp4")
    p.add_argument("--max-frames", type=int, help="with --camera: stop after N shown frames")
    p.add_argument("--save-motion", metavar="PATH",
                   help="with --camera: also write the performance as a motion file (.motion.npz) that drives other portraits")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    add_arguments(p, LiveConfig)
    add_arguments(p, AnimateConfig, exclude=EXCLUDED)
    p.add_argument("--checkpoint", help="gdpw or released checkpoint; default: the shipped demo generator")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gdpw.data.video import read_image

    portrait = read_image(args.source)  # a bad path fails before anything starts
    live = from_args(LiveConfig, args)
    if args.camera is None:
        if args.output or args.max_frames or args.save_motion:
            raise UsageError("-o, --max-frames and --save-motion go with --camera (the browser shows the stream itself)")
        launch(args, [args.checkpoint] if args.checkpoint else [], app_config(args), live_portrait=portrait, live=live)
        return
    from dataclasses import replace

    from gdpw.data.video import write_video
    from gdpw.flame import FlameSequence
    from gdpw.flame.motion import save_motion
    from gdpw.pipeline import Animator
    from gdpw.pipeline.live import CameraReader, LiveSession, run_camera

    cfg = replace(app_config(args), checkpoint=args.checkpoint)
    with Animator(cfg) as animator:
        session = LiveSession(animator, portrait, live)
        camera = CameraReader(args.camera)
        last_print = [0.0]

        def show(frame) -> None:  # type: ignore[no-untyped-def]
            now = time.perf_counter()
            if now - last_print[0] > 1.0:  # a status line a second
                print(f"\r{session.stats.line(frame.fps)}", end="", file=sys.stderr, flush=True)
                last_print[0] = now

        start = time.perf_counter()
        try:
            shown = run_camera(session, camera, args.max_frames, show)
        finally:
            camera.close()
        elapsed = time.perf_counter() - start
        print(f"\r{session.stats.line(session.fps)}", file=sys.stderr)
    if not shown:
        raise UsageError(f"the camera {args.camera!r} gave no frames")
    fps = max(1.0, len(shown) / elapsed)  # the rate the frames were shown at
    if args.output:
        n = write_video(args.output, [f.image for f in shown], fps)
        print(f"wrote {args.output}: {n} frames at {fps:.1f} fps")
    if args.save_motion:
        targets = [f.target for f in shown if f.target is not None]
        if not targets:
            raise UsageError("no frame had a face: no motion to save")
        save_motion(args.save_motion, FlameSequence.cat(targets), animator.flame, fps, animator.size, animator.recipe)
        print(f"wrote {args.save_motion}: {len(targets)} frames of motion at {fps:.1f} fps")
