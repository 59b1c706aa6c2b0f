"""AutoFormer one-shot vision-transformer architecture search, on Ray.

Layers (imports point down only; ``tests/test_layers.py`` checks it): ``shared`` (errors, progress, storage,
built-in YAML, metrics) -> ``core`` (pure Python: spaces, architectures, sampling, counts, tasks, rankings)
-> ``model`` and ``data`` (torch, no Ray) -> the phases ``training`` and ``search`` (Ray) -> ``results``
-> ``run`` (the whole pipeline) and ``api`` -> ``cli``.

The public API, for scripts and notebooks::

    import pipeline
    supernet = pipeline.load_supernet("runs/digits-supernet/supernet")
    arch = pipeline.Architecture.from_dict({"embed_dim": 64, "depth": 3, "num_heads": [4, 4, 2], "mlp_ratio": [2, 2, 2]})
    logits = supernet(images, arch)
    pipeline.export_model(supernet, arch, "my-model", pipeline.load_task("digits"))
    model = pipeline.load_model("my-model")
    run = pipeline.run_pipeline(pipeline.load_task("digits"))

Names resolve on first use, so ``import pipeline`` loads neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Architecture": "pipeline.core.arch",
    "SearchSpace": "pipeline.core.space",
    "load_space": "pipeline.core.space",
    "Task": "pipeline.core.task",
    "load_task": "pipeline.core.task",
    "load_supernet": "pipeline.api",
    "load_model": "pipeline.api",
    "export_model": "pipeline.api",
    "train_supernet": "pipeline.training.launch",
    "RunSpec": "pipeline.training.run_spec",
    "TrainSettings": "pipeline.core.training_settings",
    "EvaluatorResources": "pipeline.search.settings",
    "SearchSettings": "pipeline.search.settings",
    "search_supernet": "pipeline.run",
    "run_pipeline": "pipeline.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
