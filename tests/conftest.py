"""Shared fixtures: spaces at a reduced image size so supernet tests stay fast on 2 CPU cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# pytest-xdist runs the suite in three processes (pyproject's addopts): each gets a Ray temp dir of its own, so
# that a local Ray or a test cluster of one is never the "latest cluster" another's processes find.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("RAY_TMPDIR", f"/tmp/ray-{os.environ['PYTEST_XDIST_WORKER']}")
# Ray Train's controller looks at its workers every 2 s by default: every training run of the suite (dozens)
# waits that long to notice it has finished. Ray propagates the setting to the workers itself.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# Ray Train looks for preemption notices (a node draining) every 5 s by default: the drill gives one mid-run.
os.environ.setdefault("RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "0.5")

# The multi-node Ray cluster and the S3 server (started only when a test asks for them).
from cluster_fixtures import ray_cluster, s3_server  # noqa: F401

from pipeline.core.space import SearchSpace, builtin_space_names, load_space

ALL_SPACES = builtin_space_names()
# Slicing does not depend on the image size; 32 px keeps even the base supernet's forward cheap.
SMALL_IMAGE = {"digits": None, "autoformer-tiny": 32, "autoformer-small": 32, "autoformer-base": 32}


def space_for_model_tests(name: str) -> SearchSpace:
    space = load_space(name)
    size = SMALL_IMAGE.get(name, 32)
    return space.with_overrides(image_size=size) if size else space


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits_supernet(tmp_path_factory):
    """A freshly initialised (untrained) digits supernet directory with the task and splits recorded, as
    'autoformer train' exports it: search and export code do not care whether the weights were trained."""
    from pipeline.core.task import load_task
    from pipeline.model.supernet import Supernet
    from pipeline.model.supernet_dir import save_supernet
    from pipeline.training.launch import validate_data

    path = tmp_path_factory.mktemp("digits-supernet") / "supernet"
    task = load_task("digits")
    checked = validate_data(task)
    save_supernet(Supernet(checked["space"]), path, task=task.to_dict(), splits=checked["splits"], epochs=0)
    return path


# Tracker settings a developer's shell may have: the shared runs below log offline into their own directories.
TRACKER_ENV = ("MLFLOW_TRACKING_URI", "WANDB_PROJECT", "WANDB_MODE", "MLFLOW_ALLOW_FILE_STORE")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``autoformer ARGS`` in its own process (in ``cwd``), as a user runs it."""
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pipeline.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def offline_trackers(root: Path) -> dict[str, str]:
    """This environment without a developer's tracker settings, W&B offline with its files under ``root``."""
    env = {k: v for k, v in os.environ.items() if k not in TRACKER_ENV}
    env.update(
        WANDB_MODE="offline",
        WANDB_CONFIG_DIR=str(root / "wandb-config"),
        WANDB_CACHE_DIR=str(root / "wandb-cache"),
        WANDB_DATA_DIR=str(root / "wandb-data"),
    )
    return env


