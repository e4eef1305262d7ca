"""Does the demo checkpoint beat both baselines on held-out synthetic pairs?

Prints L1 and PSNR for the model, the unwarped source and the source warped by the rendered
displacement field alone, on pairs from the held-out identities, and exits non-zero unless the
model wins on both figures against both baselines.

    python scripts/demo_bar.py [--checkpoint gdpw/assets/demo_generator.pt] [--data data/synth] [--pairs 256]
"""

from __future__ import annotations

import argparse
import sys

from gdpw.data import GdpwClipSource, PairDataset
from gdpw.eval.reconstruction import evaluate_reconstruction
from gdpw.flame import FLAME
from gdpw.model.checkpoint import load_checkpoint

DEMO_CHECKPOINT = "gdpw/assets/demo_generator.pt"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEMO_CHECKPOINT)
    p.add_argument("--data", default="data/synth", help="a gdpw dataset with a 'test' split")
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--seed", type=int, default=123)
    args = p.parse_args()
    gen = load_checkpoint(args.checkpoint).build_generator()
    pairs = PairDataset(GdpwClipSource([args.data], split="test"), length=args.pairs, seed=args.seed)
    res = evaluate_reconstruction(gen, FLAME().faces, pairs)
    print(f"{res.pairs} held-out pairs from {args.data}")
    print(res.table())
    wins = all(res.l1["model"] < res.l1[b] and res.psnr["model"] > res.psnr[b] for b in ("source", "geom_warp"))
    print("model beats both baselines on L1 and PSNR:", "yes" if wins else "NO")
    return 0 if wins else 1


if __name__ == "__main__":
    sys.exit(main())
