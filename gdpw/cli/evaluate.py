"""``gdpw evaluate``: the paper's same- and cross-identity protocol on a dataset's test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from gdpw.common.config import add_arguments, from_args
from gdpw.common.errors import UsageError
from gdpw.common.files import write_text_atomic
from gdpw.eval.protocol import EvalConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("evaluate", help="FID, CSIM, AKD, AED, APD, L1, PSNR, SSIM, LPIPS on a test split",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  gdpw evaluate --data data/synth128                            # the shipped demo checkpoint (128 px)
  gdpw evaluate --data data/synth --checkpoint a.pt --checkpoint b.pt --name A --name B -o docs/eval
  gdpw evaluate --data data/vox_gdpw --checkpoint released.pth --fid-weights pt_inception-2015-12-05-6726825d.pth
  # the paper's metric networks, user-brought: ArcFace (CSIM), FAN (AKD), LPIPS
  gdpw evaluate --data data/vox_gdpw --checkpoint released.pth --identity-weights ms1mv3_arcface_r100/backbone.pth \\
      --fan-weights 2DFAN4-cd938726ad.zip --lpips-weights lpips/weights/v0.1/alex.pth \\
      --lpips-trunk-weights alexnet-owt-7be5be79.pth

Each number's network is named under the table; without the files above CSIM uses dlib's ResNet,
AKD MediaPipe's landmarks, and LPIPS is reported unavailable.""")
    p.add_argument("--data", required=True, help="gdpw dataset folder with a 'test' split and FLAME parameters")
    p.add_argument("--checkpoint", action="append", default=[], help="checkpoint to evaluate (repeatable; default: the demo)")
    p.add_argument("--name", action="append", default=[], help="row name for each --checkpoint")
    p.add_argument("-o", "--output", help="folder for report.md, results.csv and grid.png")
    add_arguments(p, EvalConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gdpw.eval.protocol import baseline_methods, check_dataset, evaluate, generator_method
    from gdpw.model import GuidedGenerator
    from gdpw.model.checkpoint import load_checkpoint
    from gdpw.model.fold import CPU_MAX_CONV_BYTES, fold_for_inference
    from gdpw.pipeline.animator import DEMO_CHECKPOINT

    cfg = from_args(EvalConfig, args)
    paths = args.checkpoint or [str(DEMO_CHECKPOINT)]
    names = args.name or [Path(c).stem for c in paths]
    if len(names) != len(paths):
        raise UsageError(f"{len(names)} --name for {len(paths)} --checkpoint")
    flame = cfg.head.load()
    ckpts = {n: load_checkpoint(c) for n, c in zip(names, paths)}
    check_dataset(args.data, flame, ckpts)
    methods = {n: generator_method(GuidedGenerator(fold_for_inference(c.build_generator(), CPU_MAX_CONV_BYTES), flame.faces,
                                                   antialias=c.antialias)) for n, c in ckpts.items()}
    if cfg.baselines:
        methods.update(baseline_methods(flame.faces))
    out = Path(args.output) if args.output else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    report = evaluate(args.data, methods, flame, cfg, grid_path=out / "grid.png" if out else None)
    text = report.markdown()
    print(text)
    if out is not None:
        write_text_atomic(out / "report.md", text + "\n")
        report.write_csv(out / "results.csv")
        print(f"wrote {out / 'report.md'}, {out / 'results.csv'}, {out / 'grid.png'}")
