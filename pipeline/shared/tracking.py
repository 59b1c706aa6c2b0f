"""Experiment tracking (``--log tensorboard|mlflow|wandb``): where a run's metrics go besides its own files.

The driver resolves every destination once, before Ray starts (``plan_tracking``): a chosen tracker that is not
installed, or one that cannot write where the run's storage is, is one clear error then, not a worker failure
minutes later. Training logs each epoch from rank 0 through ``open_trackers`` (one small class per backend),
because the workers report to Ray only at checkpoint epochs; the search uses Ray Tune's own logger callbacks
(``pipeline.search.tracking``). Each backend's package is imported only when it is chosen, so the command line
starts as fast without them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.storage import is_uri, join

BACKENDS = ("tensorboard", "mlflow", "wandb")
MODULES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}  # what each backend imports
PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow-skinny", "wandb": "wandb"}  # what pip installs
TENSORBOARD_DIR = "tensorboard"  # in a run directory: the event files of a training run
MLFLOW_DIR = "mlruns"  # in a run directory: the MLflow file store, when MLFLOW_TRACKING_URI names none
DEFAULT_WANDB_PROJECT = "autoformer"


@dataclasses.dataclass(frozen=True)
class TrackingPlan:
    """Where a run's metrics go, resolved on the driver; it travels to rank 0 in the Ray Train config."""

    backends: tuple[str, ...]
    run: str  # the run name: the MLflow experiment and the W&B run name (a search's W&B group)
    run_path: str  # <storage>/<name>, a local path or a URI
    mlflow_uri: str | None  # MLFLOW_TRACKING_URI, else the file store in a local run directory
    wandb_project: str  # WANDB_PROJECT, else "autoformer"
    wandb_mode: str | None  # WANDB_MODE (online, offline, disabled), else W&B's own default

    @property
    def local_dir(self) -> str | None:
        """The run directory when it is on local disk (TensorBoard and W&B files go there), else None."""
        return None if is_uri(self.run_path) else self.run_path


def check_installed(backends: Sequence[str]) -> tuple[str, ...]:
    """The chosen backends, each once, in order; a name not offered or a package not installed is a UserError.

    ``find_spec`` answers without importing: the driver of a training run never needs the trackers themselves.
    """
    chosen = tuple(dict.fromkeys(backends))
    for backend in chosen:
        if backend not in BACKENDS:
            raise UserError(f"tracking backend {backend!r}: choose from {', '.join(BACKENDS)}")
        try:
            found = importlib.util.find_spec(MODULES[backend]) is not None
        except (ImportError, ValueError):  # a parent package missing, or an entry in sys.modules that is not one
            found = False
        if not found:
            raise UserError(
                f"tracking backend {backend} needs the {PACKAGES[backend]} package: pip install "
                f"{PACKAGES[backend]} (or pip install 'autoformer-pipeline[tracking]' for every tracker)"
            )
    return chosen


def plan_tracking(backends: Sequence[str], storage: str, name: str, *, by_tune: bool = False) -> TrackingPlan:
    """Check the chosen backends and resolve where each writes for run ``storage/name``.

    ``by_tune``: Ray Tune's callbacks write the files (a search); TensorBoard event files then go into each
    trial's directory, which Tune copies to any storage. A training run's event files and the default MLflow file
    store need a local run directory: on URI storage the first is refused and the second needs a server
    (``MLFLOW_TRACKING_URI``).
    """
    chosen = check_installed(backends)
    run_path = join(storage, name)
    if "tensorboard" in chosen and is_uri(storage) and not by_tune:
        raise UserError(
            f"tracking backend tensorboard writes event files to a local directory, not to storage {storage!r}; "
            f"use mlflow (with MLFLOW_TRACKING_URI) or wandb with this storage"
        )
    mlflow_uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    if "mlflow" in chosen and mlflow_uri is None:
        if is_uri(storage):
            raise UserError(
                f"tracking backend mlflow with storage {storage!r} needs an MLflow server: set MLFLOW_TRACKING_URI "
                f"(the default file store lives in a local run directory)"
            )
        mlflow_uri = Path(run_path, MLFLOW_DIR).as_uri()
    project = os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT
    return TrackingPlan(chosen, name, run_path, mlflow_uri, project, os.environ.get("WANDB_MODE") or None)


