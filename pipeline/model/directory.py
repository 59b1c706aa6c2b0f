"""Model directories on disk: atomic writes and versioned ``config.json`` reading.

Shared by standalone subnet directories and trained-supernet directories, which differ only in what they
hold. A directory is filled under a temporary sibling name and renamed into place, so readers never see a
half-written one and a crash leaves nothing where a user would look.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.shared.errors import UserError

CONFIG_FILE = "config.json"


def write_directory(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Create (or replace) directory ``path``: ``fill`` writes into a temporary sibling that is then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        fill(tmp)
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
