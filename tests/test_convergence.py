"""The convergence probe's arithmetic and settings (pure Python; the probe in a training run is in
tests/test_train_e2e.py)."""

from __future__ import annotations

import math

import pytest

from pipeline.core.agreement import wilson_interval
from pipeline.core.convergence import (
    Evaluation,
    held,
    next_evaluation,
    probe_cost,
    probe_due,
    probe_interval,
    stable_since,
    summary,
)
from pipeline.core.task import load_task
from pipeline.shared.errors import UserError
from pipeline.training.probe import build_probe, check_probe_size, probe_summary, probe_table


def test_auto_interval_keeps_the_probe_at_a_tenth_of_an_epoch() -> None:
    # digits: 16 architectures x 200 search images, 0.6 of a step each, against 1,297 training images
    assert probe_interval("auto", 16, 200, 1297) == 15
    assert probe_interval("auto", 16, 200, 1297, subnets_per_step=4) == 4  # a sandwich epoch costs 4 subnets
    assert probe_interval("auto", 16, 10_000, 1_281_167) == 1  # ImageNet with a 10,000-image search split
    assert probe_interval(5, 16, 200, 1297) == 5
    # the fewest epochs that keep the probe's forward passes at most a tenth of the training images in between
    share = lambda every: 16 * 200 * 0.6 / (1297 * every)  # noqa: E731
    assert share(15) <= 0.1 < share(14)


def test_the_probe_is_due_every_interval_and_after_the_last_epoch() -> None:
    assert [e for e in range(1, 21) if probe_due(e, 9, 20)] == [2, 11, 20]  # equal gaps, ending at the last
    assert [e for e in range(1, 4) if probe_due(e, 1, 3)] == [1, 2, 3]


def _history(*taus: float) -> list[Evaluation]:
    return [Evaluation(epoch=i + 1, top1=(0.1, 0.2), count=100, tau=t) for i, t in enumerate(taus)]


def test_tau_is_against_the_previous_evaluation_and_undefined_for_ties() -> None:
    first = next_evaluation([], 1, [0.1, 0.2, 0.3], 200)
    assert math.isnan(first.tau)
    same = next_evaluation([first], 2, [0.2, 0.3, 0.4], 200)
    assert same.tau == 1.0
    flipped = next_evaluation([first, same], 3, [0.4, 0.3, 0.2], 200)
    assert flipped.tau == -1.0
    tied = next_evaluation([], 1, [0.1, 0.1, 0.1], 200)
    assert math.isnan(next_evaluation([tied], 2, [0.1, 0.1, 0.1], 200).tau)  # a constant ranking says nothing


def test_spread_counts_score_intervals() -> None:
    e = Evaluation(epoch=1, top1=(0.5, 0.6, 0.7), count=200, tau=math.nan)
    widths = sorted(hi - lo for lo, hi in (wilson_interval(t * 200, 200) for t in e.top1))
    assert e.spread() == pytest.approx(0.2 / widths[1])
    assert Evaluation(epoch=1, top1=(0.1, 0.1), count=200, tau=math.nan).spread() == 0.0


def test_the_stop_rule_needs_consecutive_evaluations_at_its_tau() -> None:
    assert held(_history(math.nan, 0.5, 0.9, 0.95), 0.9, 2)
    assert not held(_history(math.nan, 0.9, 0.5, 0.95), 0.9, 2)
    assert not held(_history(0.95), 0.9, 2)  # not enough evaluations yet
    assert not held(_history(math.nan), -1.0, 1)  # an undefined tau never counts
    assert stable_since(_history(math.nan, 0.9, 0.5, 0.95, 0.92), 0.9) == 4
    assert stable_since(_history(0.9, 0.95, 0.5), 0.9) is None


def test_summary_records_the_last_tau_and_since_when_it_held() -> None:
    record = summary(_history(math.nan, 0.85, 0.9), [0.8, 2])
    assert record["last_tau"] == 0.9 and record["stable_since"] == 2 and record["threshold"] == 0.8
    assert record["stop_when_stable"] == [0.8, 2] and record["evaluations"] == 3
    assert summary([], None)["last_tau"] is None and summary(_history(math.nan), None)["last_tau"] is None


def test_probe_settings_are_checked_and_the_probe_set_is_seeded() -> None:
    task = load_task("digits", ["train.probe_archs=5", "train.probe_every=2", "train.stop_when_stable=[0.9, 3]"])
    probe = build_probe(task, task.space(), 200, 1297)
    assert probe is not None and len(probe.archs) == 5 and probe.every == 2 and probe.rule == (0.9, 3)
    again = build_probe(load_task("digits", ["train.probe_archs=5"]), task.space(), 200, 1297)
    assert [a.key for a in again.archs] == [a.key for a in probe.archs]  # the same set from the same seed
    assert build_probe(load_task("digits", ["train.probe_archs=0"]), task.space(), 200, 1297) is None
    for bad, words in (
        ("train.probe_archs=-1", "train.probe_archs"),
        ("train.probe_every=0", "auto or an integer >= 1"),
        ("train.stop_when_stable=[0.9, 0]", "[tau, evaluations]"),
        ("train.stop_when_stable=[2, 3]", "[tau, evaluations]"),
        ("train.stop_when_stable=0.9", "[tau, evaluations]"),
    ):
        with pytest.raises(UserError, match=words.replace("[", r"\[")):
            load_task("digits", [bad])
    huge = load_task("digits", ["train.probe_archs=100000"])
    with pytest.raises(UserError, match=r"key 'train.probe_archs': 100000 is more than the .* architectures"):
        check_probe_size(huge, huge.space())


def test_the_probe_table_has_a_row_per_evaluation_and_architecture() -> None:
    state = {
        "probe": {"archs": ["a", "b"], "params": [10, 20], "every": 1, "history": []},
        "task": {"train": {}},
    }
    for e in (Evaluation(1, (0.1, 0.2), 100, math.nan, 2.0), Evaluation(2, (0.15, 0.3), 100, 1.0, 3.0)):
        state["probe"]["history"].append(e.to_dict())
    table = probe_table(state).to_pylist()
    assert [(r["epoch"], r["architecture"]) for r in table] == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]
    assert table[3]["top1"] == 0.3 and table[3]["tau"] == 1.0 and table[3]["top1_low"] < 0.3 < table[3]["top1_high"]
    assert [r["seconds"] for r in table] == [2.0, 2.0, 3.0, 3.0]


def test_the_probe_reports_what_it_cost() -> None:
    """Each evaluation's scoring time against the epochs' training time; a history from before evaluations were
    timed (no ``seconds``) counts nothing rather than failing."""
    timed = [Evaluation(1, (0.1, 0.2), 100, math.nan, 2.0), Evaluation(2, (0.15, 0.3), 100, 1.0, 3.0)]
    assert probe_cost(timed, 100.0) == (5.0, 0.05)
    old = Evaluation.from_dict({"epoch": 1, "top1": [0.1], "count": 10, "tau": math.nan})
    assert math.isnan(old.seconds) and probe_cost([old], 100.0) == (0.0, 0.0)
    state = {
        "probe": {"archs": ["a", "b"], "params": [10, 20], "every": 1, "history": [e.to_dict() for e in timed]},
        "task": {"train": {}},
        "history": [{"epoch_time_s": 50.0}, {"epoch_time_s": 50.0}],
        "epoch": 2,
    }
    assert "probe of 2 architectures (2 evaluations, 5 s: 5.0 % of the training time): tau 1.00" in probe_summary(
        state, 2
    )
