"""The ``gdpw`` command. Each sub-command lives in a small function; errors users can fix are
printed as one line on stderr with a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence

from gdpw.cli import animate, app, evaluate, live, preprocess, render, synth, train
from gdpw.cli.errors import WRITE_ERRNOS, user_message
from gdpw.common.errors import GdpwError, UsageError
from gdpw.common.native_logs import LOGGER

EXAMPLES = """examples:
  gdpw demo                                      # reenactment + editing on the demo head
  gdpw animate --source face.jpg --driving talk.mp4 -o out.mp4
  gdpw convert released_neural_codes.pth -o gdpw_neural_codes.pt
  gdpw inspect gdpw_neural_codes.pt --forward 256
  gdpw render -o renders/            # guidance patterns of the demo head
"""


def cmd_convert(args: argparse.Namespace) -> None:
    from gdpw.common.files import check_output
    from gdpw.model.checkpoint import convert_official

    check_output(args.output, [args.checkpoint])  # the released file is kept
    ckpt = convert_official(args.checkpoint, args.output, allow_pickle=args.allow_pickle)
    n = sum(v.numel() for v in ckpt.generator.values() if v.is_floating_point())
    print(
        f"converted {args.checkpoint} -> {args.output}: guidance={ckpt.generator_config.guidance}, "
        f"levels={ckpt.generator_config.num_levels}, {n / 1e6:.1f}M generator values, "
        f"discriminator={'yes' if ckpt.discriminator else 'no'}, step={ckpt.global_step}"
    )


def cmd_inspect(args: argparse.Namespace) -> None:
    import torch

    from gdpw.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint, allow_pickle=args.allow_pickle)
    gen = ckpt.build_generator()
    n_params = sum(p.numel() for p in gen.parameters())
    print(f"generator: {ckpt.generator_config}")
    print(f"generator parameters: {n_params:,}")
    if ckpt.discriminator_config is not None:
        print(f"discriminator: {ckpt.discriminator_config}")
    print(f"global_step: {ckpt.global_step}")
    if args.forward:
        size = args.forward
        cfg = ckpt.generator_config
        gen_ = torch.Generator().manual_seed(0)
        img = torch.rand(1, 3, size, size, generator=gen_)
        disp = 0.05 * torch.randn(1, 2, size, size, generator=gen_)
        codes = torch.rand(1, cfg.embed_dim, size, size, generator=gen_)
        start = time.perf_counter()
        with torch.inference_mode():
            out = gen(img, disp, codes, codes)
        secs = time.perf_counter() - start
        finite = bool(torch.isfinite(out.rec_img_d).all())
        print(f"forward {size}x{size}: output {tuple(out.rec_img_d.shape)}, finite={finite}, {secs:.2f} s")
        if not finite:
            raise UsageError("the forward pass produced non-finite values")


def cmd_export(args: argparse.Namespace) -> None:
    from gdpw.common.errors import MissingAssetError
    from gdpw.model.checkpoint import load_checkpoint
    from gdpw.model.export import check_onnx, export_onnx
    from gdpw.pipeline.animator import DEMO_CHECKPOINT

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise MissingAssetError("ONNX export needs onnx and onnxscript: pip install 'gdpw[export]'") from None
    ckpt = load_checkpoint(args.checkpoint or DEMO_CHECKPOINT, allow_pickle=args.allow_pickle)
    size = args.size or ckpt.image_size
    gen = ckpt.build_generator()
    encode, decode = export_onnx(gen, args.onnx, size)
    print(f"wrote {encode} and {decode} (weights beside them in .data files; dynamic batch, {size}x{size})")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime is not installed: not checked (pip install onnxruntime)")
        return
    print(f"onnxruntime (CPU) against PyTorch, encode + decode of 3 frames: max |diff| {check_onnx(gen, args.onnx, size):.1e}")


def _add_allow_pickle(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load files that need full unpickling (only for files you trust)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdpw",
        description="Geometry-driven progressive warping for one-shot face animation.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show native libraries' log lines (MediaPipe, TensorFlow Lite); before the command")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert",
        help="check a released GDPW checkpoint and write it in gdpw's format",
        epilog="example: gdpw convert released.pth -o gdpw.pt",
    )
    p.add_argument("checkpoint", help="released .pth file ({generator, discriminator, global_step})")
    p.add_argument("-o", "--output", required=True, help="where to write the gdpw checkpoint")
    _add_allow_pickle(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "inspect",
        help="print a checkpoint's configuration, optionally run one forward pass",
        epilog="example: gdpw inspect gdpw.pt --forward 256",
    )
    p.add_argument("checkpoint", help="gdpw or released checkpoint")
    p.add_argument("--forward", type=int, metavar="SIZE", help="run the generator on random SIZExSIZE inputs")
    _add_allow_pickle(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "export",
        help="write the generator as ONNX (encode.onnx + decode.onnx) and check it with onnxruntime",
        epilog="examples:\n  gdpw export --onnx onnx/                       # the demo generator\n"
               "  gdpw export --onnx onnx/ --checkpoint released_neural_codes.pth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--onnx", required=True, metavar="FOLDER", help="where to write encode.onnx and decode.onnx")
    p.add_argument("--checkpoint", help="gdpw or released checkpoint (default: the shipped demo generator)")
    p.add_argument("--size", type=int, help="crop size of the example inputs (default: the checkpoint's)")
    _add_allow_pickle(p)
    p.set_defaults(func=cmd_export)

    render.add_parser(sub)
    synth.add_parser(sub)
    preprocess.add_parser(sub)
    train.add_parser(sub)
    animate.add_parsers(sub)
    evaluate.add_parser(sub)
    app.add_parser(sub)
    live.add_parser(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger(LOGGER).setLevel(logging.DEBUG)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    # errors users can fix carry one line; anything else is a bug and keeps its traceback
    except (GdpwError, FileNotFoundError) as err:
        print(f"gdpw {args.command}: error: {user_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or unwritable folder: the files written before are intact
        if err.errno not in WRITE_ERRNOS:
            raise
        print(f"gdpw {args.command}: error: {user_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
