"""Human-readable numbers for console output."""

from __future__ import annotations


def si(value: int | float) -> str:
    """5867944 -> '5.87M'; 1481938432 -> '1.48G'."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:g}"
