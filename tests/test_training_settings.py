"""The typed training sections (core/training_settings.py) and the one comparison of a re-run against its record
(core/recorded.py)."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.core.recorded import Rules, check_recorded, differences, flatten
from pipeline.core.task import SCHEMA, load_task
from pipeline.core.training_settings import (
    BOOKKEEPING_KEYS,
    DEFAULTS,
    RESUMABLE_KEYS,
    SUPERNET_ONLY_KEYS,
    SupernetRules,
    TrainSettings,
    phase_schema,
    recipe_differences,
)
from pipeline.shared.errors import UserError


def test_the_flat_task_keys_round_trip_through_the_typed_settings() -> None:
    task = load_task("digits", ["train.sampling=sandwich", "train.teacher=none", "train.scale=[0.5, 1.0]"])
    flat = task.train.to_flat()
    assert TrainSettings.from_flat(flat) == task.train and list(flat) == list(SCHEMA["train"])
    assert task.train.supernet.sampling == "sandwich" and task.train.teacher.source is None
    assert task.train.augment.scale == (0.5, 1.0) and flat["scale"] == [0.5, 1.0]  # JSON keeps lists
    assert task.to_dict()["train"] == flat  # what checkpoints and exports record


def test_what_a_key_is_follows_from_where_it_sits() -> None:
    assert set(SUPERNET_ONLY_KEYS) == {f.name for f in dataclasses.fields(SupernetRules)}
    assert "gradient_projection" in SUPERNET_ONLY_KEYS and "checkpoint_every" in BOOKKEEPING_KEYS
    assert set(RESUMABLE_KEYS) == {"epochs", "max_failures", "probe_every", "stop_when_stable"}
    for phase in ("retrain", "finetune"):  # a stand-alone phase cannot set what only a supernet uses
        assert not set(SUPERNET_ONLY_KEYS) & set(phase_schema(phase)) and set(BOOKKEEPING_KEYS) <= set(
            phase_schema(phase)
        )
    assert "lr_scale" in phase_schema("finetune") and "lr_scale" not in phase_schema("retrain")


def test_a_record_from_before_a_key_existed_reads_with_its_default() -> None:
    older = {k: v for k, v in DEFAULTS.items() if k != "gradient_projection"}
    assert TrainSettings.from_flat(older).supernet.gradient_projection == "off"
    assert recipe_differences(older, DEFAULTS) == []


def test_rules_between_keys_name_the_key() -> None:
    with pytest.raises(UserError, match="key 'train.inplace_distillation': 'kl' needs train.sampling = sandwich"):
        load_task("digits", ["train.inplace_distillation=kl"])


def test_one_comparison_one_wording() -> None:
    recorded = flatten({"train": {"epochs": 5, "lr": 0.1}, "search": {"generations": 3}})
    assert recorded == {"train.epochs": 5, "train.lr": 0.1, "search.generations": 3}
    rules = Rules(may_change={"train.epochs"}, may_grow={"search.generations"}, defaults={"train.new": 1})
    same = {**recorded, "train.epochs": 9, "train.new": 1}  # a resumable change and a new key at its default
    assert check_recorded("run 'r'", recorded, same, rules) == []
    grown = check_recorded("run 'r'", recorded, {**recorded, "search.generations": 5}, rules)
    assert [(d.key, d.recorded, d.current, d.grows) for d in grown] == [("search.generations", 3, 5, True)]
    with pytest.raises(UserError, match=r"^search 's' was made with search.generations = 3 \(now 2\); resume"):
        check_recorded("search 's'", recorded, {**recorded, "search.generations": 2}, rules, "resume as it was")
    with pytest.raises(UserError, match=r"run 'r' was made with train.lr = 0.1 \(now 0.2\); re-run with the same"):
        check_recorded("run 'r'", recorded, {**recorded, "train.lr": 0.2}, rules)
    assert [d.key for d in differences(recorded, {**recorded, "train.new": 2}, rules)] == ["train.new"]
    assert [d.key for d in differences({**recorded, "train.gone": 1}, recorded, Rules())] == ["train.gone"]
