"""``gdpw preprocess``: videos to a gdpw dataset (face crops + FLAME fits)."""

from __future__ import annotations

import argparse


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("preprocess", help="crop and fit talking-head videos into a training dataset",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  gdpw preprocess voxceleb/mp4 -o data/vox_gdpw --workers 8 --heldout id10270 --heldout id10271
  gdpw preprocess talk.mp4 -o data/one_clip --size 128
Re-running skips videos already written; failed videos are listed at the end.""")
    p.add_argument("input", help="a video, or a folder searched recursively (VoxCeleb: id/video/clip.mp4)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    p.add_argument("--max-frames", type=int, default=300)
    p.add_argument("--crop-scale", type=float, default=2.5)
    p.add_argument("--heldout", action="append", default=[], help="identity for the 'test' split (repeatable)")
    p.add_argument("--flame", help="FLAME generic_model.pkl (default: the demo head)")
    p.add_argument("--workers", type=int, default=1, help="videos processed in parallel")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gdpw.data.preprocess import PreprocessConfig, preprocess

    cfg = PreprocessConfig(size=args.size, max_frames=args.max_frames, crop_scale=args.crop_scale,
                           heldout=tuple(args.heldout), flame=args.flame)
    clips, errors = preprocess(args.input, args.output, cfg, workers=args.workers)
    print(f"{len(clips)} clips ({sum(c.frames for c in clips)} frames) in {args.output}")
    for e in errors:
        print(f"skipped {e}")
