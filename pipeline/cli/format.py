"""Human-readable numbers for console output, and the one definition of the ``--set`` option."""

from __future__ import annotations

import argparse


def si(value: int | float) -> str:
    """5867944 -> '5.87M'; 1481938432 -> '1.48G'."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:g}"


def add_set_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, example: str) -> None:
    """``--set KEY=VALUE`` (repeatable): task overrides, collected in ``args.overrides``."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a task value, e.g. {example} (repeatable)",
    )
