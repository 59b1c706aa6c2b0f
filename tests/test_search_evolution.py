"""The search strategy without Ray or torch: mutation/crossover invariants, constraints, memoisation, resume."""

from __future__ import annotations

import dataclasses
import itertools
import math
import pickle
import random

import pytest

from pipeline.core.arch import Architecture, in_space
from pipeline.core.complexity import count_params, space_ranges
from pipeline.core.pareto import (
    crowding_distances,
    dominates,
    non_dominated_fronts,
    nsga_order,
)
from pipeline.core.records import pareto_front
from pipeline.core.sampling import sample_architecture
from pipeline.core.space import SearchSpace, load_space
from pipeline.core.task import SCHEMA, load_task
from pipeline.search.constraints import Constraints
from pipeline.search.evolution import (
    Settings,
    Strategy,
    crossover,
    mutate,
    ranked,
)
from pipeline.search.settings import PARTS, Rerank, SearchSettings
from pipeline.shared.errors import UserError

SPACES = ["digits", "autoformer-tiny", "autoformer-base"]


def _settings(**changes) -> Settings:
    """Strategy settings at the search section's defaults (the task schema's: the one place they are written),
    with ``changes``; built directly, so shares that do not fit the population are not capped."""
    values = {key: default for key, (default, _) in SCHEMA["search"].items()} | changes
    return Settings(**{f.name: values[f.name] for f in dataclasses.fields(Settings)})


def _fake_top1(arch: Architecture, space: SearchSpace) -> float:
    """A deterministic stand-in for an evaluator: bigger is better, with a gene-dependent wiggle."""
    p = count_params(arch, space)
    return round(math.log(p) / 20 + (sum(arch.num_heads) % 7) / 1000, 6)


def _run(strategy: Strategy, stop_after: int | None = None) -> list[str]:
    """Drive a strategy like the Tune searcher would, evaluating in proposal order; returns the keys in order."""
    order = []
    while not strategy.finished:
        candidate = strategy.next()
        if candidate is None:
            continue
        order.append(candidate.key)
        strategy.complete(
            candidate.key,
            {
                "status": "ok",
                "top1": _fake_top1(candidate.arch, strategy.space),
                "top5": 1.0,
                "loss": 0.0,
                "latency_ms": 1.0,
            },
        )
        if stop_after is not None and len(order) == stop_after:
            break
    return order


@pytest.mark.parametrize("name", SPACES)
def test_mutation_stays_in_space_and_handles_depth(name: str) -> None:
    space = load_space(name)
    rng = random.Random(0)
    grew = shrank = 0
    for _ in range(400):
        parent = sample_architecture(space, rng)
        child = mutate(parent, space, rng, depth_prob=0.5, gene_prob=0.4)
        assert in_space(child, space)
        assert len(child.num_heads) == len(child.mlp_ratio) == child.depth
        keep = min(parent.depth, child.depth)
        if child.depth > parent.depth:
            grew += 1
        if child.depth < parent.depth:
            shrank += 1
            # removed layers come off the end: no surviving layer moved
        assert all(h in space.num_heads for h in child.num_heads[keep:])
    assert grew and shrank


def test_mutation_probabilities_zero_and_one() -> None:
    space = load_space("autoformer-tiny")
    rng = random.Random(1)
    for _ in range(50):
        parent = sample_architecture(space, rng)
        assert mutate(parent, space, rng, depth_prob=0.0, gene_prob=0.0) == parent
        child = mutate(parent, space, rng, depth_prob=0.0, gene_prob=1.0)
        assert child.depth == parent.depth and child.embed_dim == parent.embed_dim


@pytest.mark.parametrize(("mode", "expected"), [("per_layer", 0.4), ("per_gene", 1 - 0.6**2)])
def test_mutation_mode_sets_how_often_a_layer_changes(mode: str, expected: float) -> None:
    """The paper's P_m is per block (a layer changes with 0.4); the reference code's per-gene loop gives 0.64.
    A re-drawn gene can land on its old value, so the observed rate is the draw rate times the chance of a change."""
    space = load_space("autoformer-tiny")
    rng = random.Random(4)
    parent = Architecture(192, 13, (3,) * 13, (3.5,) * 13)
    layers = changed = 0
    for _ in range(3000):
        child = mutate(parent, space, rng, depth_prob=0.0, gene_prob=0.4, mode=mode)
        layers += parent.depth
        changed += sum(
            (h, r) != (ph, pr)
            for h, r, ph, pr in zip(child.num_heads, child.mlp_ratio, parent.num_heads, parent.mlp_ratio)
        )
    p_same_heads, p_same_ratio = 1 / len(space.num_heads), 1 / len(space.mlp_ratio)
    if mode == "per_layer":
        rate = 0.4 * (1 - p_same_heads * p_same_ratio)
    else:
        rate = 1 - (1 - 0.4 * (1 - p_same_heads)) * (1 - 0.4 * (1 - p_same_ratio))
    assert changed / layers == pytest.approx(rate, abs=0.01)
    assert rate <= expected


