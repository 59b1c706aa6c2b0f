"""pipeline.core.agreement on scipy.stats gives the numbers its hand-written predecessor gave.

``Old`` below is a verbatim copy of the pure-Python implementations the module had before it moved to
scipy.stats (commit 3659bfc), kept here as the reference. Kendall tau-b, Spearman rho, the Wilson interval
and the exact McNemar p-value are deterministic: they must agree to rounding. The bootstrap is not: the old
code drew resamples with ``random.Random`` and took nearest-rank percentiles, scipy draws them with numpy's
generator and interpolates, so for the same seed the two intervals are different Monte Carlo estimates of
the same percentiles. "The same" there means: within Monte Carlo error on an example large enough for that
error to be small (checked below at 0.02, about 5 standard errors of a 2.5 % quantile from 2000 resamples),
and exactly scipy's own percentile interval whenever no resample is undefined.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from scipy import stats

from pipeline.core.agreement import (
    bootstrap_interval,
    kendall_tau,
    mcnemar_p,
    spearman_rho,
    wilson_interval,
)


class Old:
    """The hand-written implementations as they were (reference only)."""

    @staticmethod
    def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
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

    @staticmethod
    def _ranks(values: Sequence[float]) -> list[float]:
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

    @staticmethod
    def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
        ra, rb = Old._ranks(a), Old._ranks(b)
        n = len(ra)
        if n < 2:
            return math.nan
        ma, mb = sum(ra) / n, sum(rb) / n
        cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
        va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
        return cov / math.sqrt(va * vb) if va and vb else math.nan

    @staticmethod
    def bootstrap_interval(
        statistic: Callable[[Sequence[float], Sequence[float]], float],
        a: Sequence[float],
        b: Sequence[float],
        resamples: int = 2000,
        seed: int = 0,
        level: float = 0.95,
    ) -> tuple[float, float]:
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
        pick = lambda q: values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]
        return pick(tail), pick(1 - tail)

    @staticmethod
    def wilson_interval(correct: float, count: int, z: float = 1.959963984540054) -> tuple[float, float]:
        if count <= 0:
            return math.nan, math.nan
        p = correct / count
        denominator = 1 + z * z / count
        centre = (p + z * z / (2 * count)) / denominator
        half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
        return max(0.0, centre - half), min(1.0, centre + half)

    @staticmethod
    def mcnemar_p(only_a: int, only_b: int) -> float:
        n = only_a + only_b
        if n == 0:
            return 1.0
        tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
        return min(1.0, 2 * tail / 2**n)


def _pairs() -> list[tuple[list[float], list[float]]]:
    """Inputs with and without ties, reversed, short, 0/1 accuracies, and constant lists."""
    rng = random.Random(0)
    a = [rng.randint(0, 5) for _ in range(40)]  # many ties
    noisy = [x + rng.random() * 3 for x in a]
    hits_a = [rng.randint(0, 1) for _ in range(60)]  # 0/1 accuracies: ties in both lists
    hits_b = [h if rng.random() < 0.7 else 1 - h for h in hits_a]
    smooth = [rng.gauss(0, 1) for _ in range(50)]
    return [
        (a, noisy),
        (noisy, a),
        (hits_a, hits_b),
        (smooth, [x + rng.gauss(0, 0.5) for x in smooth]),
        ([1, 2, 3, 4], [4, 3, 2, 1]),
        ([1, 2, 2, 3], [1, 3, 2, 3]),
        ([0.5, 0.7], [0.2, 0.1]),
        ([1, 1, 1], [1, 2, 3]),  # constant: NaN
        ([1, 2, 3], [7, 7, 7]),
        ([3], [4]),  # one pair: NaN
        ([], []),
    ]


@pytest.mark.parametrize("index", range(len(_pairs())))
def test_rank_correlations_match_the_hand_written_ones(index: int) -> None:
    a, b = _pairs()[index]
    for new, old in ((kendall_tau, Old.kendall_tau), (spearman_rho, Old.spearman_rho)):
        expected = old(a, b) if a else math.nan  # the old Kendall loop gave NaN for [] by a zero denominator
        got = new(a, b)
        assert type(got) is float
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


def test_rank_correlations_refuse_lists_of_different_lengths() -> None:
    for f in (kendall_tau, spearman_rho):
        with pytest.raises(ValueError, match="equal length"):
            f([1, 2, 3], [1, 2])


@pytest.mark.parametrize("correct,count", [(0, 1), (1, 1), (0, 50), (50, 50), (1, 50), (420, 1000), (7, 9), (3, 0)])
def test_wilson_interval_matches_the_formula(correct: int, count: int) -> None:
    got, expected = wilson_interval(correct, count), Old.wilson_interval(correct, count)
    if count == 0:
        assert all(math.isnan(x) for x in got)
        return
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= got[0] <= correct / count <= got[1] <= 1.0
    z99 = 2.5758293035489004
    assert wilson_interval(correct, count, z99) == pytest.approx(Old.wilson_interval(correct, count, z99), abs=1e-12)


def test_wilson_interval_takes_the_float_hit_counts_callers_pass() -> None:
    assert wilson_interval(420.0, 1000) == pytest.approx(Old.wilson_interval(420, 1000), abs=1e-12)


@pytest.mark.parametrize(
    "only_a,only_b", [(0, 0), (4, 0), (0, 4), (3, 3), (1, 2), (30, 10), (10, 30), (0, 25), (60, 45), (200, 180)]
)
def test_mcnemar_matches_the_exact_binomial_sum(only_a: int, only_b: int) -> None:
    assert mcnemar_p(only_a, only_b) == pytest.approx(Old.mcnemar_p(only_a, only_b), rel=1e-9, abs=1e-300)


def _correlated(n: int, seed: int) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    a = [rng.random() for _ in range(n)]
    return a, [x + rng.gauss(0, 0.3) for x in a]


@pytest.mark.parametrize("statistic", [kendall_tau, spearman_rho])
def test_bootstrap_interval_agrees_with_the_old_one_within_monte_carlo_error(statistic) -> None:
    # The old resampling and percentile code, given the same statistic, so only the bootstrap itself differs.
    a, b = _correlated(150, seed=2)
    new = bootstrap_interval(statistic, a, b, resamples=2000, seed=0)
    old = Old.bootstrap_interval(statistic, a, b, resamples=2000, seed=0)
    assert new == pytest.approx(old, abs=0.02)
    assert new[0] < statistic(a, b) < new[1]


def test_bootstrap_interval_is_scipys_percentile_interval() -> None:
    a, b = _correlated(40, seed=3)
    expected = stats.bootstrap(
        (np.asarray(a), np.asarray(b)),
        kendall_tau,
        n_resamples=500,
        vectorized=False,
        paired=True,
        method="percentile",
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert bootstrap_interval(kendall_tau, a, b, resamples=500, seed=7) == pytest.approx(tuple(expected), abs=1e-12)
    assert bootstrap_interval(kendall_tau, a, b, resamples=500, seed=7, level=0.5) != pytest.approx(tuple(expected))


def test_bootstrap_interval_leaves_out_undefined_resamples() -> None:
    # Five pairs: about 1 resample in 600 repeats one pair (a constant list, NaN); the rest are all 1.0.
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert bootstrap_interval(kendall_tau, a, a, resamples=2000) == (1.0, 1.0)
    assert Old.bootstrap_interval(kendall_tau, a, a, resamples=2000) == (1.0, 1.0)
    # Two pairs: half the resamples are constant; the defined ones are all -1.
    assert bootstrap_interval(spearman_rho, [1, 2], [2, 1], resamples=200) == (-1.0, -1.0)
    assert all(math.isnan(x) for x in bootstrap_interval(kendall_tau, [1, 1, 1], [1, 2, 3], resamples=50))
    assert all(math.isnan(x) for x in bootstrap_interval(kendall_tau, [1], [2], resamples=50))


def test_bootstrap_interval_is_seeded() -> None:
    a, b = _correlated(30, seed=4)
    first = bootstrap_interval(spearman_rho, a, b, resamples=300, seed=5)
    assert first == bootstrap_interval(spearman_rho, a, b, resamples=300, seed=5)
    assert first != bootstrap_interval(spearman_rho, a, b, resamples=300, seed=6)


def test_perfect_rankings_with_ties_are_exactly_one() -> None:
    # scipy's tau-b comes out as 1 - 2e-16 here; the module rounds it back (reports and tests compare to 1.0).
    assert kendall_tau([1, 1, 2, 3, 3], [5, 5, 6, 7, 7]) == 1.0
    assert kendall_tau([1, 1, 2, 3, 3], [7, 7, 6, 5, 5]) == -1.0
    assert spearman_rho([1, 2], [2, 3]) == 1.0
