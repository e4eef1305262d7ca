"""``gdpw app``: serve the web UI."""

from __future__ import annotations

import argparse
from typing import Any

from gdpw.common.config import add_arguments, from_args
from gdpw.common.errors import MissingAssetError
from gdpw.pipeline import AnimateConfig

EXCLUDED = ("checkpoint",)  # the page offers several checkpoints (--checkpoint repeats)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("app", help="web UI: animate and edit portraits in the browser",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  gdpw app                                   # http://127.0.0.1:7860 with the demo generator
  gdpw app --checkpoint released_neural_codes.pth --flame generic_model.pkl \\
      --landmark-embedding landmark_embedding.npy --port 8080""")
    p.add_argument("--checkpoint", action="append", default=[], help="extra checkpoints to offer (repeatable)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    add_arguments(p, AnimateConfig, exclude=EXCLUDED)
    p.set_defaults(func=run)


def app_config(args: argparse.Namespace) -> AnimateConfig:
    """The animation options every checkpoint of the page runs with."""
    return from_args(AnimateConfig, args, exclude=EXCLUDED)


def run(args: argparse.Namespace) -> None:
    launch(args, args.checkpoint, app_config(args))


def launch(args: argparse.Namespace, checkpoints: list[str], base: AnimateConfig, **page: Any) -> None:
    """Serve the page (``build_app``'s ``page`` options) on ``--host``/``--port`` until interrupted."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise MissingAssetError("the web UI needs Gradio: pip install 'gdpw[app]'") from None
    from gdpw.app.web import build_app, checkpoint_choices

    app = build_app(checkpoint_choices(checkpoints), base, **page)
    try:
        app.queue().launch(server_name=args.host, server_port=args.port)
    finally:
        app.gdpw_state.close()  # the animators and the session's temporary files
