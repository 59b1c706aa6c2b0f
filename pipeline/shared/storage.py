"""Local paths and ``s3://``-style URIs alike, through pyarrow filesystems: checkpoints, supernets, result files.

Local files are written beside their target under a temporary name and renamed into place; on object
stores a single PUT is atomic already, so the bytes are uploaded in one stream.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs


def is_uri(path: str) -> bool:
    return "://" in path


def filesystem(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem holding ``path`` and the path inside it."""
    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def write_bytes(target: str, data: bytes) -> None:
    if is_uri(target):
        fs, path = filesystem(target)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    target_path = Path(target)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target_path.name}.tmp-", dir=target_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bytes(source: str) -> bytes:
    if is_uri(source):
        fs, path = filesystem(source)
        with fs.open_input_stream(path) as f:
            return f.read()
    return Path(source).read_bytes()


def copy_directory(source: str, target: str) -> None:
    """Copy a directory tree between local paths and URIs (exported supernets and models on object storage)."""
    pyarrow.fs.copy_files(source, target)


def resolve_storage(storage: str | None) -> str:
    """A run storage root: local paths become absolute (Ray requires it); URIs (s3://, gs://, ...) pass through."""
    storage = storage or "runs"
    return storage if is_uri(storage) else str(Path(storage).expanduser().resolve())


def write_directory_to(target: str, write: Callable[[Path], object]) -> str:
    """Make directory ``target`` with ``write(path)``: in place on local disk (``write`` must be atomic there),
    or into a temporary directory that is then uploaded when ``target`` is a URI. Returns ``target``."""
    if not is_uri(target):
        write(Path(target))
        return target
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / target.rstrip("/").rsplit("/", 1)[-1]
        write(local)
        copy_directory(str(local), target)
    return target
