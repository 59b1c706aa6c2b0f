"""What a training run is told: where and how big it runs (``RunSpec``, from the user), what it trains
(``SubjectSpec``), and everything a worker or a trial needs to run the loop (``WorkerConfig``).

Typed, so that the driver that builds them (``launch.prepare_run`` and ``fit_run``, a fidelity trial) and the
loop that reads them (``worker.run_training``) cannot disagree on a key or a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pipeline.core.task import Task
from pipeline.shared.errors import UserError
from pipeline.shared.tracking import TrackingPlan

SUPERNET = "supernet"
MODEL = "model"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Where a training run runs and how big it is; the same for train, retrain and finetune.

    Args:
        workers: DDP ranks (Ray Train workers); the task's batch is split over them.
        gpu: one GPU per worker (NCCL, bf16 autocast where the recipe says auto).
        storage: the runs' root, a local path or ``s3://`` / ``gs://`` (every node must see it).
        name: the run's name under ``storage`` (each command has its default); the same name resumes.
        cpus_per_worker: Ray CPUs per worker (None: a fair share of the nodes that can host one).
        log: experiment trackers rank 0 also logs every epoch to (tensorboard, mlflow, wandb).
    """

    workers: int = 1
    gpu: bool = False
    storage: str | None = None
    name: str | None = None
    cpus_per_worker: float | None = None
    log: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UserError(f"workers {self.workers}: must be at least 1")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise UserError(f"cpus_per_worker {self.cpus_per_worker}: must be positive")


@dataclasses.dataclass(frozen=True)
class SubjectSpec:
    """What a run trains: the supernet, or one architecture as a stand-alone model.

    Args:
        kind: ``SUPERNET`` or ``MODEL``.
        architecture: the model's architecture (``Architecture.to_dict()``); None for the supernet.
        fixed: the model's fixed parts (patch size, classes, ...); None for the supernet.
        init: the model's initial weights (numpy state dict, or its Ray object reference); None: seeded fresh.
    """

    kind: str = SUPERNET
    architecture: dict[str, Any] | None = None
    fixed: dict[str, Any] | None = None
    init: Any = None


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """Everything one run of the training loop needs (a Ray Train rank, or a fidelity trial).

    Args:
        task: the task; its train section is the recipe to run (a phase's recipe already laid over it).
        subject: what is trained.
        phase: the name of the progress lines (train, retrain, finetune, fidelity ARCH).
        attempt: the id of the driver's ``fit()`` call: tells a restart (same id) from a resume.
        threads: torch CPU threads.
        newest_checkpoint: the newest complete checkpoint the driver found ({path, epoch}) or None.
        run: (storage, name) of a Ray Train run, whose checkpoints each start looks at again; None in a trial.
        tracking: the experiment trackers' plan (rank 0 logs).
        extra_metrics: added to every report (a fidelity trial's inherited scores).
    """

    task: Task
    subject: SubjectSpec
    phase: str
    attempt: str
    threads: int
    newest_checkpoint: dict[str, Any] | None = None
    run: tuple[str, str] | None = None
    tracking: TrackingPlan | None = None
    extra_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
