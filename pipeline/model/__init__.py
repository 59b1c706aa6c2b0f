"""Torch models: the supernets (weight-entangled and classical), the standalone static ViT, and their
directory formats. No Ray here.

Names resolve lazily so that loading a standalone model (``pipeline.model.subnet_dir``) does not import the
supernet code at all.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StaticViT": "pipeline.model.static",
    "Supernet": "pipeline.model.supernet",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.model' has no attribute {name!r}")
