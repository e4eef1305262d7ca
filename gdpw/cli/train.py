"""``gdpw train``: train a generator from a YAML config."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  gdpw synth -o data/synth && gdpw train --config configs/demo_cpu.yaml
  gdpw train --config configs/paper.yaml --set batch_size=8 --set data.roots=[/data/vox]
  accelerate launch -m gdpw train --config configs/paper.yaml      # several GPUs / nodes
A run resumes from <output>/checkpoints/last.pt unless --fresh is given."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train GDPW (resumes automatically)", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML training config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--max-steps", type=int, help="stop after this step (the run can be resumed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gdpw.train import TrainConfig, Trainer

    cfg = TrainConfig.from_yaml(args.config, args.set)
    trainer = Trainer(cfg, resume=not args.fresh)
    if trainer.step and trainer.is_main:
        print(f"resuming {cfg.output} from step {trainer.step}")
    trainer.run(max_steps=args.max_steps)
    if trainer.is_main:  # under torchrun, rank 0 speaks for all
        print(f"step {trainer.step}: checkpoint {trainer.ckpt_path}; {trainer.skipped} corrupt samples skipped")
