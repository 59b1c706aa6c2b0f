"""How well one list of numbers agrees with another, and how sure a score is.

Used to judge predictors against measurements (latency models against timings; inherited accuracy against
stand-alone accuracy in the fidelity report) and to put intervals on accuracies measured on a finite split.
The statistics are scipy.stats' (tested, and maintained by others); this module keeps the project's names and
its conventions on top: NaN where a statistic is undefined rather than a warning, plain floats (they go into
JSON and YAML files), and a seeded bootstrap that leaves out resamples where the statistic is undefined.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


def _scipy() -> tuple[ModuleType, ModuleType]:
    """numpy and scipy.stats, imported when a statistic is first computed: importing scipy.stats takes about a
    second, which the commands that never compute one (and ``import pipeline``) should not pay."""
    import numpy
    from scipy import stats

    return numpy, stats


def _check_pairs(name: str, a: Sequence[float], b: Sequence[float]) -> bool:
    """Raise on lists of different lengths; True when there are at least two pairs to correlate."""
    if len(a) != len(b):
        raise ValueError(f"{name} needs lists of equal length, got {len(a)} and {len(b)}")
    return len(a) >= 2


def _settled(value: float) -> float:
    """``value`` rounded to 12 decimals. scipy divides by two square roots where the textbook formula takes
    one of a product, so a perfect ranking with ties comes out as 1 - 2e-16; this gives back the exact 1.0 (or
    -1.0) that reports and comparisons expect, and moves no other value by a difference that could matter."""
    return round(float(value), 12)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either list handled); NaN for fewer than two pairs or a constant list."""
    if not _check_pairs("kendall_tau", a, b):
        return math.nan
    with warnings.catch_warnings():  # a constant list: NaN is the answer, not a warning
        warnings.simplefilter("ignore")
        return _settled(_scipy()[1].kendalltau(a, b, variant="b").statistic)


def mape(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Mean absolute percentage error of ``predicted`` against ``actual`` (as a fraction: 0.05 is 5 %)."""
    if len(predicted) != len(actual) or not actual:
        raise ValueError("mape needs two non-empty lists of equal length")
    return sum(abs(p - t) / abs(t) for p, t in zip(predicted, actual)) / len(actual)


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (ties averaged); NaN for fewer than two pairs or a
    constant list."""
    if not _check_pairs("spearman_rho", a, b):
        return math.nan
    with warnings.catch_warnings():  # scipy warns about a constant list; NaN says it here
        warnings.simplefilter("ignore")
        return _settled(_scipy()[1].spearmanr(a, b).statistic)


def bootstrap_interval(
    statistic: Callable[[Sequence[float], Sequence[float]], float],
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(a, b)`` over pairs drawn with replacement (seeded).

    ``scipy.stats.bootstrap`` (paired, percentile method) draws the resamples. A resample can make the statistic
    undefined (a rank correlation of a resample that repeats one pair); those are left out and the percentiles
    taken over the rest, where scipy's own interval would turn NaN. Without such resamples the interval is
    exactly scipy's. NaN, NaN when fewer than two pairs or no resample is defined.
    """
    if not _check_pairs("bootstrap_interval", a, b):
        return math.nan, math.nan
    np, stats = _scipy()
    with warnings.catch_warnings():  # NaN resamples and degenerate distributions are handled below
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (np.asarray(a, dtype=float), np.asarray(b, dtype=float)),
            statistic,
            n_resamples=resamples,
            vectorized=False,
            paired=True,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    values = np.asarray(result.bootstrap_distribution, dtype=float)
    if np.isnan(values).all():
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])  # what scipy's percentile method computes
    return float(low), float(high)


def top_k_overlap(a: Sequence[float], b: Sequence[float], k: int) -> float:
    """The share of the ``k`` best by ``a`` that are also among the ``k`` best by ``b`` (1.0: the same set)."""
    k = min(k, len(a))
    best = lambda xs: set(sorted(range(len(xs)), key=lambda i: -xs[i])[:k])  # noqa: E731
    return len(best(a) & best(b)) / k if k else math.nan


def wilson_interval(correct: float, count: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy of ``correct`` hits out of ``count`` images: valid near 0 and 1
    and for small splits, where the normal approximation is not. ``correct`` is rounded to whole images (the
    binomial counts them); ``z`` picks another two-sided level. NaN, NaN for no images."""
    if count <= 0:
        return math.nan, math.nan
    level = math.erf(z / math.sqrt(2))  # the two-sided level whose normal quantile is z
    interval = _scipy()[1].binomtest(round(correct), int(count)).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided p-value of McNemar's exact test: are two classifiers scored on the same images equally
    accurate? Only the images where they disagree count (``only_a`` right only for a, ``only_b`` only for b);
    exact (binomial), so it stays valid when they disagree on a handful of images, where a normal interval
    of the paired difference would call 4 disagreements out of 4 significant."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    return float(_scipy()[1].binomtest(min(only_a, only_b), n, 0.5).pvalue)
