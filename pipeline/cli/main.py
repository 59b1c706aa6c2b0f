"""Entry point of the ``autoformer`` command."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from pipeline import __version__
from pipeline.cli import (
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
from pipeline.shared.ray_console import quiet_driver


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    space_commands.add_parsers(sub)
    train_command.add_parser(sub)
    search_command.add_parsers(sub)
    model_commands.add_parsers(sub)
    retrain_commands.add_parsers(sub)
    fidelity_command.add_parser(sub)
    import_command.add_parser(sub)
    latency_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_driver(args.verbose)
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
        print(f"autoformer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # what was kept has been said by the phase that was interrupted
        return 143 if terminated or isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
