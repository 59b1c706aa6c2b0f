"""How well one list of numbers agrees with another: rank correlation and relative error.

Used to judge predictors against measurements (latency models against timings; later, inherited accuracy
against stand-alone accuracy). Pure Python: the lists are a few hundred long at most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either list handled); NaN for fewer than two pairs or a constant list."""
    if len(a) != len(b):
        raise ValueError(f"kendall_tau needs lists of equal length, got {len(a)} and {len(b)}")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denominator if denominator else math.nan


def mape(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Mean absolute percentage error of ``predicted`` against ``actual`` (as a fraction: 0.05 is 5 %)."""
    if len(predicted) != len(actual) or not actual:
        raise ValueError("mape needs two non-empty lists of equal length")
    return sum(abs(p - t) / abs(t) for p, t in zip(predicted, actual)) / len(actual)
