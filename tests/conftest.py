"""Shared fixtures: spaces at a reduced image size so supernet tests stay fast on 2 CPU cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# pytest-xdist runs the suite in two processes (pyproject's addopts): each gets a Ray temp dir of its own, so
# that a local Ray or a test cluster of one is never the "latest cluster" the other's processes find.
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


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups (it runs first otherwise)
def pytest_collection_modifyitems(config, items) -> None:
    """xdist groups (``_groups``), and the order the processes take work in: the groups and tests with the most
    slow (end-to-end) tests first, so that neither process is left with a long test at the end while the other
    has finished. Within a group, and among the fast tests, the collection's order stays."""
    groups = _groups(items)
    slow = {}
    for item in items:
        scope = groups[item.nodeid] or item.nodeid
        slow[scope] = slow.get(scope, 0) + (item.get_closest_marker("slow") is not None)
    first = {}
    for item in items:
        first.setdefault(groups[item.nodeid] or item.nodeid, len(first))
    items.sort(key=lambda i: (-slow[groups[i.nodeid] or i.nodeid], first[groups[i.nodeid] or i.nodeid]))
    for item in items:
        if groups[item.nodeid]:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
