"""Images decoded and transformed in Ray Data tasks, on any node of the cluster with CPUs, streamed to whoever
iterates them: a training worker (its shard of each epoch), or the object store (a search or test split that
evaluators hold, never passing through the driver).

Why each worker streams its own dataset instead of ``TorchTrainer(datasets=...)``: Ray Train splits one
dataset with ``streaming_split``, which hands blocks to whichever worker asks first, so which image a worker
sees, and in which order, is not reproducible. Here the order is planned up front (``epoch_order``), every
image's augmentation is seeded by (seed, epoch, image), and Ray Data executes the plan with
``preserve_order``: a run, and a run resumed from any checkpoint, sees the same images in the same order with
the same augmentation. The decoding tasks still go wherever Ray places them (CPU-only nodes included).

Rows of a plan name where an image is, not its pixels: a path or URI (an ImageFolder tree), an index into an
array held in the object store (digits, CIFAR), or a slice of a pack's shard (one row per slice, read whole:
a shard is one request). The data layer's only Ray import lives here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray
import torch

from pipeline.core.training_settings import Augmentation
from pipeline.data.arrays import SplitArrays, channel_stats, decode_locally, normalize, split_dataset
from pipeline.data.packed import PackedSource, decode, read_group
from pipeline.data.sources import ArraySource, FolderSource, ImageSource, read_file, uses_ray_data
from pipeline.data.splits import require_role
from pipeline.data.transforms import eval_transform, train_transform
from pipeline.shared.storage import is_uri
from pipeline.shared.timing import waiting

ROWS_PER_TASK = 128  # images of a tree one decoding task handles: seconds of work at ImageNet sizes
CHUNK = 32  # images per output block of a task when no batch size is given (a worker's batch size otherwise)
FETCH_THREADS = 16  # concurrent object reads of one task: object storage answers in tens of ms, not microseconds


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """What a decoding task makes of an image: the training transform (``augment``) or the evaluation one, up
    to the pixels, as uint8. Normalisation and random erasing (the steps that make floats) are the
    consumer's (``finish_images``): a quarter of the bytes through the object store and across the network
    (a 224-px image is 150 KB, not 600 KB; at thousands of images a second per GPU that matters)."""

    data: tuple[tuple[str, Any], ...]  # the task's data section, hashable (for the per-process transform cache)
    augment: str | None  # Augmentation as JSON, None for the evaluation transform

    @classmethod
    def make(cls, data: dict[str, Any], augment: Augmentation | None) -> DecodeSpec:
        keys = ("image_size", "in_chans", "interpolation", "mean", "std", "eval_crop_pct")
        frozen = tuple((k, tuple(data[k]) if isinstance(data[k], list) else data[k]) for k in keys)
        text = json.dumps(dataclasses.asdict(augment), sort_keys=True) if augment is not None else None
        return cls(frozen, text)

    @property
    def mode(self) -> str:
        return "L" if dict(self.data)["in_chans"] == 1 else "RGB"

    @property
    def augmentation(self) -> Augmentation | None:
        return Augmentation(**json.loads(self.augment)) if self.augment is not None else None


@functools.lru_cache(maxsize=8)
def _transform(spec: DecodeSpec) -> Any:
    """The transform up to the pixels: normalisation to mean 0, std 1 (so ``x * 255`` is the uint8 image
    again) and no random erasing."""
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.data}
    data = {**data, "mean": [0.0] * data["in_chans"], "std": [1.0] * data["in_chans"]}
    augment = spec.augmentation
    if augment is None:
        return eval_transform(data)
    return train_transform(data, dataclasses.replace(augment, random_erasing=0.0))


@functools.lru_cache(maxsize=8)
def _finishing(spec: DecodeSpec) -> tuple[torch.Tensor, torch.Tensor, Any]:
    data = dict(spec.data)
    mean, std = channel_stats({"mean": list(data["mean"]), "std": list(data["std"])}, torch.device("cpu"))
    augment = spec.augmentation
    erasing = None
    if augment is not None and augment.random_erasing > 0:
        from timm.data.random_erasing import RandomErasing

        erasing = RandomErasing(augment.random_erasing, mode="pixel", max_count=1, device="cpu")
    return mean, std, erasing


def finish_images(images: torch.Tensor, spec: DecodeSpec, seeds: list[int] | None = None) -> torch.Tensor:
    """uint8 images from a decoding task -> what the full transform gives: normalised float32, and for
    training each image's random erasing, seeded by its own seed (as the task's part was)."""
    mean, std, erasing = _finishing(spec)
    out = normalize(images, mean, std)
    if erasing is not None and seeds is not None:
        for i, seed in enumerate(seeds):
            random.seed(seed + 1)
            torch.manual_seed(seed + 1)
            out[i] = erasing(out[i])
    return out


def image_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one image's augmentation in one epoch: independent of the worker count and of batching."""
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729 + 1) % (2**31)


