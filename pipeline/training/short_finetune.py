"""A few optimizer steps of fine-tuning from inherited weights, then the search-split scores: what re-ranking a
search's shortlist runs for each candidate (one Ray Tune trial each).

Inherited weights rank architectures poorly while the supernet is far from converged; a short fine-tune of each
candidate from them is cheap next to a stand-alone training and lifts the ranking's agreement with stand-alone
training (Zhang et al. 2020 report Kendall tau from about 0.5 to 0.6-0.8 after a few steps). The steps follow
the task's ``finetune`` recipe (optimizer, lr, weight decay, augmentation, Mixup/CutMix, label smoothing,
precision, a teacher if it names one) with its schedule compressed into ``steps``. Seeded by the recipe's seed:
the same candidate, recipe and step count give the same weights and scores.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from pipeline.core.arch import Architecture
from pipeline.core.task import Task
from pipeline.data.arrays import paired_scores
from pipeline.shared.errors import UserError
from pipeline.training.recipe import build_step_scheduler
from pipeline.training.run_spec import MODEL, SubjectSpec
from pipeline.training.session import Session
from pipeline.training.subject import model_subject
from pipeline.training.worker import Loaders, Training, build_loaders, build_training, start_epoch, train_step


@dataclasses.dataclass
class ShortFinetune:
    scores: dict[str, Any]  # search split: top1, top1_low, top1_high, top5, loss, images, hits (as a record's)
    state: dict[str, torch.Tensor]  # the fine-tuned model's weights (on the CPU)
    steps: int
    train_loss: float  # mean over the steps
    seconds: float


def finetune_steps(
    task: Task, arch: Architecture, fixed: dict[str, Any], init: dict[str, np.ndarray], steps: int, where: Session
) -> ShortFinetune:
    """Fine-tune ``arch`` from ``init`` (its inherited weights) for ``steps`` steps of ``task``'s train section
    (the caller lays the finetune recipe over it: ``task.for_phase("finetune")``), then score it on the search
    split."""
    start = time.perf_counter()
    loaders = build_loaders(task, where)
    if len(loaders.train) == 0:
        raise UserError(
            f"train.batch_size {task.train.batch_size}: larger than the training split; nothing to fine-tune on"
        )
    subject = model_subject(task, loaders.space, SubjectSpec(MODEL, arch.to_dict(), fixed, init))
    training = build_training(task, subject, where, len(loaders.train))
    training.scheduler = build_step_scheduler(training.optimizer, task.train, steps)
    train_loss = _train(training, loaders, task, steps, where)
    model = subject.model.eval()
    scores = paired_scores(model, loaders.search, where.device, training.autocast())
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return ShortFinetune(scores, state, steps, train_loss, time.perf_counter() - start)


def _train(training: Training, loaders: Loaders, task: Task, steps: int, where: Session) -> float:
    """``steps`` optimizer steps over as many seeded epochs of the training split as they take; the mean loss."""
    net = where.prepare_model(training.subject.model, False)
    net.train()
    done, epoch, total = 0, 0, 0.0
    while done < steps:
        start_epoch(task.train, loaders, epoch, None, where)
        for batch in loaders.train:
            loss, _ = train_step(net, training, task.train, [None], batch, where)
            done += 1
            total += float(loss)
            training.scheduler.step_update(done)
            if done == steps:
                break
        epoch += 1
    return total / steps