def allow_file_store(uri: str | None) -> None:
    """MLflow 3 refuses its file store (maintenance mode) unless told otherwise; the default store here is one,
    chosen because it needs no database packages and no server."""
    if uri is not None and ("://" not in uri or uri.startswith("file:")):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics every backend can plot: numbers, without the epoch (it is the step)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class TensorBoardTracker:
    """Event files in ``<run>/tensorboard``; a resumed run adds a new file beside the old ones, step = epoch."""

    def __init__(self, plan: TrackingPlan, params: dict[str, Any], recorded: str | None) -> None:
        from tensorboardX import SummaryWriter

        self.id = join(plan.run_path, TENSORBOARD_DIR)
        # tensorboardX names event files by the second: a run resumed within the same second (a fast restart)
        # would overwrite the earlier file; nanoseconds keep them apart and in order
        self.writer = SummaryWriter(self.id, filename_suffix=f".{time.time_ns()}")
        if recorded is None:
            rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
            self.writer.add_text("params", "| param | value |\n| --- | --- |\n" + rows, global_step=0)
        self.where = f"tensorboard {self.id}"

    def log(self, metrics: dict[str, float], epoch: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=epoch)
        self.writer.flush()

    def close(self, failed: bool) -> None:
        self.writer.close()


class MLflowTracker:
    """One MLflow run in the experiment named after the run; its id is kept in the checkpoint state, so a resumed
    run continues it. Params (the recipe) are logged once, when the run is created: MLflow params are immutable."""

    def __init__(self, plan: TrackingPlan, params: dict[str, Any], recorded: str | None) -> None:
        allow_file_store(plan.mlflow_uri)
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(plan.mlflow_uri)
        self.id = None
        if recorded is not None:
            try:
                if self.client.get_run(recorded).info.lifecycle_stage == "active":
                    self.id = recorded
                    self.client.update_run(recorded, status="RUNNING")
            except MlflowException:  # deleted, or another tracking server now: start a new run
                pass
        if self.id is None:
            experiment = self.client.get_experiment_by_name(plan.run)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(plan.run)
            self.id = self.client.create_run(experiment_id, run_name=plan.run).info.run_id
            self.client.log_batch(self.id, params=[Param(k, str(v)) for k, v in params.items()])
        self.where = f"mlflow {plan.mlflow_uri} (experiment {plan.run}, run {self.id})"

    def log(self, metrics: dict[str, float], epoch: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, now, epoch) for k, v in metrics.items()])

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.id, "FAILED" if failed else "FINISHED")


class WandbTracker:
    """One W&B run (project ``WANDB_PROJECT`` or "autoformer", named after the run); its id is kept in the
    checkpoint state and the run resumed with ``resume="allow"``. Epoch is the x axis, so epochs logged again
    after a restart from an earlier checkpoint are kept, not dropped as steps going backwards."""

    def __init__(self, plan: TrackingPlan, params: dict[str, Any], recorded: str | None) -> None:
        import wandb

        self.id = recorded or uuid.uuid4().hex[:8]
        self.run = wandb.init(
            project=plan.wandb_project,
            name=plan.run,
            id=self.id,
            resume="allow",
            dir=plan.local_dir,
            mode=plan.wandb_mode,
            config=params,
            allow_val_change=True,  # a resumed run may have more epochs
            settings=wandb.Settings(silent=True, console="off"),  # our own lines are the progress
        )
        self.run.define_metric("*", step_metric="epoch")
        self.where = f"wandb project {plan.wandb_project}, run {self.id} ({self.run.settings.mode})"

    def log(self, metrics: dict[str, float], epoch: int) -> None:
        self.run.log({**metrics, "epoch": epoch})

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}


class RunTrackers:
    """The trackers rank 0 logs each epoch to (none on other ranks, or without ``--log``). A context manager: a
    run that ends with an exception is marked failed where the backend knows the difference."""

    def __init__(self, trackers: dict[str, Any]) -> None:
        self.trackers = trackers

    @property
    def ids(self) -> dict[str, str]:
        """What the checkpoint state records, so that a resumed run continues the same tracking runs."""
        return {name: tracker.id for name, tracker in self.trackers.items()}

    def log(self, metrics: dict[str, Any], epoch: int) -> None:
        numbers = _numbers(metrics)
        for tracker in self.trackers.values():
            tracker.log(numbers, epoch)

    def __enter__(self) -> RunTrackers:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for tracker in self.trackers.values():
            tracker.close(failed=exc is not None)


def open_trackers(
    plan: TrackingPlan | None, params: dict[str, Any], recorded: dict[str, str], phase: str
) -> RunTrackers:
    """Open (or, with the ids ``recorded`` in the checkpoint state, continue) the plan's tracking runs."""
    if plan is None or not plan.backends:
        return RunTrackers({})
    trackers = {b: TRACKERS[b](plan, params, recorded.get(b)) for b in plan.backends}
    say(f"[{phase}] logging every epoch to " + "; ".join(t.where for t in trackers.values()))
    return RunTrackers(trackers)
