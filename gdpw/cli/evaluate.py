"""``gdpw evaluate``: the paper's same- and cross-identity protocol on a dataset's test split."""

from __future__ import annotations

import argparse
from dataclasses import replace
from functools import partial
from pathlib import Path

from gdpw.common.config import add_arguments, from_args
from gdpw.common.errors import UsageError
from gdpw.common.files import write_text_atomic
from gdpw.common.jobs import Job, Runner, Shard, run_job
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
AKD MediaPipe's landmarks, and LPIPS is reported unavailable.

Slices of the pairs in parallel (--workers N on this machine, --engine ray [--address auto] on a cluster):
  gdpw evaluate --data data/vox_gdpw --checkpoint released.pth -o eval/ --engine ray --address auto --workers 32
Past one machine without Ray (a SLURM array, say), each task scores its slice, then one merge:
  gdpw evaluate --data data/vox_gdpw --checkpoint released.pth -o eval/ --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
  gdpw evaluate --data data/vox_gdpw --merge eval/ -o eval/""")
    p.add_argument("--data", required=True, help="gdpw dataset folder with a 'test' split and FLAME parameters")
    p.add_argument("--checkpoint", action="append", default=[], help="checkpoint to evaluate (repeatable; default: the demo)")
    p.add_argument("--name", action="append", default=[], help="row name for each --checkpoint")
    p.add_argument("-o", "--output", help="folder for report.md, results.csv and grid.png")
    p.add_argument("--merge", nargs="+", metavar="DIR", help="the report from every pairs.*.npz in these folders "
                                                             "(FID from the pooled features); nothing is generated")
    add_arguments(p, Runner)  # --shard J/N writes OUTPUT/pairs.J-of-N.npz for --merge; --workers/--engine ray: slices in parallel
    add_arguments(p, EvalConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from gdpw.eval.protocol import PairResults, evaluate, pair_results

    cfg = from_args(EvalConfig, args)
    runner = from_args(Runner, args)
    out = Path(args.output) if args.output else None
    if args.merge:
        return _merge(args.merge, out)
    parallel = runner.engine == "ray" or runner.workers > 1
    if (runner.shard or parallel) and out is None:
        raise UsageError("--shard, --workers and --engine ray write OUTPUT/pairs.J-of-N.npz: name -o")
    if runner.shard and parallel:
        raise UsageError("--shard runs one slice here; --workers/--engine ray run every slice: use one of them")
    flame, methods = load_methods(args, cfg)  # checked before any pair is generated, here as on every worker
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if parallel:  # one slice per worker, each a job item written atomically, then the merge
        n = runner.workers
        job = Job("evaluate", list(range(n)), key=str, setup=partial(load_methods, args, cfg),
                  run=partial(score_slice, args.data, cfg, out, n), done=lambda j: False)
        run_job(job, replace(runner, shard=None))
        return _write_report(PairResults.merge([PairResults.load(out / f"pairs.{j}-of-{n}.npz") for j in range(n)]).report(), out)
    if runner.shard:
        shard = Shard.parse(runner.shard)
        results = pair_results(args.data, methods, flame, cfg, shard=runner.shard)
        results.save(out / f"pairs.{shard.name}.npz")  # type: ignore[operator]
        print(f"wrote {out / f'pairs.{shard.name}.npz'}: " + ", ".join(f"{len(v)} of {results.total[k]} {k}-identity pairs"  # type: ignore[operator]
                                                                      for k, v in results.index.items()))
        return None
    _write_report(evaluate(args.data, methods, flame, cfg, grid_path=out / "grid.png" if out else None), out)


def load_methods(args: argparse.Namespace, cfg: EvalConfig):  # type: ignore[no-untyped-def]
    """The FLAME model and the methods to score (the checkpoints, folded for inference, and the baselines)."""
    from gdpw.eval.protocol import baseline_methods, check_dataset, generator_method
    from gdpw.model import GuidedGenerator
    from gdpw.model.checkpoint import load_checkpoint
    from gdpw.model.fold import CPU_MAX_CONV_BYTES, fold_for_inference
    from gdpw.pipeline.animator import DEMO_CHECKPOINT

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
    return flame, methods


def score_slice(data: str, cfg: EvalConfig, out: Path, count: int, state, index: int) -> None:  # type: ignore[no-untyped-def]
    """Slice ``index`` of ``count``: every metric of its pairs, saved as OUTPUT/pairs.J-of-N.npz."""
    from gdpw.eval.protocol import pair_results

    flame, methods = state
    pair_results(data, methods, flame, cfg, shard=f"{index}/{count}").save(out / f"pairs.{index}-of-{count}.npz")


def _merge(folders: list[str], out: Path | None) -> None:
    from gdpw.eval.protocol import PairResults

    files = sorted(f for folder in folders for f in Path(folder).glob("pairs.*-of-*.npz"))
    if not files:
        raise UsageError(f"no pairs.J-of-N.npz in {', '.join(folders)}; run gdpw evaluate --shard first")
    _write_report(PairResults.merge([PairResults.load(f) for f in files]).report(), out)


def _write_report(report, out: Path | None) -> None:  # type: ignore[no-untyped-def]
    text = report.markdown()
    print(text)
    if out is not None:
        write_text_atomic(out / "report.md", text + "\n")
        report.write_csv(out / "results.csv")
        written = [out / "report.md", out / "results.csv", *([out / "grid.png"] if (out / "grid.png").exists() else [])]
        print("wrote " + ", ".join(map(str, written)))
