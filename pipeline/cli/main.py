"""Entry point of the ``autoformer`` command."""

from __future__ import annotations

import argparse
import os
import sys

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
from pipeline.shared.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoformer",
        description="AutoFormer: one-shot architecture search for vision transformers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    # Ray folds log lines that differ only in numbers ("[repeated 6x across cluster]"), which would swallow the
    # per-epoch lines of parallel trials and workers: this tool's progress. Read when Ray is first imported.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"autoformer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
