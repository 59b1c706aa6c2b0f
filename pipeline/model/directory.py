"""Model directories on disk: atomic writes and versioned ``config.json`` reading.

Shared by standalone subnet directories and trained-supernet directories, which differ only in what they
hold. A directory is filled under a temporary sibling name and renamed into place, so readers never see a
half-written one and a crash leaves nothing where a user would look.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError

from pipeline.shared.errors import UserError
from pipeline.shared.storage import share_like_open

T = TypeVar("T")

CONFIG_FILE = "config.json"
CHECKSUMS_KEY = "checksums"  # config.json: file name -> sha256 of every weights file written beside it


def write_directory(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Create (or replace) directory ``path``: ``fill`` writes into a temporary sibling that is then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        fill(tmp)
        share_like_open(tmp, directory=True)
        for item in tmp.rglob("*"):  # safetensors and mkstemp create files 0600
            share_like_open(item, directory=item.is_dir())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            path.rename(old / "previous")
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_config(directory: Path, config: dict[str, Any]) -> None:
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def read_config(path: str | Path, fmt: str, version: int, what: str, hint: str) -> dict[str, Any]:
    """``config.json`` of a ``what`` directory, checked to be of format ``fmt`` at ``version``."""
    where = f"{what} directory {str(path)!r}"
    config_file = Path(path) / CONFIG_FILE
    if not config_file.is_file():
        raise UserError(f"{where}: no {CONFIG_FILE} ({hint})")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: {CONFIG_FILE} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != fmt:
        raise UserError(f"{where}: {CONFIG_FILE} is not an {fmt!r} config")
    if config.get("format_version") != version:
        raise UserError(
            f"{where}: format_version {config.get('format_version')!r} is not supported (expected {version})"
        )
    return config


def file_checksum(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_checksums(directory: Path, config: dict[str, Any], *names: str) -> dict[str, Any]:
    """``config`` with the checksums of ``names`` (files already written in ``directory``) recorded."""
    return {**config, CHECKSUMS_KEY: {name: file_checksum(directory / name) for name in names}}


def checked_load(directory: str | Path, name: str, config: dict[str, Any], what: str, load: Callable[[str], T]) -> T:
    """``load(path)`` of weights file ``name`` after checking it against the checksum its config recorded.

    A changed, corrupted or truncated file is one clear error naming it, never weights silently used (files
    written before checksums were recorded are only checked for being readable).
    """
    path = Path(directory) / name
    where = f"{what} directory {str(directory)!r}"
    if not path.is_file():
        raise UserError(f"{where}: no {name}")
    expected = (config.get(CHECKSUMS_KEY) or {}).get(name)
    if expected is not None:
        actual = file_checksum(path)
        if actual != expected:
            raise UserError(
                f"{where}: {name} is corrupted or was changed after it was written (sha256 {actual[:16]}..., "
                f"{CONFIG_FILE} records {expected[:16]}...)"
            )
    try:
        return load(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{where}: {name} cannot be read ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
