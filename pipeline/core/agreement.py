"""How well one list of numbers agrees with another, and how sure a score is.

Used to judge predictors against measurements (latency models against timings; inherited accuracy against
stand-alone accuracy in the fidelity report) and to put intervals on accuracies measured on a finite split.
Pure Python: the lists are a few hundred long at most.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


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


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (ties averaged); NaN for a constant list."""
    if len(a) != len(b):
        raise ValueError(f"spearman_rho needs lists of equal length, got {len(a)} and {len(b)}")
    ra, rb = _ranks(a), _ranks(b)
    n = len(ra)
    if n < 2:
        return math.nan
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va and vb else math.nan


def bootstrap_interval(
    statistic: Callable[[Sequence[float], Sequence[float]], float],
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(a, b)`` over pairs drawn with replacement (seeded);
    resamples where the statistic is undefined (NaN) are left out."""
    rng = random.Random(seed)
    n = len(a)
    values = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        value = statistic([a[i] for i in idx], [b[i] for i in idx])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return math.nan, math.nan
    values.sort()
    tail = (1 - level) / 2
    pick = lambda q: values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]  # noqa: E731
    return pick(tail), pick(1 - tail)


def top_k_overlap(a: Sequence[float], b: Sequence[float], k: int) -> float:
    """The share of the ``k`` best by ``a`` that are also among the ``k`` best by ``b`` (1.0: the same set)."""
    k = min(k, len(a))
    best = lambda xs: set(sorted(range(len(xs)), key=lambda i: -xs[i])[:k])  # noqa: E731
    return len(best(a) & best(b)) / k if k else math.nan


def wilson_interval(correct: float, count: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy of ``correct`` hits out of ``count`` images: valid near 0 and 1
    and for small splits, where the normal approximation is not."""
    if count <= 0:
        return math.nan, math.nan
    p = correct / count
    denominator = 1 + z * z / count
    centre = (p + z * z / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided p-value of McNemar's exact test: are two classifiers scored on the same images equally
    accurate? Only the images where they disagree count (``only_a`` right only for a, ``only_b`` only for b);
    exact (binomial), so it stays valid when they disagree on a handful of images, where a normal interval
    of the paired difference would call 4 disagreements out of 4 significant."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)
