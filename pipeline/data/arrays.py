"""The search (or test) split as one uint8 array, decoded once, plus exact on-the-fly normalisation and scoring.

Evaluator actors keep the whole split in memory (on the GPU when there is one). Storing the eval-transformed
images as uint8 (before normalisation) takes a quarter of float32's memory, and normalising a batch as
``(u8 / 255 - mean) / std`` performs the same float operations as timm's ``ToTensor`` + ``Normalize``, so
scores are bit-identical to evaluating through the DataLoader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.core.agreement import wilson_interval
from pipeline.core.task import Task
from pipeline.data.sources import open_sources
from pipeline.data.splits import SplitDataset, plan_from_settings, require_role, splits_summary
from pipeline.data.transforms import eval_transform
from pipeline.shared.errors import UserError
from pipeline.shared.metrics import autocast_factory, evaluate_hits, evaluate_sums, finish


@dataclasses.dataclass
class SplitArrays:
    images: np.ndarray | None  # (N, C, H, W) uint8, eval-transformed, not normalised; None: held in ``refs``
    labels: np.ndarray | None  # (N,) int64
    role: str
    summary: dict[str, Any]  # the split plan's record (sizes, seed, fingerprints), compared with the supernet's
    refs: tuple[Any, Any] | None = None  # (images, labels) in Ray's object store, decoded there by Ray Data tasks
    count: int = 0
    pending: tuple[Any, np.ndarray, dict[str, Any]] | None = None  # (source, indices, data section): to decode

    def __post_init__(self) -> None:
        if self.labels is not None:
            self.count = len(self.labels)


def split_dataset(task: Task, role: str) -> tuple[SplitDataset, dict[str, Any]]:
    """The role's dataset with the un-normalised eval transform, and the split plan's summary."""
    pool, own_test = open_sources(task.data)
    plan = plan_from_settings(pool.labels, task.splits, has_own_test=own_test is not None)
    c = task.data["in_chans"]
    transform = eval_transform({**task.data, "mean": [0.0] * c, "std": [1.0] * c})
    if role == "search":
        dataset = SplitDataset(pool, plan.search, transform, "search")
    elif role == "test":
        dataset = (
            SplitDataset(own_test, None, transform, "test")
            if own_test is not None
            else SplitDataset(pool, plan.test, transform, "test")
        )
    else:
        raise ValueError(f"role {role!r}")
    return dataset, splits_summary(pool, own_test, plan)


def decode_locally(task: Task, role: str, batch_size: int = 256) -> SplitArrays:
    """The role's split decoded in this process by a DataLoader (``ray_ingest.load_split`` picks this or Ray
    Data by ``data.ingest``)."""
    dataset, summary = split_dataset(task, role)
    if role == "search":
        require_role(dataset, "search", "scoring candidates")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=task.data["loader_workers"])
    chunks, labels = [], []
    for images, y in loader:
        chunks.append(images.mul(255).round_().to(torch.uint8))
        labels.append(y)
    return SplitArrays(torch.cat(chunks).numpy(), torch.cat(labels).numpy().astype(np.int64), role, summary)


def check_same_splits(supernet_splits: dict[str, Any], summary: dict[str, Any], where: str) -> None:
    """The search split must be the one held out of supernet training (else candidates are scored on images
    the supernet was trained on)."""
    if supernet_splits.get("dataset") and summary.get("dataset") and supernet_splits["dataset"] != summary["dataset"]:
        raise UserError(
            f"{where}: the task's data (fingerprint {summary['dataset']}) is not the dataset the supernet was "
            f"trained on (fingerprint {supernet_splits['dataset']}); a tree and its pack share a fingerprint, "
            f"another tree or another version of it does not"
        )
    for part in ("train", "search"):
        old, new = supernet_splits.get(part, {}), summary.get(part, {})
        if old.get("fingerprint") != new.get("fingerprint") or old.get("size") != new.get("size"):
            raise UserError(
                f"{where}: the task's {part} split ({new.get('size')} images, fingerprint {new.get('fingerprint')}) is not the one the "
                f"supernet was trained with ({old.get('size')} images, fingerprint {old.get('fingerprint')}); use the same data and "
                f"splits.* settings as for training"
            )


def read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor viewing ``array`` without a copy: arrays from Ray's object store are read-only, and nothing that
    takes one of these writes to it (torch would warn on every call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def normalize(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32, exactly as ToTensor + Normalize; ``mean``/``std`` shaped (1, C, 1, 1)."""
    return batch.float().div_(255).sub_(mean).div_(std)


def channel_stats(normalization: dict[str, list[float]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as (1, C, 1, 1) float32 tensors on ``device``, ready for ``normalize``."""
    mean, std = (
        torch.tensor(normalization[k], dtype=torch.float32, device=device).view(1, -1, 1, 1) for k in ("mean", "std")
    )
    return mean, std


def normalized_batches(
    images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, batch_size: int
):
    """(normalised images, labels) batches of a uint8 split, on the device of ``mean`` (a no-op move when the split
    already lives there)."""
    for i in range(0, images.shape[0], batch_size):
        yield (
            normalize(images[i : i + batch_size].to(mean.device), mean, std),
            labels[i : i + batch_size].to(mean.device),
        )


def score(
    model: torch.nn.Module,
    split: SplitArrays,
    normalization: dict[str, list[float]],
    device: torch.device,
    batch_size: int = 512,
) -> dict[str, float]:
    """top-1/top-5/loss of a standalone model on a split held as uint8 arrays."""
    mean, std = channel_stats(normalization, device)
    batches = normalized_batches(read_only_tensor(split.images), read_only_tensor(split.labels), mean, std, batch_size)
    model = model.to(device).eval()
    return finish(evaluate_sums(lambda x, _: model(x), None, batches, device, autocast_factory(device)()))


def paired_scores(
    model: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, Any]:
    """A candidate's search-split scores as its record holds them: top-1 with its 95 % Wilson interval, top-5,
    loss, the image count, and the per-image top-1 hits (``numpy.packbits`` as hex) that paired comparisons
    between candidates scored on the same images need."""
    sums, hits = evaluate_hits(lambda images, _: model(images), None, batches, device, autocast)
    count = int(sums[3].item())
    low, high = wilson_interval(sums[0].item(), count)
    packed = np.packbits(hits.numpy()).tobytes().hex()
    return {**finish(sums), "top1_low": low, "top1_high": high, "images": count, "hits": packed}