def test_mutation_truncates_from_the_end() -> None:
    space = load_space("autoformer-tiny")
    parent = Architecture(192, 14, (4,) * 7 + (3,) * 7, (4.0,) * 14)
    rng = random.Random(3)
    for _ in range(200):
        child = mutate(parent, space, rng, depth_prob=1.0, gene_prob=0.0)
        keep = min(child.depth, parent.depth)
        assert child.num_heads[:keep] == parent.num_heads[:keep] and child.mlp_ratio[:keep] == parent.mlp_ratio[:keep]


def test_crossover_takes_each_gene_from_a_parent() -> None:
    space = load_space("autoformer-small")
    rng = random.Random(2)
    a = Architecture(320, 13, (5,) * 13, (3.0,) * 13)
    b = Architecture(448, 13, (7,) * 13, (4.0,) * 13)
    children = [crossover(a, b, rng) for _ in range(100)]
    for c in children:
        assert in_space(c, space) and c.depth == 13
        assert c.embed_dim in (320, 448)
        assert all(h in (5, 7) for h in c.num_heads) and all(r in (3.0, 4.0) for r in c.mlp_ratio)
    assert len({c.key for c in children}) > 50  # genes really mix
    with pytest.raises(ValueError, match="equal depth"):
        crossover(a, Architecture(320, 12, (5,) * 12, (3.0,) * 12), rng)


@pytest.mark.parametrize("objective", ["constrained", "pareto"])
def test_strategy_respects_constraints_and_never_repeats(objective: str) -> None:
    space = load_space("digits")
    constraints = Constraints(min_params=40_000, max_params=120_000, max_macs=2_000_000)
    settings = _settings(
        objective=objective, population=20, generations=6, parents=5, mutations=10, crossovers=10, seed=4
    )
    strategy = Strategy(space, constraints, settings)
    keys = _run(strategy)
    assert len(keys) == len(set(keys)) == 120  # memoisation: nothing proposed twice, full budget used
    records = strategy.records()
    assert all(constraints.violation(r["params"], r["macs"]) is None for r in records)
    assert {r["generation"] for r in records} == set(range(6))
    later = [r["origin"] for r in records if r["generation"] > 0]
    assert later.count("mutation") > 20 and later.count("crossover") > 20
    assert all(r["origin"] == "random" for r in records if r["generation"] == 0)
    # the last generation is ranked like the others
    last = [r for r in records if r["generation"] == 5]
    assert {r["key"] for r in last} <= {r["key"] for r in strategy.ranking()}


def test_evolution_beats_random_on_a_smooth_objective() -> None:
    space = load_space("digits")
    constraints = Constraints(max_params=100_000)
    best = {}
    for algorithm in ("evolution", "random"):
        strategy = Strategy(
            space,
            constraints,
            _settings(
                algorithm=algorithm, population=20, generations=8, parents=5, mutations=10, crossovers=10, seed=0
            ),
        )
        _run(strategy)
        assert len(strategy.records()) == 160  # same budget
        best[algorithm] = strategy.ranking()[0]["top1"]
        if algorithm == "random":
            assert {r["origin"] for r in strategy.records()} == {"random"}
    assert best["evolution"] >= best["random"]


def test_constraints_that_exclude_the_space_fail_early() -> None:
    space = load_space("digits")
    lo, hi = space_ranges(space)["params"]
    with pytest.raises(UserError, match="below the smallest architecture"):
        Constraints(max_params=lo - 1).check_feasible(space)
    with pytest.raises(UserError, match="above the largest architecture"):
        Constraints(min_params=hi + 1).check_feasible(space)
    with pytest.raises(UserError, match="max_macs"):
        Constraints(max_macs=10).check_feasible(space)
    with pytest.raises(UserError, match="exceeds max_params"):
        Constraints(min_params=50_000, max_params=40_000)
    Constraints(max_params=lo, min_params=lo).check_feasible(space)  # the smallest member alone is fine


def test_a_window_no_architecture_hits_fails_after_bounded_tries() -> None:
    space = load_space("digits")
    lo, _ = space_ranges(space)["params"]
    strategy = Strategy(
        space,
        Constraints(min_params=lo + 1, max_params=lo + 2),
        _settings(population=10, generations=2, parents=2, mutations=4, crossovers=4),
    )
    with pytest.raises(UserError, match="no architecture .* satisfies the constraints"):
        strategy.start()


