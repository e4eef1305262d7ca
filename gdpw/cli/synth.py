"""``gdpw synth``: write a synthetic talking-head dataset."""

from __future__ import annotations

import argparse

from gdpw.common.errors import UsageError

EPILOG = """examples:
  gdpw synth -o data/synth                       # 48 identities x 2 clips x 24 frames at 64x64
  gdpw synth -o data/synth128 --size 128 --identities 200 --frames 48"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from gdpw.data.synth import SynthConfig

    d = SynthConfig()
    p = sub.add_parser("synth", help="render a synthetic talking-head dataset with known FLAME parameters",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, help="dataset folder (re-running with the same settings resumes it; more --identities or --clips may be added)")
    p.add_argument("--identities", type=int, default=d.num_identities)
    p.add_argument("--clips", type=int, default=d.clips_per_identity, help="clips per identity")
    p.add_argument("--frames", type=int, default=d.frames_per_clip, help="frames per clip")
    p.add_argument("--size", type=int, default=d.size, help="image side in pixels")
    p.add_argument("--heldout", type=int, default=d.heldout_identities, help="identities in the 'test' split")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--gaze", type=float, default=d.gaze, help="amplitude of the eyes' rotation in radians")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gdpw.data.synth import SynthConfig, write_synth_dataset

    if args.heldout >= args.identities:
        raise UsageError(f"--heldout ({args.heldout}) must be smaller than --identities ({args.identities})")
    cfg = SynthConfig(num_identities=args.identities, clips_per_identity=args.clips, frames_per_clip=args.frames,
                      size=args.size, heldout_identities=args.heldout, seed=args.seed, gaze=args.gaze)
    clips = write_synth_dataset(args.output, cfg)
    print(f"wrote {len(clips)} clips ({sum(c.frames for c in clips)} frames) to {args.output}")
