"""Training throughput of the paper's recipe (``configs/paper.yaml``: the full-size generator, batch
16, 256 x 256, L1 + VGG-19 perceptual + warp + LSGAN + feature matching) on this machine's device,
side by side: eager fp32, and bf16 autocast with channels_last (autocast applies on a GPU). Prints
steps/s and the hours a 270k-step run would take. VGG is randomly initialised (timing only) and
the data are synthetic heads rendered into a temporary folder first.

    python benchmarks/train_speed.py [--size 256] [--batch 16] [--steps 20]
    python benchmarks/train_speed.py --size 256 --batch 1 --steps 1     # a quick run on a CPU (the warp loss runs VGG on the 16-px coarsest flow: 256 px at 6 levels)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = (("eager fp32", {"precision": "fp32", "channels_last": False}),
            ("bf16 autocast + channels_last", {"precision": "bf16", "channels_last": True}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 2 warm-up steps)")
    args = p.parse_args()
    from gdpw.data import SynthConfig, write_synth_dataset
    from gdpw.train import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        write_synth_dataset(data, SynthConfig(size=args.size, num_identities=4, clips_per_identity=1, frames_per_clip=8,
                                              heldout_identities=1), progress=False)
        base = TrainConfig.from_yaml(REPO / "configs" / "paper.yaml").to_dict()
        for name, over in VARIANTS:
            cfg = TrainConfig.from_dict({**base, **over, "engine": "torch", "image_size": args.size, "batch_size": args.batch,
                                         "steps": args.steps + 2, "output": str(Path(tmp) / "run"),
                                         "loss": {**base["loss"], "vgg_weights": None, "random_vgg": True},
                                         "data": {**base["data"], "roots": [str(data)], "workers": 0}})
            trainer = Trainer(cfg, resume=False)
            batches = trainer.batches(0)
            for _ in range(2):  # warm-up
                trainer.train_step(next(batches))
            sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
            sync()
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step(next(batches))
            sync()
            per_step = (time.perf_counter() - start) / args.steps
            print(f"{name:<32} {1 / per_step:7.3f} steps/s ({per_step:.2f} s/step, batch {args.batch}, "
                  f"{args.size}x{args.size}, {trainer.device}): 270k steps = {270_000 * per_step / 3600:.1f} h", flush=True)


if __name__ == "__main__":
    main()
