"""The three disjoint splits, made from labels with a fixed seed, and the guard that keeps test out of search.

* train: supernet training;
* search: a fixed number of images per class held out of the training data (the paper: 100 per class),
  used to score candidates during search and to track subnets during training;
* test: the dataset's own test/val split, or, when it has none, a second per-class hold-out carved beside
  the search split. Used only to report final models.

Split datasets carry their role; ``require_role`` is how scoring code refuses anything but the search split,
so a candidate cannot be scored on test by accident.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.sources import ImageSource
from pipeline.shared.errors import UserError

ROLES = ("train", "search", "test")


def _fingerprint(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """Indices into the training pool; ``test`` is None when the dataset's own test split is used."""

    train: np.ndarray
    search: np.ndarray
    test: np.ndarray | None
    seed: int

    def summary(self, test_size: int | None = None, dataset: str | None = None) -> dict[str, Any]:
        """What checkpoints and exports record: sizes, seed, where test comes from, index fingerprints, and the
        fingerprint of the dataset's listing (``dataset``: the same for a tree and its pack, local or remote)."""
        out: dict[str, Any] = {
            **({"dataset": dataset} if dataset else {}),
            "seed": self.seed,
            "train": {"size": int(len(self.train)), "fingerprint": _fingerprint(self.train)},
            "search": {"size": int(len(self.search)), "fingerprint": _fingerprint(self.search)},
        }
        if self.test is not None:
            out["test"] = {
                "size": int(len(self.test)),
                "fingerprint": _fingerprint(self.test),
                "source": "carved from training data",
            }
        else:
            out["test"] = {"size": test_size, "source": "dataset's own test/val split"}
        return out


def plan_splits(labels: np.ndarray, search_per_class: int, test_per_class: int | None, seed: int) -> SplitPlan:
    """Per class, shuffle with ``seed`` and hold out the first images for search (then for test, if carved)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, search, test = [], [], []
    need = search_per_class + (test_per_class or 0)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) <= need:
            raise UserError(
                f"class {int(cls)} has {len(members)} training images, too few to hold out {need} "
                f"(splits.search_per_class{' + splits.test_per_class' if test_per_class else ''}) and still train"
            )
        members = rng.permutation(members)
        search.append(members[:search_per_class])
        if test_per_class:
            test.append(members[search_per_class:need])
        train.append(members[need:])
    return SplitPlan(
        train=np.sort(np.concatenate(train)),
        search=np.sort(np.concatenate(search)),
        test=np.sort(np.concatenate(test)) if test_per_class else None,
        seed=seed,
    )


def splits_summary(pool: ImageSource, own_test: ImageSource | None, plan: SplitPlan) -> dict[str, Any]:
    """The plan's record for ``pool`` (and the dataset's own test split, when it has one)."""
    fingerprint = getattr(pool, "fingerprint", None)
    if fingerprint and own_test is not None:
        fingerprint = hashlib.sha256(f"{fingerprint}/{own_test.fingerprint}".encode()).hexdigest()[:16]
    return plan.summary(len(own_test) if own_test is not None else None, fingerprint)


def plan_from_settings(labels: np.ndarray, splits: dict[str, Any], has_own_test: bool) -> SplitPlan:
    """The plan a task's ``splits`` section gives: the one rule training, search and export share, so they all
    hold out the same images. A test split is carved only when the dataset has no test split of its own."""
    test_per_class = None if has_own_test else splits["test_per_class"]
    return plan_splits(labels, splits["search_per_class"], test_per_class, splits["seed"])


class SplitDataset(Dataset):
    """A role-tagged view of a source through an index list, with its transform."""

    def __init__(self, source: ImageSource, indices: np.ndarray | None, transform: Callable, role: str) -> None:
        assert role in ROLES
        self.source, self.transform, self.role = source, transform, role
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[i])
        return self.transform(self.source.load(index)), int(self.source.labels[index])

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]


def require_role(dataset: Any, role: str, purpose: str) -> None:
    """Refuse a dataset of another role (e.g. scoring candidates on the test split)."""
    actual = getattr(dataset, "role", None)
    if actual != role:
        raise UserError(f"{purpose} needs the {role!r} split, got {actual!r}: candidates are never scored on test")
