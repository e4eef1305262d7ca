"""``gdpw preprocess``: videos to a gdpw dataset (face crops + FLAME fits)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gdpw.common.config import add_arguments, from_args
from gdpw.common.errors import UsageError
from gdpw.data.preprocess import PreprocessConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("preprocess", help="crop and fit talking-head videos into a training dataset",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  gdpw preprocess voxceleb/mp4 -o data/vox_gdpw --workers 8 --heldout id10270 --heldout id10271
  gdpw preprocess talk.mp4 -o data/one_clip --size 128
  gdpw preprocess voxceleb/mp4 -o data/vox_flame --flame generic_model.pkl --landmark-embedding landmark_embedding.npy
Re-running skips videos already written and retries the ones that failed. A bad video (unreadable,
no face) is skipped and listed in OUTPUT/failures.txt (exit status 2); a full disk or a missing
asset stops the run with the clips written so far kept.""")
    p.add_argument("input", help="a video, or a folder searched recursively (VoxCeleb: id/video/clip.mp4)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--workers", type=int, default=1, help="videos processed in parallel")
    add_arguments(p, PreprocessConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gdpw.data.preprocess import preprocess

    clips, errors = preprocess(args.input, args.output, from_args(PreprocessConfig, args), workers=args.workers)
    print(f"{len(clips)} clips ({sum(c.frames for c in clips)} frames) in {args.output}")
    for e in errors:
        print(f"skipped {e}")
    if errors:
        raise UsageError(f"{len(errors)} video(s) skipped, listed in {Path(args.output) / 'failures.txt'}; "
                         "the dataset holds the others (a rerun retries them)")
