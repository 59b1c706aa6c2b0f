"""Entry point of the ``autoformer`` command."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any, TextIO

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


def quiet_console(verbose: bool) -> None:
    """Our progress lines and the warnings that matter, nothing else by default.

    Ray folds log lines that differ only in numbers ("[repeated 6x across cluster]"), which would swallow the
    per-epoch lines of parallel trials and workers: never. Unless ``verbose``: Ray's Python loggers say
    warnings and errors only (no start-up and dashboard lines) in the driver and the processes a local Ray
    starts, its token-authentication note is hidden, and colour codes are stripped when output is not a
    terminal. Environment variables are read when Ray is first imported, so this runs before any command
    imports it.
    """
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if verbose:
        return
    os.environ.setdefault("RAY_LOGGER_LEVEL", "warning")
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    sys.stdout, sys.stderr = _Console(sys.stdout), _Console(sys.stderr)


class _Console:
    """A text stream without Ray's known-harmless lines, and without ANSI colour codes when it is not a
    terminal (Ray colours the prefix of every worker line it forwards)."""

    CODES = re.compile(r"\x1b\[[0-9;]*m")
    # Forwarded from Ray's own processes, harmless, printed on every run: the Train controller's note about its
    # PreemptionWatcher actor, and the traceback of the placement-group cleaner's monitor thread when another
    # Ray instance runs on the same machine (it cannot tell which to watch; the run is not affected). And DDP's
    # note, printed by torch's C++ side (past Python's warning filters) whenever a step uses every parameter,
    # that find_unused_parameters was set: a supernet step usually leaves most of them out, so it must be.
    HARMLESS = re.compile(
        r"'PreemptionWatcher' and ID|\(PlacementGroupCleaner pid=|find_unused_parameters=True was specified in DDP"
    )
    # The same cleaner, when it has already left for that reason, makes the controller print a note spread over
    # several forwarded lines: dropped from its first line to the one that ends it, at most MULTILINE_MAX lines.
    MULTILINE = {"Failed to register placement group with cleaner": "may not be cleaned up if controller dies"}
    MULTILINE_MAX = 12

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._plain, self._dropped = stream, not stream.isatty(), False
        self._until: str | None = None
        self._left = 0

    def write(self, text: str) -> int:
        if self._until is not None and text != "\n":
            self._left -= 1
            if self._until in text or self._left <= 0:
                self._until = None
            self._dropped = True
            return len(text)
        end = next((last for first, last in self.MULTILINE.items() if first in text), None)
        if end is not None and end not in text:
            self._until, self._left = end, self.MULTILINE_MAX
        if end is not None or self.HARMLESS.search(text) or (self._dropped and text == "\n"):
            self._dropped = text != "\n"
            return len(text)
        self._dropped = False
        return self._stream.write(self.CODES.sub("", text) if self._plain else text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_console(args.verbose)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"autoformer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # what was kept has been said by the phase that was interrupted
        return 130


if __name__ == "__main__":
    sys.exit(main())
