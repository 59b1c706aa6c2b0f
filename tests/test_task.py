"""Tasks: built-in files, the paper's recipe, overrides and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.task import Task, builtin_task_names, load_task
from pipeline.shared.errors import UserError


def test_builtin_tasks_load() -> None:
    names = builtin_task_names()
    assert {"digits", "cifar10", "cifar100", "imagefolder", "imagenet-tiny", "imagenet-small", "imagenet-base"} <= set(
        names
    )
    for name in names:
        task = load_task(name, ["data.root=/data"])
        space = task.space(num_classes=task.data["num_classes"] or 10)
        assert space.image_size == task.data["image_size"] and space.in_chans == task.data["in_chans"]


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_imagenet_tasks_follow_the_paper_recipe(size: str) -> None:
    task = load_task(f"imagenet-{size}", ["data.root=/imagenet"])
    t = task.train.to_flat()
    assert task.space_name == f"autoformer-{size}" and task.space().patch_size == 16 and task.space().image_size == 224
    assert (t["epochs"], t["optimizer"], t["batch_size"], t["lr"], t["lr_base_batch"]) == (
        500,
        "adamw",
        1024,
        1e-3,
        1024,
    )
    assert (t["weight_decay"], t["warmup_epochs"], t["label_smoothing"]) == (0.05, 20, 0.1)
    assert (t["mixup"], t["cutmix"], t["random_erasing"], t["randaugment"]) == (0.8, 1.0, 0.25, "rand-m9-mstd0.5-inc1")
    assert task.model["drop_path_rate"] == 0.1 and task.splits["search_per_class"] == 100


def test_overrides_are_parsed_and_round_trip() -> None:
    task = load_task(
        "digits", ["train.epochs=7", "train.scale=[0.5, 1.0]", "train.clip_grad=null", "model.sharing=classical"]
    )
    assert task.train.epochs == 7 and task.train.augment.scale == (0.5, 1.0) and task.train.optim.clip_grad is None
    assert task.model["sharing"] == "classical"
    assert Task.from_dict(task.to_dict()) == task


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.epoch=3"], "unknown key 'train.epoch'; train keys are epochs"),
        (["epochs=3"], "unknown key 'epochs'"),
        (["train.epochs"], "expected key=value"),
        (["train.epochs=0"], "'train.epochs': value 0 is not allowed; expected an integer >= 1"),
        (["train.epochs=ten"], "'train.epochs': value 'ten'"),
        (
            ["model.sharing=spos"],
            "'model.sharing': value 'spos' is not allowed; expected one of entangled, classical, classical_strict",
        ),
        (["train.scale=[0.9, 0.1]"], "'train.scale'"),
        (["data.mean=[0.1, 0.2]"], "'data.mean'.*one entry per channel"),
        (["data.image_size=9"], "does not fit space 'digits'.*patch_size 2 does not divide image_size 9"),
        (["space=nope"], "unknown search space 'nope'"),
    ],
)
def test_bad_overrides_give_one_clear_error(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_task("digits", overrides)


def test_task_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "space: digits\ndata: {dataset: digits, image_size: 8, in_chans: 1, mean: [0.3], std: [0.4]}\nextra: 1\n"
    )
    with pytest.raises(UserError, match="unknown section 'extra'"):
        load_task(path)
    with pytest.raises(UserError, match="data.root' is required"):
        load_task("imagefolder")
    with pytest.raises(UserError, match="unknown task 'nope'"):
        load_task("nope")
    with pytest.raises(UserError, match="space_overrides.image_size"):
        load_task("digits", ["space_overrides.image_size=16"])
