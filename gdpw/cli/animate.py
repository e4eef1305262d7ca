"""``gdpw animate``, ``gdpw edit``, ``gdpw frontalize``, ``gdpw fit`` and ``gdpw demo``."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="gdpw or released checkpoint (default: the shipped demo generator)")
    p.add_argument("--flame", help="FLAME generic_model.pkl (default: the built-in demo head)")
    p.add_argument("--landmark-embedding", help="68-point landmark embedding for a FLAME model (landmark_embedding.npy)")
    p.add_argument("--face-index", type=int, help="which face when an image has several (0 = largest)")
    p.add_argument("--crop-scale", type=float, default=2.5, help="crop side / landmark box side (default 2.5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--allow-pickle", action="store_true", help="load checkpoints that need full unpickling")
    p.add_argument("--fitter", choices=["landmarks", "deca"], default="landmarks",
                   help="FLAME fitting: MediaPipe landmarks (default) or DECA (needs --deca-model and FLAME 2020)")
    p.add_argument("--deca-model", help="DECA's deca_model.tar (for --fitter deca)")


def _config(args: argparse.Namespace, **over: object):  # type: ignore[no-untyped-def]
    from gdpw.pipeline import AnimateConfig

    cfg = AnimateConfig(checkpoint=args.checkpoint, flame=args.flame, face_index=args.face_index,
                        crop_scale=args.crop_scale, device=args.device, allow_pickle=args.allow_pickle,
                        fitter=args.fitter, deca_model=args.deca_model, landmark_embedding=args.landmark_embedding)
    return replace(cfg, **over)


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("animate", help="animate a portrait with a driving video", formatter_class=fmt, epilog="""examples:
  gdpw animate --source face.jpg --driving talk.mp4 -o out.mp4
  gdpw animate --source faces/ --driving talk.mp4 -o outs/ --side-by-side --profile
  gdpw animate --source face.jpg --driving talk.mp4 -o out.mp4 --checkpoint released.pth --flame generic_model.pkl""")
    p.add_argument("--source", required=True, help="portrait image, or a folder of them (batch mode)")
    p.add_argument("--driving", required=True, help="driving video")
    p.add_argument("-o", "--output", required=True, help="output .mp4 (a folder in batch mode)")
    p.add_argument("--absolute", action="store_true", help="absolute motion (default: relative to the first driving frame)")
    p.add_argument("--side-by-side", action="store_true", help="source | driving | result")
    p.add_argument("--no-paste-back", action="store_true", help="write the generated crop only")
    p.add_argument("--max-frames", type=int, help="use only the first N driving frames")
    p.add_argument("--profile", action="store_true", help="print frames per second for each stage")
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
                       epilog="example: gdpw fit --input talk.mp4 -o talk_flame.npz --preview talk_fit.png")
    p.add_argument("--input", required=True, help="image or video")
    p.add_argument("-o", "--output", required=True, help=".npz with shape, expression, poses and cameras")
    p.add_argument("--preview", help="PNG: the crop beside the fitted mesh (first frame)")
    p.add_argument("--max-frames", type=int)
    _common(p)
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
    from tqdm import tqdm

    from gdpw.data.video import read_image, read_video, write_video
    from gdpw.pipeline import Animator

    src = Path(args.source)
    sources = sorted(p for p in src.iterdir() if _is_image(p)) if src.is_dir() else [src]
    if not sources:
        raise ValueError(f"no images in {src}")
    t0 = time.perf_counter()
    driving, info = read_video(args.driving, args.max_frames)
    decode = time.perf_counter() - t0
    animator = Animator(_config(args, motion="absolute" if args.absolute else "relative",
                                side_by_side=args.side_by_side, paste_back=not args.no_paste_back))
    try:
        for path in tqdm(sources, desc="animate", unit="source", disable=len(sources) == 1):
            out = Path(args.output) / f"{path.stem}.mp4" if src.is_dir() else Path(args.output)
            result = animator.animate(read_image(path), list(driving), fps=info.fps)
            t = time.perf_counter()
            write_video(out, result.frames, info.fps, audio_from=args.driving if info.has_audio else None)
            timings = {"decode": decode, **result.timings, "encode": time.perf_counter() - t}
            print(f"wrote {out}: {len(result.frames)} frames at {info.fps:g} fps")
            if args.profile:
                n = len(result.frames)
                print("stage      seconds   frames/s")
                for stage, secs in timings.items():
                    print(f"{stage:<10} {secs:8.2f} {n / max(secs, 1e-9):10.1f}")
                total = sum(timings.values())
                print(f"{'total':<10} {total:8.2f} {n / total:10.1f}")
    finally:
        animator.close()


def _edit_spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gdpw.pipeline import EditSpec, parse_components

    spec = EditSpec.from_json(args.json) if args.json else EditSpec()
    return replace(spec, yaw=spec.yaw + args.yaw, pitch=spec.pitch + args.pitch, roll=spec.roll + args.roll,
                   jaw=spec.jaw + args.jaw, gaze_x=spec.gaze_x + args.gaze_x, gaze_y=spec.gaze_y + args.gaze_y,
                   expression={**spec.expression, **parse_components(args.expression)},
                   shape={**spec.shape, **parse_components(args.shape)})


def _save_image(frames: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frames[0]).save(path)


def cmd_edit(args: argparse.Namespace) -> None:
    from gdpw.data.video import read_image, write_video
    from gdpw.pipeline import Animator, apply_edit, sweep

    spec = _edit_spec(args)
    animator = Animator(_config(args))
    try:
        source = animator.prepare_source(read_image(args.source))
        out = Path(args.output)
        if args.sweep:
            name, start, stop, steps = args.sweep.split(":")
            target = sweep(source.fit, spec, name, float(start), float(stop), int(steps))
            n = write_video(out, animator.animate_fit(source, target).frames, args.fps)
            print(f"wrote {out}: {n}-frame {name} sweep")
        else:
            if out.suffix.lower() == ".mp4":
                raise ValueError("an .mp4 output needs --sweep; give an image path for a single edit")
            _save_image(animator.animate_fit(source, apply_edit(source.fit, spec)).frames, out)
            print(f"wrote {out}")
    finally:
        animator.close()


def cmd_frontalize(args: argparse.Namespace) -> None:
    from gdpw.data.video import read_image
    from gdpw.pipeline import Animator, EditSpec, apply_edit

    animator = Animator(_config(args))
    try:
        source = animator.prepare_source(read_image(args.source))
        _save_image(animator.animate_fit(source, apply_edit(source.fit, EditSpec(frontalize=True))).frames, Path(args.output))
        print(f"wrote {args.output}")
    finally:
        animator.close()


def cmd_fit(args: argparse.Namespace) -> None:
    from gdpw.data.video import read_image, read_video
    from gdpw.pipeline import Animator, crop

    path = Path(args.input)
    animator = Animator(_config(args))
    try:
        if _is_image(path):
            source = animator.prepare_source(read_image(path))
            fit, crop_img = source.fit, source.crop
        else:
            frames, info = read_video(path, args.max_frames)
            fit, box = animator.fit_driving(list(frames), info.fps)
            crop_img = crop(frames[0], box, animator.size)
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **fit.to_numpy(), landmark_error=fit.landmark_error.numpy())
        print(f"wrote {out}: {len(fit)} frame(s), landmark RMS {fit.landmark_error.mean():.4f} (NDC)")
        if args.preview:
            _save_preview(animator, fit, crop_img, Path(args.preview))
            print(f"wrote {args.preview}")
    finally:
        animator.close()


def _save_preview(animator, fit, crop_img: np.ndarray, path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from gdpw.render.patterns import render_shaded
    from gdpw.render.visualize import save_png

    size = crop_img.shape[0]
    verts = animator.vertices(fit, [0])
    world = animator.flame(fit.params([0])).vertices
    shaded = render_shaded(world, verts, animator.flame.faces, (size, size))[0]
    img = torch.from_numpy(np.array(crop_img)).permute(2, 0, 1).float() / 255
    mask = (shaded.sum(0, keepdim=True) > 0).float()
    overlay = img * (1 - 0.6 * mask) + 0.6 * shaded
    save_png(torch.cat([img, overlay], dim=2), path)


def cmd_demo(args: argparse.Namespace) -> None:
    import torch

    from gdpw.data.synth import SynthConfig, render_clip
    from gdpw.data.video import write_video
    from gdpw.fit import FlameFit
    from gdpw.pipeline import AnimateConfig, Animator, EditSpec, source_from_fit, sweep
    from gdpw.pipeline.animator import resize_to_height

    out = Path(args.output)
    animator = Animator(AnimateConfig(checkpoint=args.checkpoint, paste_back=False))
    size = animator.size
    synth = SynthConfig(size=size, frames_per_clip=args.frames, seed=2026)
    src_clip = render_clip(animator.flame, synth, 0, 0)
    drv_clip = render_clip(animator.flame, synth, 1, 1)

    def as_fit(clip, frames) -> FlameFit:  # type: ignore[no-untyped-def]
        p = {k: torch.from_numpy(v[frames]) for k, v in clip.params.items()}
        return FlameFit(p["shape"][0], p["expression"], p["global_pose"], p["jaw_pose"], p["eye_pose"],
                        torch.from_numpy(clip.camera[frames]))

    source = source_from_fit(src_clip.images[0], as_fit(src_clip, [0]))
    driving = as_fit(drv_clip, list(range(args.frames)))
    result = animator.animate_fit(source, animator.transfer(source.fit, driving))
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
