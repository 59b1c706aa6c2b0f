"""Packed shards: an ImageFolder tree as Parquet files of encoded images, plus a manifest.

Listing and reading a million small objects is slow and billed per request; a pack is a few hundred files of
about ``shard_size`` bytes each. Layout under the pack's root::

    manifest.json               written last: a pack without it is unfinished (``autoformer data pack`` resumes)
    train/part-00000.parquet    columns: image (the file's bytes), label, index, path; row groups of GROUP_ROWS
    val/part-00000.parquet      (or test/), when the tree has its own test split

``index`` is the image's position in the tree's listing (``folder_listing``), so the labels in listing order,
the split plan and its fingerprints are those of the tree itself; ``path`` is the file's path relative to the
tree's root. Rows are written in a seeded random order so that every shard mixes the classes (a rank reads a
few consecutive shards per epoch, see ``ray_ingest``). A row group is what one decoding task reads: one
request of a few MB, the work of seconds; a shard is what a listing sees.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.shared.errors import UserError
from pipeline.shared.storage import filesystem, first_line, join

PACK_FORMAT = "autoformer-pack"
PACK_VERSION = 1
GROUP_ROWS = 128  # images per Parquet row group (ImageNet: about 14 MB, one read of one decoding task)
MANIFEST = "manifest.json"
COLUMNS = ("image", "label", "index", "path")
SPLIT_DIRS = ("train", "val", "test")


def listing_fingerprint(relative_paths: list[str], labels: list[int] | np.ndarray, classes: list[str]) -> str:
    """What identifies a dataset: its classes and every image's relative path and label, in listing order. A
    tree and its pack have the same fingerprint; a pack of another tree (or another version of it) does not."""
    digest = hashlib.sha256("\n".join(classes).encode())
    for path, label in zip(relative_paths, labels):
        digest.update(f"\n{int(label)}\t{path}".encode())
    return digest.hexdigest()[:16]


def read_manifest(root: str) -> dict[str, Any] | None:
    """The manifest of the pack at ``root`` (None when there is none), checked for format and version."""
    fs, path = filesystem(root)
    target = join(path, MANIFEST)
    try:
        with fs.open_input_stream(target) as stream:
            manifest = json.loads(stream.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"pack {root!r}: {MANIFEST} cannot be read: {first_line(exc)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise UserError(f"pack {root!r}: {MANIFEST} is not an autoformer pack manifest")
    if manifest.get("version") != PACK_VERSION:
        raise UserError(
            f"pack {root!r} is pack format version {manifest.get('version')!r}; this version of autoformer reads "
            f"version {PACK_VERSION}: re-pack the tree with `autoformer data pack`"
        )
    return manifest


class PackedSource:
    """One split of a pack, as an image source: labels in listing order from the shards' ``label`` and
    ``index`` columns (no image is read for them); images by index, reading whole shards (kept, a few at a
    time) when a DataLoader asks one image at a time, or shard by shard by ``ray_ingest``."""

    CACHED_GROUPS = 4

    def __init__(self, root: str, split: str, manifest: dict[str, Any], mode: str) -> None:
        import pyarrow.parquet as pq

        entry = manifest["splits"][split]
        self.root, self.split, self.mode, self.classes = root, split, mode, list(manifest["classes"])
        self.shards = [join(root, shard["file"]) for shard in entry["shards"]]
        self.fingerprint = entry["fingerprint"]
        self.group_rows = int(manifest["group_rows"])
        fs, _ = filesystem(root)
        count = int(entry["count"])
        self.labels = np.zeros(count, dtype=np.int64)
        self.paths: list[str] = [""] * count
        self.where = np.zeros((count, 2), dtype=np.int64)  # listing index -> (shard, row in shard)
        for number, uri in enumerate(self.shards):
            table = _read_table(pq, fs, uri, ["label", "index", "path"])
            index = table.column("index").to_numpy()
            self.labels[index] = table.column("label").to_numpy()
            for i, p in zip(index.tolist(), table.column("path").to_pylist()):
                self.paths[i] = p
            self.where[index, 0] = number
            self.where[index, 1] = np.arange(len(index))
        self._cache: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        self._rows: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def shard_rows(self) -> list[np.ndarray]:
        """For each shard, the listing indices of its rows, in row order (computed once)."""
        if self._rows is None:
            self._rows = self._shard_rows()
        return self._rows

    def _shard_rows(self) -> list[np.ndarray]:
        out: list[list[int]] = [[] for _ in self.shards]
        order = np.lexsort((self.where[:, 1], self.where[:, 0]))
        for i in order.tolist():
            out[int(self.where[i, 0])].append(i)
        return [np.asarray(rows, dtype=np.int64) for rows in out]

    def load(self, index: int) -> Image.Image:
        shard, row = (int(v) for v in self.where[index])
        group = row // self.group_rows
        if (shard, group) not in self._cache:
            self._cache[shard, group] = read_group(self.shards[shard], group)
            while len(self._cache) > self.CACHED_GROUPS:
                self._cache.popitem(last=False)
        return decode(self._cache[shard, group][row % self.group_rows], self.mode, f"{self.root} ({self.paths[index]})")


def read_group(uri: str, group: int) -> list[bytes]:
    """The encoded images of one row group of one shard (one read)."""
    import pyarrow.parquet as pq

    fs, path = filesystem(uri)
    try:
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f).read_row_group(group, columns=["image"]).column("image").to_pylist()
    except (OSError, ValueError) as exc:
        raise UserError(f"pack shard {uri!r} cannot be read: {first_line(exc)}") from None


def _read_table(pq: Any, fs: Any, uri: str, columns: list[str]) -> Any:
    _, path = filesystem(uri)
    try:
        return pq.read_table(path, filesystem=fs, columns=columns)
    except (OSError, ValueError) as exc:
        raise UserError(f"pack shard {uri!r} cannot be read: {first_line(exc)}") from None


def decode(data: bytes, mode: str, where: str) -> Image.Image:
    """An encoded image's pixels in ``mode`` ("L" or "RGB"); a file that is not an image is one line."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert(mode)
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"unreadable image {where!r}: {exc}") from None