def _apply(spec: DecodeSpec, images: list[Any], seeds: list[int]) -> np.ndarray:
    transform = _transform(spec)
    out = []
    for image, seed in zip(images, seeds):
        if seed >= 0:  # training: this image's augmentation, the same wherever and whenever it is decoded
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
        out.append(transform(image))
    return torch.stack(out).mul_(255).round_().to(torch.uint8).numpy()


def _decode_files(batch: dict[str, np.ndarray], spec: DecodeSpec) -> dict[str, np.ndarray]:
    """A batch of rows naming image files (local paths or URIs) -> transformed images. Objects in storage are
    fetched by a few threads at once: one read at a time would leave the CPU waiting on the network."""
    from concurrent.futures import ThreadPoolExecutor

    paths = batch["path"].tolist()
    if paths and is_uri(paths[0]):
        with ThreadPoolExecutor(min(FETCH_THREADS, len(paths))) as pool:
            blobs = list(pool.map(read_file, paths))
    else:
        blobs = [read_file(p) for p in paths]
    images = [decode(blob, spec.mode, path) for blob, path in zip(blobs, paths)]
    return {"image": _apply(spec, images, batch["seed"].tolist()), "label": batch["label"]}


def _decode_array(batch: dict[str, np.ndarray], spec: DecodeSpec, pixels: Any) -> dict[str, np.ndarray]:
    """A batch of rows indexing an in-memory array (held once in the object store) -> transformed images."""
    from PIL import Image

    array = ray.get(pixels[0]) if isinstance(pixels, list) else pixels
    images = [Image.fromarray(array[i]) for i in batch["index"].tolist()]
    return {"image": _apply(spec, images, batch["seed"].tolist()), "label": batch["label"]}


def _decode_groups(batch: dict[str, np.ndarray], spec: DecodeSpec, chunk: int) -> Iterator[dict[str, np.ndarray]]:
    """Rows naming images of one row group of a pack's shard -> transformed images, ``chunk`` at a time (a row
    group is one read)."""
    for uri, group, size, rows, labels, seeds in zip(
        batch["shard"], batch["group"], batch["group_rows"], batch["rows"], batch["labels"], batch["seeds"]
    ):
        blobs = read_group(str(uri), int(group))
        rows, labels, seeds = (np.asarray(v).tolist() for v in (rows, labels, seeds))
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            images = [decode(blobs[r - group * size], spec.mode, f"{uri} row {r}") for r in part]
            yield {
                "image": _apply(spec, images, seeds[start : start + chunk]),
                "label": np.asarray(labels[start : start + chunk], dtype=np.int64),
            }


def item_rows(source: ImageSource, indices: np.ndarray, seeds: list[int]) -> list[dict[str, Any]]:
    """One row per image for a tree or an array source, in the given order."""
    labels = source.labels[indices].tolist()
    if isinstance(source, FolderSource):
        return [{"path": source.samples[i], "label": y, "seed": s} for i, y, s in zip(indices.tolist(), labels, seeds)]
    return [{"index": i, "label": y, "seed": s} for i, y, s in zip(indices.tolist(), labels, seeds)]