@pytest.fixture(scope="session")
def one_worker_training(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One 2-epoch training of digits on one worker (checkpoint every epoch, one random subnet scored), logging
    to TensorBoard, MLflow and W&B (offline, under this run's directory): its storage root and the command's
    output. The training test (tests/test_train_e2e.py) and the tracking test (tests/test_tracking.py) both read
    it; neither changes it."""
    root = tmp_path_factory.mktemp("one-worker-training")
    storage = root / "runs"
    out = run_cli(
        "train", "digits", "--storage", str(storage), "--set", "train.warmup_epochs=1", "--set",
        "train.checkpoint_every=1", "--set", "train.eval_subnets=1", "--set", "train.epochs=2", "--cpus-per-worker",
        "1", "--log", "tensorboard", "--log", "mlflow", "--log", "wandb", env=offline_trackers(root),
    )  # fmt: skip
    return storage, out


# The finished search below: population 6, 5 generations, seed 7.
FINISHED_SEARCH = ["--population", "6", "--generations", "5", "--set", "search.parents=3", "--seed", "7", "--set",
                   "search.latency_repeats=1"]  # fmt: skip


@pytest.fixture(scope="session")
def finished_search(tmp_path_factory, digits_supernet) -> tuple[Path, subprocess.CompletedProcess]:
    """One finished search of the session's supernet (``FINISHED_SEARCH``, run 'whole', logging each candidate to
    TensorBoard and MLflow under the run): its storage root and the command's output. The interrupted search's
    test (tests/test_search_e2e.py) compares with its candidates, the refused resume's (tests/test_reliability.py)
    resumes it with other settings, the tracking test (tests/test_tracking.py) reads what it logged; none changes
    it (the re-ranking test works on a copy)."""
    root = tmp_path_factory.mktemp("finished-search")
    storage = root / "runs"
    out = run_cli(
        "search", "digits", "--supernet", str(digits_supernet), "--storage", str(storage), "--name", "whole",
        *FINISHED_SEARCH, "--log", "tensorboard", "--log", "mlflow", env=offline_trackers(root),
    )  # fmt: skip
    return storage, out


# Session fixtures that run a command: the tests using one run in the same xdist process, so it runs once.
SHARED_RUNS = ("one_worker_training", "finished_search")
# Module fixtures that cost seconds (a cluster, an S3 server, a Ray instance, a command's run): a module using one
# runs in one xdist process, so they start once.
MODULE_SETUPS = ("ray_cluster", "s3_server", "local_ray", "fidelity_run", "digits")


def _groups(items: list) -> dict[str, str | None]:
    """Each test's xdist group (None: any process may take it): the session runs it uses, and its module when
    it uses a costly module fixture, merged wherever one test joins two of them."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    keys = {}
    for item in items:
        used = getattr(item, "fixturenames", ())
        mine = [run for run in SHARED_RUNS if run in used]
        if any(name in used for name in MODULE_SETUPS):
            mine.append(item.nodeid.split("::", 1)[0])
        for key in mine[1:]:
            parent[find(key)] = find(mine[0])
        keys[item.nodeid] = mine[0] if mine else None
    return {nodeid: key and find(key) for nodeid, key in keys.items()}


# Seconds the longest tests took in CI (its "slowest 30 durations", setup included; refresh from there when
# they move): the processes take the longest work first, so that neither is left with a long test at the end
# while the other has finished. A scheduling hint only: a test missing here counts as SLOW_S or FAST_S.
SECONDS = {
    "test_interrupted_search_resumes_to_the_same_candidates_and_extends": 138,
    "test_sigterm_checkpoints_at_the_next_step_and_resumes_to_the_same_weights": 123,
    "test_search_on_two_nodes_from_s3_survives_an_interrupt_and_a_lost_node": 112,
    "test_interrupted_driver_resumes_when_run_again": 100,
    "test_retrain_resume_finetune_and_transfer": 98,
    "test_pack_train_and_search_from_object_storage": 90,
    "test_training_on_two_nodes_with_s3_survives_a_killed_driver_and_a_lost_node": 65,
    "test_fidelity_report_end_to_end_and_resumed": 65,
    "test_fidelity_with_two_seeds_reports_the_ceiling": 60,
    "test_a_finished_search_is_re_ranked_and_picks_on_the_re_ranked_scores": 55,
    "test_search_survives_an_evaluator_death_and_writes_results": 54,
    "test_worker_failure_restarts_from_last_checkpoint": 43,
    "test_resuming_a_search_with_other_settings_is_refused": 39,
    "test_two_workers_ddp": 38,
    "test_sandwich_inplace_and_teacher_train_with_two_workers": 37,
    "test_search_survives_the_router_dying": 36,
    "test_a_corrupt_image_met_mid_epoch_stops_training_in_one_line": 35,
    "test_retrain_from_a_search_row_and_a_taken_name": 33,
    "test_the_probe_scores_while_training_and_its_stop_rule_ends_the_run": 32,
    "test_a_full_disk_stops_training_in_one_line_and_leaves_no_unfinished_checkpoint": 30,
    "test_a_killed_driver_leaves_no_ray_processes_behind": 29,
    "test_search_with_a_latency_model_times_only_the_exports": 29,
    "test_training_logs_every_epoch_to_each_backend": 28,
    "test_one_worker_trains_checkpoints_and_exports": 28,
    "test_fidelity_with_the_stand_alone_scores_of_an_earlier_run": 27,
    "test_requests_this_machine_can_never_place_fail_in_seconds": 21,
}
SLOW_S, FAST_S = 10.0, 0.5


def _seconds(item) -> float:
    default = SLOW_S if item.get_closest_marker("slow") is not None else FAST_S
    return SECONDS.get(getattr(item, "originalname", item.name), default)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups (it runs first otherwise)
def pytest_collection_modifyitems(config, items) -> None:
    """xdist groups (``_groups``), and the order the processes take work in: the longest groups and tests first
    (``SECONDS``). Within a group, and among tests of equal weight, the collection's order stays."""
    groups = _groups(items)
    weight: dict[str, float] = {}
    first: dict[str, int] = {}
    for item in items:
        scope = groups[item.nodeid] or item.nodeid
        weight[scope] = weight.get(scope, 0.0) + _seconds(item)
        first.setdefault(scope, len(first))
    items.sort(key=lambda i: (-weight[groups[i.nodeid] or i.nodeid], first[groups[i.nodeid] or i.nodeid]))
    for item in items:
        if groups[item.nodeid]:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
