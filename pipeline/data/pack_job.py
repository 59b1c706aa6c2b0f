"""``autoformer data pack``: an ImageFolder tree (local or in object storage) into Parquet shards, as a Ray Data
job on the cluster's CPUs.

The plan (which image goes into which shard, in which order) is made on the driver from one listing of the
tree, with no image read, and written first (``pack-plan.json``): a job stopped part-way and run again writes
only the shards that are missing; a different plan (another tree, shard size or seed) over an unfinished pack
is refused. Every image is decoded once while packing, so a file that is not an image stops the job with one
line naming it, before any training meets it. The manifest is written last: a pack without one is unfinished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import numpy as np
import ray

from pipeline.data.packed import GROUP_ROWS, MANIFEST, PACK_FORMAT, PACK_VERSION, decode, read_manifest
from pipeline.data.sources import FolderSource, open_folder, read_file
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.storage import filesystem, first_line, is_uri, join, read_bytes, write_bytes

PLAN_FILE = "pack-plan.json"
UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "b": 1}


def parse_size(text: str) -> int:
    """``256MB``, ``1GiB``, ``500000`` -> bytes; anything else is one line naming the value."""
    value = text.strip().lower()
    for unit in sorted(UNITS, key=len, reverse=True):
        if value.endswith(unit):
            number, scale = value[: -len(unit)].strip(), UNITS[unit]
            break
    else:
        number, scale = value, 1
    try:
        size = int(float(number) * scale)
    except ValueError:
        size = 0
    if size < 1024:
        raise UserError(f"--shard-size {text!r}: give a size of at least 1KB, e.g. 256MB or 1GiB")
    return size


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    split: str  # train, val or test
    number: int
    files: list[str]  # paths or URIs, in row order
    labels: list[int]
    indices: list[int]  # positions in the split's listing
    paths: list[str]  # relative to the tree's root

    @property
    def file(self) -> str:
        return f"{self.split}/part-{self.number:05d}.parquet"


def _sizes(source: FolderSource) -> list[int]:
    """Each image's size in bytes: a stat per file on disk, one listing of the split in object storage."""
    if not is_uri(source.samples[0]):
        return [os.path.getsize(p) for p in source.samples]
    import pyarrow.fs

    fs, base = filesystem(str(source.root))
    scheme = str(source.root).split("://", 1)[0]
    infos = fs.get_file_info(pyarrow.fs.FileSelector(base.rstrip("/"), recursive=True))
    size = {f"{scheme}://{i.path}": i.size for i in infos}
    return [int(size[p]) for p in source.samples]


def plan_shards(split: str, source: FolderSource, tree: str, shard_bytes: int, seed: int) -> list[ShardPlan]:
    """The split's images in a seeded order (every shard mixes the classes), cut where a shard reaches
    ``shard_bytes``."""
    order = np.random.default_rng([seed, len(source)]).permutation(len(source)).tolist()
    sizes = _sizes(source)
    prefix = len(tree.rstrip("/")) + 1
    shards: list[ShardPlan] = []
    current: list[int] = []
    total = 0
    for i in order:
        current.append(i)
        total += sizes[i]
        if total >= shard_bytes or i == order[-1]:
            shards.append(
                ShardPlan(
                    split,
                    len(shards),
                    [source.samples[j] for j in current],
                    [int(source.labels[j]) for j in current],
                    current,
                    [source.samples[j][prefix:].replace("\\", "/") for j in current],
                )
            )
            current, total = [], 0
    return shards


def _write_shard(row: dict[str, Any]) -> dict[str, Any]:
    """One Ray Data task: read and check the shard's images, write its Parquet file (a temporary name, then
    renamed, on disk; one upload in object storage). Errors come back as a row, for the driver's one line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan = json.loads(row["plan"])
    blobs = []
    for path in plan["files"]:
        try:
            data = read_file(path)
            decode(data, "RGB", path)
        except (UserError, OSError) as exc:
            return {"file": plan["file"], "rows": 0, "error": first_line(exc)}
        blobs.append(data)
    table = pa.table(
        {
            "image": pa.array(blobs, type=pa.binary()),
            "label": pa.array(plan["labels"], type=pa.int64()),
            "index": pa.array(plan["indices"], type=pa.int64()),
            "path": pa.array(plan["paths"], type=pa.string()),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=GROUP_ROWS)
    write_bytes(join(row["dst"], plan["file"]), sink.getvalue().to_pybytes())
    return {"file": plan["file"], "rows": len(blobs), "error": ""}


def _done(dst: str, shard: ShardPlan) -> bool:
    """Whether the shard's file is already there with all its rows (a resumed pack skips it)."""
    import pyarrow.parquet as pq

    fs, path = filesystem(join(dst, shard.file))
    try:
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f).metadata.num_rows == len(shard.files)
    except (OSError, ValueError):
        return False


