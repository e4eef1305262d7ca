"""``gdpw animate``, ``gdpw edit``, ``gdpw frontalize``, ``gdpw fit`` and ``gdpw demo``."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gdpw.common.background import Background
from gdpw.common.config import add_arguments, from_args
from gdpw.common.errors import FaceDetectionError, UsageError, VideoError
from gdpw.common.files import atomic_write, check_output
from gdpw.common.jobs import Job, Runner, run_job
from gdpw.flame.motion import is_motion_file, load_motion, save_motion

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _common(p: argparse.ArgumentParser) -> None:
    """Every field of ``AnimateConfig`` (and its FLAME and tracking sections) as a flag."""
    from gdpw.pipeline import AnimateConfig

    add_arguments(p, AnimateConfig)


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gdpw.pipeline import AnimateConfig

    return from_args(AnimateConfig, args)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("animate", help="animate a portrait with a driving video", formatter_class=fmt, epilog="""examples:
  gdpw animate --source face.jpg --driving talk.mp4 -o out.mp4
  gdpw animate --source faces/ --driving talk.mp4 -o outs/ --side-by-side     # batch: every photo of a folder
  gdpw animate --source faces/ --driving talk.mp4 -o outs/ --engine ray --address auto --workers 16
  gdpw fit --input talk.mp4 -o talk.motion.npz && gdpw animate --source face.jpg --driving talk.motion.npz -o out.mp4
  gdpw animate --source face.jpg --driving expression.jpg -o out.png        # one driving image, one image out
  gdpw animate --source interview.mp4 --driving talk.mp4 -o dubbed.mp4 --keep-source-pose   # video-to-video
  gdpw animate --source face.jpg --driving talk.mp4 -o out.mp4 --checkpoint released.pth --flame generic_model.pkl \\
      --landmark-embedding landmark_embedding.npy --fit.iterations 600""")
    p.add_argument("--source", required=True,
                   help="portrait image, a folder of them (batch mode), or a video (video-to-video: each source "
                        "frame re-driven by the matching driving frame; the source's audio kept)")
    p.add_argument("--driving", required=True,
                   help="driving video, a driving image (writes an image), or a motion file (.motion.npz from gdpw fit)")
    p.add_argument("-o", "--output", required=True, help="output .mp4 (a folder in batch mode)")
    p.add_argument("--motion", choices=["relative", "absolute"],
                   help="relative to the first driving frame, or absolute (default: absolute for the official crop "
                        "recipe, as the paper's demo; relative otherwise)")
    p.add_argument("--absolute", action="store_const", dest="motion", const="absolute", help="same as --motion absolute")
    p.add_argument("--side-by-side", action="store_true", help="source | driving | result")
    p.add_argument("--all-faces", action="store_true", help="animate every face of a group photo with the same driver")
    p.add_argument("--keep-source-pose", action="store_true",
                   help="video source: keep each source frame's own head pose and framing (only the face follows the driver)")
    p.add_argument("--max-frames", type=int, help="use only the first N driving frames")
    p.add_argument("--profile", action="store_true", help="print frames per second for each stage")
    p.add_argument("--overwrite", action="store_true", help="batch mode: redo portraits whose output exists (kept by default)")
    add_arguments(p, Runner)
    _common(p)
    p.set_defaults(func=cmd_animate)

    p = sub.add_parser("edit", help="change head pose, jaw, expression, gaze or shape of a portrait", formatter_class=fmt,
                       epilog="""examples:
  gdpw edit --source face.jpg --yaw 20 --jaw 10 -o turned.png
  gdpw edit --source face.jpg --expression 0=1.5,3=-0.5 -o smile.png
  gdpw edit --source face.jpg --json edits.json -o edited.png
  gdpw edit --source face.jpg --sweep yaw:-30:30:15 -o yaw_sweep.mp4""")
    p.add_argument("--source", required=True)
    p.add_argument("-o", "--output", required=True, help=".png/.jpg for one image, .mp4 for a sweep")
    for name in ("yaw", "pitch", "roll", "jaw"):
        p.add_argument(f"--{name}", type=float, default=0.0, help=f"{name} change in degrees")
    p.add_argument("--gaze-x", type=float, default=0.0, help="eye rotation to the right, degrees")
    p.add_argument("--gaze-y", type=float, default=0.0, help="eye rotation downwards, degrees")
    p.add_argument("--expression", help="INDEX=VALUE[,INDEX=VALUE...] expression coefficients")
    p.add_argument("--shape", help="INDEX=VALUE[,...] identity coefficients")
    p.add_argument("--json", help="a JSON file with any of the edit fields")
    p.add_argument("--sweep", help="FIELD:START:STOP:STEPS, e.g. yaw:-30:30:15 (writes an mp4)")
    p.add_argument("--save-motion", metavar="PATH", help="also write the edit or sweep as a motion file (.motion.npz)")
    p.add_argument("--fps", type=float, default=15.0)
    _common(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("frontalize", help="turn the head in a portrait to face the camera",
                       epilog="example: gdpw frontalize --source face.jpg -o front.png")
    p.add_argument("--source", required=True)
    p.add_argument("-o", "--output", required=True)
    _common(p)
    p.set_defaults(func=cmd_frontalize)

    p = sub.add_parser("fit", help="fit FLAME to an image or a video and save the parameters",
                       formatter_class=fmt, epilog="""examples:
  gdpw fit --input talk.mp4 -o talk_flame.npz --preview talk_fit.png
  gdpw fit --input talk.mp4 -o talk.motion.npz        # a motion file: drives portraits, no face data
  gdpw fit --train-regressor --flame generic_model.pkl --workers 2   # writes generic_model.regressor.npz (live tracking)
  gdpw fit --train-regressor --regressor mine.npz --train.clips 800  # the demo head's, from more renders""")
    p.add_argument("--input", help="image or video")
    p.add_argument("-o", "--output",
                   help=".npz with shape, expression, poses and cameras; a .motion.npz name writes a motion file")
    p.add_argument("--train-regressor", action="store_true",
                   help="instead of fitting an input: train the head's FLAME regressor (used by live tracking) on "
                        "synthetic renders and write it to --regressor (default: NAME.regressor.npz beside --flame)")
    p.add_argument("--preview", help="PNG: the crop beside the fitted mesh (first frame)")
    p.add_argument("--preview-size", type=int, default=256, help="crop side of the preview in pixels (default 256)")
    p.add_argument("--max-frames", type=int)
    from gdpw.fit import TrackConfig
    from gdpw.fit.regressor_train import RegressorConfig
    from gdpw.flame import HeadConfig

    add_arguments(p, HeadConfig)
    add_arguments(p, TrackConfig)
    add_arguments(p, RegressorConfig, prefix="train.", group="--train-regressor options")
    add_arguments(p, Runner, exclude=("shard",), group="--train-regressor workers (render and read the examples)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("demo", help="reenactment and editing on the built-in demo head, no inputs needed",
                       epilog="example: gdpw demo -o outputs/demo")
    p.add_argument("-o", "--output", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--checkpoint", help="default: the shipped demo generator")
    p.add_argument("--frames", type=int, default=48)
    p.set_defaults(func=cmd_demo)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def cmd_animate(args: argparse.Namespace) -> None:
    src = Path(args.source)
    _check_max_frames(args)
    runner = from_args(Runner, args)
    if not src.is_dir() and (runner != Runner() or args.overwrite):
        raise UsageError("--engine, --workers, --shard and --overwrite are for batch mode (a folder as --source)")
    if src.is_file() and not _is_image(src):
        return _animate_video(args)
    if args.keep_source_pose:
        raise UsageError("--keep-source-pose needs a video as --source")
    if is_motion_file(args.driving) and args.side_by_side:
        raise UsageError("--side-by-side needs a driving video (a motion file has no frames)")
    if src.is_dir():
        return _animate_folder(args, runner)
    out = check_output(args.output, [args.source, args.driving])
    if _is_image(Path(args.driving)) and not _is_image(out):
        raise UsageError("a driving image gives an image: name the output .png or .jpg")
    if not _is_image(Path(args.driving)) and out.suffix.lower() != ".mp4":
        raise UsageError(f"the output is a video: name it .mp4, not {out.name}")
    t0 = time.perf_counter()
    driver = load_driver(args)
    with driver.animator:
        decode = time.perf_counter() - t0
        n = animate_portrait(args, driver, Portrait(src, out))
        print(f"wrote {out}: {n} frames at {driver.fps:g} fps")
        if args.profile:
            _print_profile({"decode": decode, **driver.animator.timings}, n, time.perf_counter() - t0)


@dataclass(frozen=True)
class Portrait:
    """One portrait of a batch and its output."""

    source: Path
    output: Path


@dataclass
class Driver:
    """What drives every portrait of a run, loaded once per worker: the animator and the driving
    frames (or motion file) with their frame rate and audio."""

    animator: Any
    motion_file: Any
    driving: np.ndarray | None
    fps: float
    audio: str | None

    def close(self) -> None:
        self.animator.close()


def load_driver(args: argparse.Namespace) -> Driver:
    from gdpw.data.video import read_image, read_video
    from gdpw.pipeline import Animator

    animator = Animator(_config(args))
    if is_motion_file(args.driving):
        motion_file = load_motion(args.driving, animator.flame)
        motion_file.params = motion_file.params.select(slice(0, args.max_frames))
        return Driver(animator, motion_file, None, motion_file.fps, None)
    if _is_image(Path(args.driving)):
        return Driver(animator, None, read_image(args.driving)[None], 25.0, None)
    driving, info = read_video(args.driving, args.max_frames)
    return Driver(animator, None, driving, info.fps, args.driving if info.has_audio else None)


def animate_portrait(args: argparse.Namespace, driver: Driver, item: Portrait) -> int:
    """One portrait driven and written (atomically); its frame count."""
    from gdpw.data.video import read_image

    return _animate_one(driver.animator, read_image(item.source), item.output, args, driver.motion_file, driver.driving,
                        driver.fps, driver.audio)


def _animate_folder(args: argparse.Namespace, runner: Runner) -> None:
    """Batch mode: every portrait of the folder as one job (local, a process pool, Ray or a --shard);
    outputs already written are kept unless --overwrite; a bad photo is named and the rest go on."""
    src, folder = Path(args.source), check_output(args.output, [args.source, args.driving], folder=True)
    suffix = ".png" if _is_image(Path(args.driving)) else ".mp4"
    items = [Portrait(p, folder / f"{p.stem}{suffix}") for p in sorted(src.iterdir())
             if _is_image(p) and not p.name.startswith(".")]
    if not items:
        raise UsageError(f"no images in {src}")
    for item in items:
        check_output(item.output, [item.source, args.driving])

    def done(item: Portrait) -> bool:
        return not args.overwrite and item.output.exists()

    job = Job("animate", items, key=lambda item: item.source.name, setup=partial(load_driver, args),
              run=partial(animate_portrait, args), done=done, bad_item=(VideoError, FaceDetectionError),
              close=Driver.close)
    outcomes = run_job(job, runner)
    failed = [o.error if str(o.item.source) in (o.error or "") else f"{o.item.source.name}: {o.error}"
              for o in outcomes if o.error is not None]
    kept = sum(o.skipped for o in outcomes)
    print(f"wrote {sum(o.ok and not o.skipped for o in outcomes)} of {len(outcomes)} portraits to {folder}"
          + (f" ({kept} written before, kept; --overwrite redoes them)" if kept else ""))
    if failed:
        raise UsageError(f"{len(failed)} of {len(outcomes)} portraits failed, the others were written: " + "; ".join(failed))


def _animate_one(animator, image: np.ndarray, out: Path, args: argparse.Namespace, motion_file, driving,  # type: ignore[no-untyped-def]
                 fps: float, audio: str | None) -> int:
    """One portrait driven by ``motion_file`` or the ``driving`` frames, written to ``out``; its frame count."""
    from gdpw.data.video import write_video

    if motion_file is not None:
        batches = animator.animate_motion_stream(image, motion_file, motion=args.motion, all_faces=args.all_faces, crops=False)
    else:
        batches = animator.animate_stream(image, list(driving), fps=fps, motion=args.motion,
                                          side_by_side=args.side_by_side, all_faces=args.all_faces, crops=False)
    if _is_image(out):
        frames, _ = next(iter(batches))
        _save_image(frames, out)
        return len(frames)
    with Background(partial(write_video, out, fps=fps, audio_from=audio)) as writer:  # encoded beside the generation
        for frames, _ in batches:
            writer.put_all(frames)
    return writer.result


def _check_max_frames(args: argparse.Namespace) -> None:
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {args.max_frames}")


def _print_profile(timings: dict[str, float], n: int, wall: float) -> None:
    """Seconds and frames per second per stage, and the wall time: the video encoding runs on
    its own thread beside the generation, so it is not a stage here; the wall time against the
    stages' total shows what it adds."""
    print("stage      seconds   frames/s")
    for stage, secs in timings.items():
        print(f"{stage:<10} {secs:8.2f} {n / max(secs, 1e-9):10.1f}")
    print(f"{'total':<10} {sum(timings.values()):8.2f}")
    print(f"{'wall':<10} {wall:8.2f} {n / wall:10.1f}")


def _animate_video(args: argparse.Namespace) -> None:
    """``--source`` is a video: video-to-video."""
    from gdpw.data.video import read_image, read_video, write_video
    from gdpw.pipeline import Animator

    if args.all_faces:
        raise UsageError("--all-faces takes a group photo, not a video, as --source")
    if Path(args.output).suffix.lower() != ".mp4":
        raise UsageError("a video source gives a video: name the output .mp4")
    check_output(args.output, [args.source, args.driving])
    source, info = read_video(args.source, args.max_frames)
    with Animator(_config(args)) as animator:
        driving_frames = None
        if is_motion_file(args.driving):
            if args.side_by_side:
                raise UsageError("--side-by-side needs a driving video (a motion file has no frames)")
            driving = load_motion(args.driving, animator.flame).params
        elif _is_image(Path(args.driving)):
            driving_frames = read_image(args.driving)[None]
            driving = animator.tracker.fit_image(driving_frames[0], "the driving image").params
        else:
            driving_frames, d_info = read_video(args.driving, args.max_frames)
            driving = animator.track_driving(list(driving_frames), d_info.fps).params
        result = animator.animate_video(list(source), info.fps, driving, motion=args.motion,
                                        keep_source_pose=args.keep_source_pose, driving_frames=driving_frames,
                                        side_by_side=args.side_by_side)
    n = write_video(args.output, result.frames, info.fps, audio_from=args.source if info.has_audio else None)
    print(f"wrote {args.output}: {n} frames at {info.fps:g} fps (video-to-video{', source pose kept' if args.keep_source_pose else ''})")


def _edit_spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gdpw.pipeline import EditSpec, parse_components

    spec = EditSpec.from_json(args.json) if args.json else EditSpec()
    return replace(spec, yaw=spec.yaw + args.yaw, pitch=spec.pitch + args.pitch, roll=spec.roll + args.roll,
                   jaw=spec.jaw + args.jaw, gaze_x=spec.gaze_x + args.gaze_x, gaze_y=spec.gaze_y + args.gaze_y,
                   expression={**spec.expression, **parse_components(args.expression)},
                   shape={**spec.shape, **parse_components(args.shape)})


def _save_image(frames: np.ndarray, path: Path) -> None:
    from gdpw.render.visualize import save_image

    save_image(frames[0], path)


def cmd_edit(args: argparse.Namespace) -> None:
    from gdpw.data.video import read_image, write_video
    from gdpw.pipeline import Animator, apply_edit, parse_sweep, stream_frames, sweep

    spec = _edit_spec(args)
    out = check_output(args.output, [args.source, args.json, args.save_motion])
    swept = parse_sweep(args.sweep) if args.sweep else None
    if swept is not None and out.suffix.lower() != ".mp4":
        raise UsageError(f"a sweep writes a video: name the output .mp4, not {out.name}")
    if swept is None and not _is_image(out):
        raise UsageError(f"a single edit writes an image: name the output .png or .jpg, not {out.name} (a video needs --sweep)")
    if args.save_motion is not None:
        check_output(args.save_motion, [args.source, args.json, args.output])
    if not (math.isfinite(args.fps) and 0 < args.fps <= 240):
        raise UsageError(f"--fps must be within (0, 240], got {args.fps}")
    with Animator(_config(args)) as animator:
        source = animator.prepare_source(read_image(args.source))
        if swept is not None:
            name, start, stop, steps = swept
            target = sweep(source.fit, spec, name, start, stop, steps, animator.recipe)
            batches = animator.animate_fit_stream(source, target, crops=False)
            n = write_video(out, stream_frames(batches), args.fps)
            print(f"wrote {out}: {n}-frame {name} sweep")
        else:
            target = apply_edit(source.fit, spec, convention=animator.recipe)
            _save_image(animator.animate_fit(source, target).frames, out)
            print(f"wrote {out}")
        if args.save_motion:
            save_motion(args.save_motion, target, animator.flame, args.fps, animator.size, animator.recipe)
            print(f"wrote {args.save_motion}: {len(target)} frame(s) of motion")


def cmd_frontalize(args: argparse.Namespace) -> None:
    from gdpw.data.video import read_image
    from gdpw.pipeline import Animator, EditSpec, apply_edit

    out = check_output(args.output, [args.source])
    if not _is_image(out):
        raise UsageError(f"frontalize writes an image: name the output .png or .jpg, not {out.name}")
    with Animator(_config(args)) as animator:
        source = animator.prepare_source(read_image(args.source))
        front = apply_edit(source.fit, EditSpec(frontalize=True), convention=animator.recipe)
        _save_image(animator.animate_fit(source, front).frames, out)
        print(f"wrote {args.output}")


def cmd_fit(args: argparse.Namespace) -> None:
    from gdpw.common.crop import crop
    from gdpw.data.video import read_image, read_video
    from gdpw.fit import FaceTracker, TrackConfig
    from gdpw.flame import HeadConfig

    if args.train_regressor:
        _train_regressor(args)
        return
    if args.input is None or args.output is None:
        raise UsageError("gdpw fit needs --input and -o (or --train-regressor)")
    path = Path(args.input)
    _check_max_frames(args)
    out = check_output(args.output, [args.input, args.preview])
    if args.preview is not None:
        check_output(args.preview, [args.input, args.output])
        if not _is_image(Path(args.preview)):
            raise UsageError(f"--preview writes an image: name it .png or .jpg, not {args.preview}")
    head = from_args(HeadConfig, args)
    flame = head.load()
    with FaceTracker(flame, from_args(TrackConfig, args), blendshapes=head.load_blendshapes(),
                     regressor=head.regressor_path()) as tracker:
        if _is_image(path):
            first = read_image(path)
            track = tracker.fit_image(first)
        else:
            frames, info = read_video(path, args.max_frames)
            track, first = tracker.track(list(frames), info.fps), frames[0]
    fit = track.params
    if is_motion_file(out):
        save_motion(out, fit, flame, 25.0 if _is_image(path) else info.fps, tracker.crop_size, tracker.recipe)
    else:
        with atomic_write(out) as fh:
            np.savez(fh, **fit.to_numpy())
    print(f"wrote {out}: {len(fit)} frame(s), landmark RMS {float(fit.landmark_error.mean()):.4f} (NDC)")
    if args.preview:
        _save_preview(flame, fit, crop(first, track.box, args.preview_size), Path(args.preview))
        print(f"wrote {args.preview}")


def _train_regressor(args: argparse.Namespace) -> None:
    """``gdpw fit --train-regressor``: the head's FLAME regressor, from renders, with its held-out accuracy."""
    from gdpw.fit.regressor_train import RegressorConfig, train_regressor
    from gdpw.flame import HeadConfig

    if args.input or args.output or args.preview:
        raise UsageError("--train-regressor trains the head's regressor: fit an --input in another run")
    head = from_args(HeadConfig, args)
    if head.flame is None and head.regressor is None:
        raise UsageError("the demo head ships its regressor (gdpw/assets/demo_regressor.npz): "
                         "name where a new one goes with --regressor PATH")
    out = check_output(head.regressor_path(), [head.flame, head.landmark_embedding])
    cfg = from_args(RegressorConfig, args, prefix="train.")
    cache = out.with_name(out.name.removesuffix(".npz") + ".examples")
    regressor = train_regressor(head, cfg, cache, from_args(Runner, args))
    regressor.save(out)
    a = regressor.accuracy
    print(f"wrote {out}; held out ({a.get('frames', 0):.0f} frames of {a.get('identities', 0):.0f} identities): "
          f"head rotation {a.get('head_rotation_deg', float('nan')):.2f} deg, jaw {a.get('jaw_open_mae', float('nan')):.3f} rad, "
          f"expression r {a.get('expression_r', float('nan')):.2f}; the rendered examples are kept in {cache}")


def _save_preview(flame, fit, crop_img: np.ndarray, path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from gdpw.common.images import to_tensor
    from gdpw.render.patterns import render_shaded
    from gdpw.render.visualize import save_png

    size = crop_img.shape[0]
    with torch.no_grad():
        verts = fit.image_vertices(flame, [0])
        world = flame(fit.params([0])).vertices
    shaded = render_shaded(world, verts, flame.faces, (size, size))[0]
    img = to_tensor(crop_img)
    mask = (shaded.sum(0, keepdim=True) > 0).float()
    overlay = img * (1 - 0.6 * mask) + 0.6 * shaded
    save_png(torch.cat([img, overlay], dim=2), path)


def cmd_demo(args: argparse.Namespace) -> None:
    from gdpw.common.images import resize_to_height
    from gdpw.data.synth import SynthConfig, render_clip
    from gdpw.data.video import write_video
    from gdpw.pipeline import AnimateConfig, Animator, EditSpec, source_from_fit, sweep, transfer_motion

    out = Path(args.output)
    animator = Animator(AnimateConfig(checkpoint=args.checkpoint, paste_back=False))
    size = animator.size
    synth = SynthConfig(size=size, frames_per_clip=args.frames, seed=2026)
    src_clip = render_clip(animator.flame, synth, 0, 0)
    drv_clip = render_clip(animator.flame, synth, 1, 1)

    source = source_from_fit(src_clip.images[0], src_clip.params.select([0]))
    result = animator.animate_fit(source, transfer_motion(source.fit, drv_clip.params, lids=animator.flame.lid_components))
    show = 256
    frames = [np.concatenate([resize_to_height(source.image, show), resize_to_height(d, show), resize_to_height(r, show)], axis=1)
              for d, r in zip(drv_clip.images, result.frames)]
    write_video(out / "reenactment.mp4", frames, synth.fps)
    edits = sweep(source.fit, EditSpec(), "yaw", -35, 35, 12)
    jaw = sweep(source.fit, EditSpec(), "jaw", 0, 15, 6)
    sweep_frames = [resize_to_height(f, show) for f in animator.animate_fit(source, edits).frames]
    sweep_frames += [resize_to_height(f, show) for f in animator.animate_fit(source, jaw).frames]
    write_video(out / "edit_sweep.mp4", sweep_frames, synth.fps)
    print(f"wrote {out / 'reenactment.mp4'} (source | driving | result, {len(frames)} frames) "
          f"and {out / 'edit_sweep.mp4'} (yaw and jaw sweeps, {len(sweep_frames)} frames)")
