"""``gdpw evaluate``: the paper's same- and cross-identity protocol on a dataset's test split."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("evaluate", help="FID, CSIM, AKD, AED, APD, L1, PSNR, SSIM on a test split",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  gdpw evaluate --data data/synth                               # the shipped demo checkpoint
  gdpw evaluate --data data/synth --checkpoint a.pt --checkpoint b.pt --name A --name B -o docs/eval
  gdpw evaluate --data data/vox_gdpw --checkpoint released.pth --fid-weights pt_inception-2015-12-05-6726825d.pth""")
    p.add_argument("--data", required=True, help="gdpw dataset folder with a 'test' split and FLAME parameters")
    p.add_argument("--checkpoint", action="append", default=[], help="checkpoint to evaluate (repeatable; default: the demo)")
    p.add_argument("--name", action="append", default=[], help="row name for each --checkpoint")
    p.add_argument("--flame", help="the FLAME model the dataset was fitted with (default: the demo head)")
    p.add_argument("--landmark-embedding", help="68-point embedding for that FLAME model (for AED/APD)")
    p.add_argument("--max-pairs", type=int, default=64, help="pairs per setting (default 64)")
    p.add_argument("--fid-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or GDPW_FID_WEIGHTS)")
    p.add_argument("--no-baselines", action="store_true", help="skip the unwarped and displacement-warped source rows")
    p.add_argument("--no-face-metrics", action="store_true", help="skip CSIM, AKD, AED and APD")
    p.add_argument("-o", "--output", help="folder for report.md, results.csv and grid.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gdpw.eval.protocol import baseline_methods, evaluate, generator_method
    from gdpw.flame import FLAME, load_landmark_embedding
    from gdpw.model.checkpoint import load_checkpoint
    from gdpw.model.fold import CPU_MAX_CONV_BYTES, fold_for_inference
    from gdpw.pipeline.animator import DEMO_CHECKPOINT

    ckpts = args.checkpoint or [str(DEMO_CHECKPOINT)]
    names = args.name or [Path(c).stem for c in ckpts]
    if len(names) != len(ckpts):
        raise ValueError(f"{len(names)} --name for {len(ckpts)} --checkpoint")
    embedding = load_landmark_embedding(args.landmark_embedding) if args.landmark_embedding else None
    flame = FLAME(args.flame, landmark_embedding=embedding)
    faces = flame.faces
    methods = {n: generator_method(fold_for_inference(load_checkpoint(c).build_generator(), CPU_MAX_CONV_BYTES), faces)
               for n, c in zip(names, ckpts)}
    if not args.no_baselines:
        methods.update(baseline_methods(faces))
    out = Path(args.output) if args.output else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    report = evaluate(args.data, methods, flame, args.max_pairs, args.fid_weights, not args.no_face_metrics,
                      grid_path=out / "grid.png" if out else None)
    text = report.markdown()
    print(text)
    if out is not None:
        (out / "report.md").write_text(text + "\n")
        report.write_csv(out / "results.csv")
        print(f"wrote {out / 'report.md'}, {out / 'results.csv'}, {out / 'grid.png'}")