def _plan_record(src: str, fingerprint: str, shard_bytes: int, seed: int, shards: list[ShardPlan]) -> dict[str, Any]:
    digest = hashlib.sha256("\n".join(f"{s.file}:{','.join(map(str, s.indices))}" for s in shards).encode())
    return {"source_fingerprint": fingerprint, "shard_bytes": shard_bytes, "seed": seed, "shards": digest.hexdigest()}


def _check_destination(dst: str, fingerprint: str, record: dict[str, Any]) -> bool:
    """Whether the pack at ``dst`` is already complete for this tree (True) or to be (re)started (False); a
    pack of other data, or an unfinished one made with another plan, is refused."""
    manifest = read_manifest(dst)
    if manifest is not None:
        if manifest.get("source_fingerprint") == fingerprint:
            return True
        raise UserError(
            f"pack {dst!r} already holds another dataset (fingerprint {manifest.get('source_fingerprint')}); choose another destination"
        )
    try:
        previous = json.loads(read_bytes(join(dst, PLAN_FILE)))
    except (FileNotFoundError, OSError, ValueError):
        return False
    if previous != record:
        raise UserError(
            f"pack {dst!r} is an unfinished pack made with another plan (source, --shard-size or --seed); "
            f"remove it, or run the same command as before to finish it"
        )
    return False


def pack(src: str, dst: str, shard_bytes: int, seed: int = 0, cpus: float = 1.0) -> dict[str, Any]:
    """Pack the tree at ``src`` into ``dst``; the manifest. Ray must be initialised (the job's tasks run on
    the cluster)."""
    pool, test = open_folder(src, "RGB")
    splits = {"train": pool, **({_test_dir(test): test} if test is not None else {})}
    fingerprint = hashlib.sha256("/".join(s.fingerprint for s in splits.values()).encode()).hexdigest()[:16]
    shards = [s for name, source in splits.items() for s in plan_shards(name, source, src, shard_bytes, seed)]
    record = _plan_record(src, fingerprint, shard_bytes, seed, shards)
    if _check_destination(dst, fingerprint, record):
        say(f"[pack] {dst} already holds this tree ({sum(len(s) for s in splits.values()):,} images): nothing to do")
        return read_manifest(dst)
    write_bytes(join(dst, PLAN_FILE), json.dumps(record).encode())
    todo = [s for s in shards if not _done(dst, s)]
    say(f"[pack] {src} -> {dst}: {len(shards)} shards ({len(shards) - len(todo)} already written)")
    rows = [{"dst": dst, "plan": json.dumps({**dataclasses.asdict(s), "file": s.file})} for s in todo]
    if rows:
        errors = [r for r in _written(rows, cpus) if r["error"]]
        if errors:
            raise UserError(
                f"pack {dst!r}: {errors[0]['error']} (shard {errors[0]['file']}; nothing else is lost: the same command resumes)"
            )
    manifest = _manifest(src, splits, shards, fingerprint, shard_bytes, seed)
    write_bytes(join(dst, MANIFEST), (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


PROGRESS_EVERY_S = 30.0  # how often a pack says how far it is


def _written(rows: list[dict[str, Any]], cpus: float) -> list[dict[str, Any]]:
    """The shards' rows as the Ray Data job writes them (in any order), with a progress line every
    ``PROGRESS_EVERY_S`` seconds and at the end: shards and images written, images a second."""
    ray.data.DataContext.get_current().enable_progress_bars = False  # our lines, in a terminal and in a log alike
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map(_write_shard, num_cpus=cpus)
    start = last = time.monotonic()
    out: list[dict[str, Any]] = []
    for row in dataset.iter_rows():
        out.append(row)
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S or len(out) == len(rows):
            last, images = now, sum(r["rows"] for r in out)
            say(
                f"[pack] {len(out)}/{len(rows)} shards written, {images:,} images, {images / max(now - start, 1e-9):,.0f}/s"
            )
    return out


def _test_dir(test: FolderSource) -> str:
    return str(test.root).rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]


def _manifest(
    src: str, splits: dict[str, FolderSource], shards: list[ShardPlan], fingerprint: str, shard_bytes: int, seed: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"format": PACK_FORMAT, "version": PACK_VERSION, "source": src}
    out |= {"source_fingerprint": fingerprint, "shard_bytes": shard_bytes, "seed": seed, "group_rows": GROUP_ROWS}
    out["classes"] = list(splits["train"].classes)
    out["splits"] = {
        name: {
            "count": len(source),
            "per_class": np.bincount(source.labels, minlength=len(source.classes)).tolist(),
            "fingerprint": source.fingerprint,
            "shards": [{"file": s.file, "rows": len(s.files)} for s in shards if s.split == name],
        }
        for name, source in splits.items()
    }
    return out