def test_a_tiny_space_is_exhausted_without_hanging() -> None:
    base = load_space("digits").to_dict()
    space = SearchSpace.from_dict({**base, "embed_dim": [32], "depth": [2], "num_heads": [2, 3], "mlp_ratio": [2.0]})
    assert space.num_architectures() == 4
    strategy = Strategy(
        space, Constraints(), _settings(population=10, generations=5, parents=2, mutations=4, crossovers=4)
    )
    keys = _run(strategy)
    assert sorted(keys) == sorted(
        {a.key for a in (Architecture(32, 2, h, (2.0, 2.0)) for h in itertools.product((2, 3), repeat=2))}
    )
    assert strategy.finished and strategy.shortfalls


def test_pickled_strategy_resumes_the_same_sequence() -> None:
    space = load_space("digits")
    settings = _settings(population=12, generations=5, parents=4, mutations=6, crossovers=6, seed=11)
    whole = _run(Strategy(space, Constraints(max_params=150_000), settings))
    interrupted = Strategy(space, Constraints(max_params=150_000), settings)
    first = _run(interrupted, stop_after=29)  # mid-generation
    restored = pickle.loads(pickle.dumps(interrupted))
    assert first + _run(restored) == whole


def test_settings_are_checked() -> None:
    """Each value once, by the task schema when the task loads; what relates fields, by the settings' parts."""
    with pytest.raises(UserError, match="exceed search.population"):
        _settings(population=10, mutations=6, crossovers=6)
    with pytest.raises(UserError, match="algorithm"):
        load_task("digits", ["search.algorithm=annealing"])
    with pytest.raises(UserError, match="pareto_costs"):
        load_task("digits", ["search.pareto_costs=[flops]"])
    with pytest.raises(UserError, match="search.max_params': value -5"):
        load_task("digits", ["search.max_params=-5"])
    with pytest.raises(UserError, match="exceeds max_params"):
        SearchSettings.from_task(load_task("digits", ["search.min_params=50000", "search.max_params=40000"]))


def test_search_settings_hold_each_key_of_the_search_section_once() -> None:
    """One typed model: the strategy's part, the constraints' part and the evaluation sizes split the section's
    keys between them, and carry the task's values (shares capped to fit a small population)."""
    parts = [dataclasses.fields(Settings), dataclasses.fields(Constraints), dataclasses.fields(Rerank)]
    own = [f for f in dataclasses.fields(SearchSettings) if f.name not in PARTS]
    names = [f.name for fields in (*parts, own) for f in fields]
    assert sorted(names) == sorted(SCHEMA["search"])  # every key, none twice
    task = load_task("digits", ["search.population=6", "search.seed=3", "search.max_macs=900000"])
    settings = SearchSettings.from_task(task)
    section = settings.to_section()
    assert set(section) == set(SCHEMA["search"])
    assert {k: v for k, v in section.items() if k not in ("parents", "mutations", "crossovers", "pareto_costs")} == {
        k: v for k, v in task.search.items() if k not in ("parents", "mutations", "crossovers", "pareto_costs")
    }
    s = settings.strategy
    assert (s.population, s.parents, s.mutations, s.crossovers, s.seed) == (6, 6, 3, 3, 3)
    assert s.pareto_costs == tuple(task.search["pareto_costs"]) and settings.constraints.max_macs == 900_000


def test_pareto_sorting_matches_brute_force() -> None:
    rng = random.Random(5)
    points = [(rng.randint(0, 20), rng.randint(0, 20)) for _ in range(80)]
    fronts = non_dominated_fronts(points)
    assert sorted(i for f in fronts for i in f) == list(range(80))
    brute = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    assert fronts[0] == brute
    for k in range(1, len(fronts)):  # every member of front k is dominated by some member of front k-1
        assert all(any(dominates(points[j], points[i]) for j in fronts[k - 1]) for i in fronts[k])
    crowd = crowding_distances(points, fronts[0])
    assert sum(math.isinf(v) for v in crowd.values()) >= min(2, len(fronts[0]))
    order = nsga_order(points)
    assert sorted(order) == list(range(80)) and order == nsga_order(points)


def test_ranking_and_front_use_only_scored_candidates() -> None:
    recs = [
        {"key": "a", "status": "ok", "top1": 0.9, "params": 100, "macs": 10, "latency_ms": 1.0},
        {"key": "b", "status": "ok", "top1": 0.8, "params": 50, "macs": 20, "latency_ms": 1.0},
        {"key": "c", "status": "ok", "top1": 0.7, "params": 60, "macs": 5, "latency_ms": 1.0},
        {"key": "d", "status": "over_latency", "top1": math.nan, "params": 10, "macs": 1, "latency_ms": 9.0},
    ]
    assert [r["key"] for r in ranked(recs, _settings())] == ["a", "b", "c"]
    assert [r["key"] for r in pareto_front(recs, "params")] == ["b", "a"]
    assert [r["key"] for r in pareto_front(recs, "macs")] == ["c", "a"]
    assert {r["key"] for r in ranked(recs, _settings(objective="pareto"))[:2]} == {"a", "b"}
