"""Errors a restart cannot fix (a corrupt image met mid-epoch, a full disk) end a training run at once, in one
line, leaving no unfinished checkpoint behind."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from test_data_at_scale import DIGITS_TREE_SETTINGS, make_tree

from pipeline.data.packed import GROUP_ROWS
from pipeline.shared.errors import UserError
from pipeline.training.fatal import FatalTrainingError, StopOnFatal, fatal_line, no_space


def _wrapped(inner: BaseException) -> BaseException:
    """``inner`` as a worker's error reaches Ray Train's controller: raised inside other errors."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("a Ray Data task failed") from exc
    except RuntimeError as outer:
        return outer


def test_fatal_errors_are_found_inside_whatever_wraps_them() -> None:
    assert fatal_line(_wrapped(UserError("unreadable image 'a.png': cannot identify image file"))) == (
        "unreadable image 'a.png': cannot identify image file"
    )
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoint_1/optimizer.pt")
    assert fatal_line(_wrapped(full)).startswith("no space left writing /runs/x/checkpoint_1/optimizer.pt")
    assert no_space(_wrapped(full)) and not no_space(_wrapped(UserError("x")))
    assert no_space(_wrapped(FatalTrainingError(fatal_line(full))))  # the worker's line, the OSError left behind
    assert fatal_line(_wrapped(ConnectionError("node died"))) is None  # a lost node: Ray Train restarts
    assert fatal_line(OSError(errno.ECONNRESET, "reset")) is None
    loader = UserError(
        "Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        "  File \"x.py\", line 1, in f\npipeline.shared.errors.UserError: unreadable image 'b.png': truncated\n"
    )
    assert fatal_line(loader) == "unreadable image 'b.png': truncated"
    from ray.exceptions import RayTaskError

    task_error = RayTaskError("MapBatches", "Traceback ...", UserError("unreadable image 'c.png'"))
    assert fatal_line(_wrapped(task_error.as_instanceof_cause())) == "unreadable image 'c.png'"


def test_the_callback_ends_the_run_only_for_fatal_errors() -> None:
    callback = StopOnFatal()
    callback.after_exception(None, {0: _wrapped(ConnectionError("node died"))})  # no raise: Ray restarts
    with pytest.raises(FatalTrainingError, match="unreadable image"):
        callback.after_exception(None, {0: _wrapped(ConnectionError("x")), 1: _wrapped(UserError("unreadable image"))})


def _corrupt_one_image(pack: Path) -> str:
    """Overwrite one image of the pack's first training shard with bytes that are not an image."""
    shard = sorted((pack / "train").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    images = table.column("image").to_pylist()
    images[1] = b"not an image"
    table = table.set_column(table.schema.get_field_index("image"), "image", [images])
    pq.write_table(table, shard, row_group_size=GROUP_ROWS)
    return shard.name


def _train(tmp_path: Path, root: str, storage: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = [
        *DIGITS_TREE_SETTINGS,
        f"data.root={root}",
        *("train.epochs=2", "train.warmup_epochs=1", "train.eval_subnets=1", "train.max_failures=3"),
        *extra,
    ]
    options = [a for s in sets for a in ("--set", s)]
    return run_cli("train", "digits", *options, "--storage", str(storage), "--name", "t", timeout=600)


@pytest.mark.slow
def test_a_corrupt_image_met_mid_epoch_stops_training_in_one_line(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    packed = run_cli("data", "pack", str(tree), str(tmp_path / "pack"), "--shard-size", "4KB")
    assert packed.returncode == 0, packed.stderr[-2000:]
    shard = _corrupt_one_image(tmp_path / "pack")
    trained = _train(tmp_path, str(tmp_path / "pack"), tmp_path / "runs")
    assert trained.returncode == 2, trained.stdout[-2000:] + trained.stderr[-3000:]
    last = trained.stderr.strip().splitlines()[-1]
    assert last.startswith("autoformer: error: train run 't' stopped, not restarted: unreadable image"), last
    assert shard in last
    assert "Traceback" not in trained.stderr, trained.stderr[-3000:]  # the tracebacks saying it again are gone
    assert "restarted" not in trained.stdout and "continuing from" not in trained.stdout, "a restart cannot help"


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode == 0


@pytest.mark.slow
def test_a_full_disk_stops_training_in_one_line_and_leaves_no_unfinished_checkpoint(tmp_path: Path) -> None:
    storage = tmp_path / "small"
    if not _mount_tmpfs(storage, "3m"):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        trained = _train(tmp_path, str(make_tree(tmp_path / "tree")), storage, "train.checkpoint_every=1")
        assert trained.returncode == 2, trained.stdout[-2000:] + trained.stderr[-3000:]
        last = trained.stderr.strip().splitlines()[-1]
        assert "stopped, not restarted: no space left" in last and f"storage {storage}" in last, last
        assert ("one checkpoint takes" in last) == any(p.is_dir() for p in (storage / "t").glob("checkpoint_*")), last
        assert "Traceback" not in trained.stderr, trained.stderr[-3000:]
        assert "restarted" not in trained.stdout and "continuing from" not in trained.stdout, "a restart cannot help"
        checkpoints = sorted(p for p in (storage / "t").glob("checkpoint_*") if p.is_dir())
        for directory in checkpoints:  # every checkpoint left is one a resume can use
            assert {p.name for p in directory.iterdir()} >= {"state.json", "supernet.safetensors", "optimizer.pt"}
    finally:
        subprocess.run(["umount", str(storage)])


def test_a_failed_trial_is_one_line_of_its_own_error_and_tune_keeps_its_traceback_to_itself(monkeypatch) -> None:
    """Re-ranking and fidelity name each failed trial's own error; Tune's traceback of it stays in error.txt."""
    import os

    from ray.exceptions import RayTaskError

    from pipeline.shared.ray_console import own_trial_errors, trial_cause

    wrapped = RayTaskError("ImplicitFunc.train", "Traceback ...", UserError("task 'digits': no such split"))
    assert trial_cause(wrapped.as_instanceof_cause()) == "task 'digits': no such split"
    assert trial_cause(ValueError()) == "ValueError"
    monkeypatch.setenv("TUNE_PRINT_ALL_TRIAL_ERRORS", "1")
    with own_trial_errors():
        assert os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] == "0"
    assert os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] == "1"  # as it was: a later search prints its trials' errors
    monkeypatch.delenv("TUNE_PRINT_ALL_TRIAL_ERRORS")
    with own_trial_errors():
        pass
    assert "TUNE_PRINT_ALL_TRIAL_ERRORS" not in os.environ
