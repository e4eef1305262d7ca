"""``gdpw preprocess``: videos to a gdpw dataset (face crops + FLAME fits)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gdpw.common.config import add_arguments, from_args
from gdpw.common.errors import UsageError
from gdpw.common.jobs import Runner, Shard
from gdpw.data.preprocess import PreprocessConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("preprocess", help="crop and fit talking-head videos into a training dataset",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  gdpw preprocess voxceleb/mp4 -o data/vox_gdpw --workers 8 --heldout id10270 --heldout id10271
  gdpw preprocess talk.mp4 -o data/one_clip --size 128
  gdpw preprocess voxceleb/mp4 -o data/vox_flame --flame generic_model.pkl --landmark-embedding landmark_embedding.npy
  gdpw preprocess voxceleb/mp4 -o data/vox --engine ray --address auto --workers 64     # on a Ray cluster
  gdpw preprocess voxceleb/mp4 -o data/vox --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT   # one array task
  gdpw preprocess voxceleb/mp4 -o data/vox --merge                                      # then the index of all
Re-running skips videos already written and retries the ones that failed. A bad video (unreadable,
no face) is skipped and listed in OUTPUT/failures.txt (exit status 2); a full disk or a missing
asset stops the run with the clips written so far kept.""")
    p.add_argument("input", help="a video, or a folder searched recursively (VoxCeleb: id/video/clip.mp4)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--merge", action="store_true", help="write the dataset index from every --shard run's clips (no processing)")
    add_arguments(p, Runner)
    add_arguments(p, PreprocessConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gdpw.data.preprocess import preprocess

    runner = from_args(Runner, args)
    clips, errors = preprocess(args.input, args.output, from_args(PreprocessConfig, args), runner, merge=args.merge)
    where = f"shard {runner.shard} of " if runner.shard else ""
    print(f"{len(clips)} clips ({sum(c.frames for c in clips)} frames) in {where}{args.output}")
    for e in errors:
        print(f"skipped {e}")
    if errors:
        listed = Path(args.output) / (f"failures.{Shard.parse(runner.shard).name}.txt" if runner.shard else "failures.txt")
        raise UsageError(f"{len(errors)} video(s) skipped, listed in {listed}; the dataset holds the others (a rerun retries them)")
