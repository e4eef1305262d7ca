"""Does the demo checkpoint beat both baselines on held-out synthetic pairs?

Prints L1 and PSNR on the same-identity pairs of the held-out identities (forward and backward
pairs, as in `gdpw evaluate`) for the model, the unwarped source and the source warped by the
rendered displacement field alone, and exits non-zero unless the model wins on both figures
against both baselines.

    python scripts/demo_bar.py [--checkpoint gdpw/assets/demo_generator.pt] [--data data/synth128] [--pairs 256]
"""

from __future__ import annotations

import argparse
import sys

from gdpw.eval.metrics import l1, psnr
from gdpw.eval.protocol import baseline_methods, generator_method, run_method, same_identity_pairs
from gdpw.flame import FLAME
from gdpw.model import GuidedGenerator
from gdpw.model.checkpoint import load_checkpoint


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="gdpw/assets/demo_generator.pt")
    p.add_argument("--data", default="data/synth128", help="a gdpw dataset with a 'test' split")
    p.add_argument("--pairs", type=int, default=256)
    args = p.parse_args()
    faces = FLAME().faces
    pairs = same_identity_pairs(args.data, args.pairs, stride=1)
    guided = GuidedGenerator(load_checkpoint(args.checkpoint).build_generator(), faces)
    methods = {"model": generator_method(guided), **baseline_methods(faces)}
    scores = {}
    print(f"{pairs.img_s.shape[0]} held-out same-identity pairs from {args.data}")
    print("| method | L1 (lower is better) | PSNR dB (higher is better) |\n| --- | --- | --- |")
    for name, method in methods.items():
        out = run_method(method, pairs)
        scores[name] = (float(l1(out, pairs.img_d).mean()), float(psnr(out, pairs.img_d).mean()))
        print(f"| {name} | {scores[name][0]:.4f} | {scores[name][1]:.2f} |")
    model = scores.pop("model")
    wins = all(model[0] < b[0] and model[1] > b[1] for b in scores.values())
    print("model beats both baselines on L1 and PSNR:", "yes" if wins else "NO")
    return 0 if wins else 1


if __name__ == "__main__":
    sys.exit(main())
