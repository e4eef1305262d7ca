"""``gdpw app``: serve the web UI."""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from typing import Any

from gdpw.common.config import add_arguments, from_args
from gdpw.common.errors import MissingAssetError, UsageError
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


def check_port(host: str, port: int) -> None:
    """Refuse, before anything is loaded, a port that is out of range or already in use."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be within 1..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: a closing port is free
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UsageError(f"cannot serve on {host}:{port} ({err.strerror}); choose another with --port") from None


def launch(args: argparse.Namespace, checkpoints: list[str], base: AnimateConfig, **page: Any) -> None:
    """Serve the page (``build_app``'s ``page`` options) on ``--host``/``--port`` until interrupted."""
    check_port(args.host, args.port)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise MissingAssetError("the web UI needs Gradio: pip install 'gdpw[app]'") from None
    from gdpw.app.web import MAX_UPLOAD, build_app, checkpoint_choices

    app = build_app(checkpoint_choices(checkpoints), base, **page)
    # SIGTERM (a service manager, docker stop) ends the server as Ctrl-C does, so the folders are removed
    main_thread = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    try:
        app.queue().launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        app.gdpw_state.close()  # the animators and the session's temporary files


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