def group_rows(source: PackedSource, indices: np.ndarray, seeds: list[int]) -> list[dict[str, Any]]:
    """One row per run of consecutive images from one row group of one shard, in the given order: a task reads
    its row group once (an epoch visits the groups one after the other, see ``epoch_order``)."""
    out: list[dict[str, Any]] = []
    size = source.group_rows
    for i, seed in zip(indices.tolist(), seeds):
        shard, row = (int(v) for v in source.where[i])
        if not out or out[-1]["shard"] != source.shards[shard] or out[-1]["group"] != row // size:
            out.append(
                {"shard": source.shards[shard], "group": row // size, "group_rows": size}
                | {"rows": [], "labels": [], "seeds": []}
            )
        out[-1]["rows"].append(row)
        out[-1]["labels"].append(int(source.labels[i]))
        out[-1]["seeds"].append(seed)
    return out


def stream(
    source: ImageSource, indices: np.ndarray, seeds: list[int], spec: DecodeSpec, cpus: float, chunk: int = CHUNK
) -> Any:
    """A Ray Dataset of the images ``source[indices]`` transformed by ``spec``, in that order (columns
    ``image``, ``label``), in blocks of ``chunk`` images (a consumer's batch size: no re-batching copies).
    ``seeds``: each image's augmentation seed (-1: none)."""
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ray.data.DataContext.get_current().enable_progress_bars = False
    if isinstance(source, PackedSource):
        rows = group_rows(source, indices, seeds)
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
        return dataset.map_batches(
            _decode_groups,
            batch_size=1,
            fn_kwargs={"spec": spec, "chunk": chunk},
            num_cpus=cpus,
            compute=_tasks(cpus, len(rows)),
        )
    rows = item_rows(source, indices, seeds)
    blocks = max(1, math.ceil(len(rows) / ROWS_PER_TASK))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    if isinstance(source, ArraySource):
        pixels = [ray.put(source.images)]  # once in the object store; tasks read it zero-copy
        return dataset.map_batches(
            _decode_array, batch_size=chunk, fn_kwargs={"spec": spec, "pixels": pixels}, num_cpus=cpus,
            compute=_tasks(cpus, blocks),
        )  # fmt: skip
    return dataset.map_batches(
        _decode_files, batch_size=chunk, fn_kwargs={"spec": spec}, num_cpus=cpus, compute=_tasks(cpus, blocks)
    )


def _tasks(cpus: float, blocks: int) -> Any:
    """Decoding tasks of a fraction of a CPU (beside a trainer that holds the rest) run at most as many at once
    as the cluster has CPUs: each one more starts only another process importing torch (a 20-image split at
    0.25 CPU took 26 s on 2 cores, 7 s so capped). Tasks of whole CPUs are left to Ray Data, whose demand an
    autoscaler sees."""
    if cpus >= 1:
        return None
    return ray.data.TaskPoolStrategy(size=max(1, min(blocks, int(ray.cluster_resources().get("CPU", 1)))))


class TimedBatches:
    """(images, labels) torch batches of a Ray Dataset, with the time spent waiting for each (``waited_s``):
    what tells a user that the workers wait for data and more CPU nodes would help."""

    def __init__(self, dataset: Any, batch_size: int, drop_last: bool) -> None:
        self.dataset, self.batch_size, self.drop_last, self.waited_s = dataset, batch_size, drop_last, 0.0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.dataset.iter_torch_batches(
            batch_size=self.batch_size, drop_last=self.drop_last, device="cpu", prefetch_batches=2
        )
        waited = [self.waited_s]
        for batch in waiting(batches, waited):
            self.waited_s = waited[0]
            yield batch["image"], batch["label"]
        self.waited_s = waited[0]


def load_split(task: Any, role: str, batch_size: int = 256, deferred: bool = False) -> SplitArrays:
    """The role's split (``search`` or ``test``) as uint8 arrays. A task that ingests through Ray Data
    (``data.ingest``) is decoded by Ray Data tasks on the cluster: with ``deferred`` only the record is made
    here (no image read; ``in_object_store`` decodes it once the cluster is joined), else the arrays are
    fetched into this process. Other tasks are decoded here by a DataLoader."""
    if not uses_ray_data(task.data):
        return decode_locally(task, role, batch_size)
    dataset, summary = split_dataset(task, role)
    if role == "search":
        require_role(dataset, "search", "scoring candidates")
    split = SplitArrays(None, None, role, summary, count=len(dataset))
    split.pending = (dataset.source, dataset.indices, task.data)
    return split if deferred else fetched(in_object_store(split))


def in_object_store(split: SplitArrays) -> SplitArrays:
    """``split`` with its images in the object store (``refs``), decoded there by Ray Data tasks when they are
    not in this process yet: the caller, a search driver, never holds them."""
    if split.refs is not None:
        return split
    if not ray.is_initialized():  # a command run on its own (evaluate): a Ray of its own, never a stray one
        from pipeline.shared.cluster import connect

        connect(False, "data")
    if split.images is not None:
        return dataclasses.replace(split, refs=(ray.put(split.images), ray.put(split.labels)))
    source, indices, data = split.pending
    refs = split_arrays(source, indices, DecodeSpec.make(data, None), data["ingest_cpus"])
    return dataclasses.replace(split, refs=tuple(refs), pending=None)


def fetched(split: SplitArrays) -> SplitArrays:
    """``split`` with its arrays in this process."""
    if split.images is not None:
        return split
    images, labels = ray.get(list(split.refs))
    return SplitArrays(images, labels, split.role, split.summary)


def split_arrays(source: ImageSource, indices: np.ndarray, spec: DecodeSpec, cpus: float) -> tuple[Any, Any]:
    """ObjectRefs of one split as (N, C, H, W) uint8 images and (N,) labels, decoded by Ray Data tasks and
    joined by one task, in the object store: the caller (the search driver) never holds the images."""
    dataset = stream(source, indices, [-1] * len(indices), spec, cpus)
    blocks = dataset.to_numpy_refs()
    return _join.options(num_returns=2).remote(*blocks)


@ray.remote(num_cpus=0)
def _join(*blocks: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images = np.concatenate([b["image"] for b in blocks]) if blocks else np.zeros((0,), np.uint8)
    labels = np.concatenate([b["label"] for b in blocks]).astype(np.int64) if blocks else np.zeros((0,), np.int64)
    return images, labels


def epoch_order(source: ImageSource, train: np.ndarray, seed: int, epoch: int, world: int, rank: int) -> np.ndarray:
    """The pool indices rank ``rank`` trains on in ``epoch``, in order; every rank gets ``len(train) // world``.

    A tree or an array: the order torch's ``DistributedSampler`` gives (seeded by seed + epoch), so a run reads
    the images in the order the DataLoader path reads them. A pack: the shards in a seeded order, within each
    its row groups in a seeded order, within each group its training images in a seeded order; cut into
    ``world`` equal consecutive pieces, so a worker reads whole row groups (one request each; at most two are
    shared by two workers) instead of a few images of every one."""
    per_rank = len(train) // world
    if not isinstance(source, PackedSource):
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(len(train)), num_replicas=world, rank=rank, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        return train[np.fromiter(iter(sampler), dtype=np.int64, count=per_rank)]
    rng = np.random.default_rng([seed, epoch])
    allowed = np.zeros(len(source), dtype=bool)
    allowed[train] = True
    pieces = []
    for shard in rng.permutation(len(source.shards)).tolist():
        rows = source.shard_rows()[shard]  # in row order: group g is rows[g * size : (g + 1) * size]
        size = source.group_rows
        for group in rng.permutation(math.ceil(len(rows) / size)).tolist():
            members = rows[group * size : (group + 1) * size]
            members = members[allowed[members]]
            pieces.append(members[rng.permutation(len(members))])
    order = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return order[rank * per_rank : (rank + 1) * per_rank]


class EpochStream:
    """One training worker's batches, epoch by epoch, decoded by Ray Data tasks: what a DataLoader with
    ``DistributedSampler`` is to the loader path (``set_epoch``, ``skip`` images to start an epoch part-way,
    ``len`` in batches, iteration), plus ``waited_s``, the seconds the last epoch waited for data."""

    def __init__(
        self, source: ImageSource, train: np.ndarray, spec: DecodeSpec, seed: int, world: int, rank: int,
        batch_size: int, cpus: float,
    ) -> None:  # fmt: skip
        self.source, self.train, self.spec, self.seed = source, np.asarray(train), spec, seed
        self.world, self.rank, self.batch_size, self.cpus = world, rank, batch_size, cpus
        self.epoch, self.skip, self.waited_s = 0, 0, 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.train) // self.world - self.skip) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(self.source, self.train, self.seed, self.epoch, self.world, self.rank)
        order = order[self.skip : self.skip + len(self) * self.batch_size]
        seeds = [image_seed(self.seed, self.epoch, i) for i in order.tolist()]
        dataset = stream(self.source, order, seeds, self.spec, self.cpus, self.batch_size)
        batches = TimedBatches(dataset, self.batch_size, True)
        self.waited_s = 0.0
        for number, (images, labels) in enumerate(batches):
            self.waited_s = batches.waited_s
            mine = seeds[number * self.batch_size : (number + 1) * self.batch_size]
            yield finish_images(images, self.spec, mine), labels
        self.waited_s = batches.waited_s
