"""Entry point of the ``autoformer`` command."""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import threading
from typing import Any, NoReturn

from pipeline import __version__
from pipeline.cli import (
    data_command,
    fidelity_command,
    import_command,
    latency_command,
    model_commands,
    retrain_commands,
    search_command,
    space_commands,
    train_command,
)
from pipeline.shared.errors import Terminated, UserError
from pipeline.shared.ray_console import DASHBOARD_ENV, quiet_driver, stop_forwarding


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoformer",
        description="AutoFormer: one-shot architecture search for vision transformers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also Ray's own console output (start-up and authentication notes, backend warnings)",
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="start Ray's dashboard with the Ray a command starts on this machine, and print its address (off by "
        "default: it slows every start; on a cluster, the cluster's own dashboard)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    space_commands.add_parsers(sub)
    train_command.add_parser(sub)
    search_command.add_parsers(sub)
    model_commands.add_parsers(sub)
    retrain_commands.add_parsers(sub)
    fidelity_command.add_parser(sub)
    import_command.add_parser(sub)
    latency_command.add_parser(sub)
    data_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_driver(args.verbose)
    if args.dashboard:
        os.environ[DASHBOARD_ENV] = "1"
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        """SIGTERM (a spot node's notice) stops every phase as Ctrl-C does, keeping what it saves; training
        installs its own while it runs (a checkpoint at the next step)."""
        terminated.append(signum)
        signal.raise_signal(signal.SIGINT)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return args.func(args)
    except UserError as exc:
        stop_forwarding()
        print(f"autoformer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # what was kept has been said by the phase that was interrupted
        return 143 if terminated or isinstance(exc, Terminated) else 130


def run() -> NoReturn:
    """The ``autoformer`` command: ``main``, then an exit that skips tearing down the interpreter's modules.

    With torch, timm and Ray loaded, that teardown takes 1.5-2 s after the work is done, on every command (and on
    every command of the test suite). What an exit must still do is done first: the exit handlers (Ray's shutdown,
    pyarrow's S3 finaliser, temporary directories; ``atexit._run_exitfuncs`` is not documented, but it is the
    interpreter's own way to run them) and flushing the console. A thread that is still working (it would be
    joined at a normal exit) gets the normal exit.
    """
    code = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
