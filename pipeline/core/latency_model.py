"""Latency models: predicted forward-pass time of any architecture of a space on one device, runtime and batch.
This module owns the file format (JSON) and the prediction; measuring lives in ``pipeline.latency``.

A model is a lookup table of block latencies, one entry per (embedding dim, heads, MLP ratio) the space allows,
plus the fixed parts per embedding dim (patch embedding, tokens, final norm, pooling, head). The table's
prediction is the fixed part plus the sum of the blocks. Where that misses the end-to-end timings by more than
a threshold, a linear correction fitted on measured architectures is stored beside it (``kind: regressor``):
ms = a + b x table sum + c x depth (the depth term takes the per-layer cost that timing blocks one by one
misses or double-counts), and the prediction goes through it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from pipeline.core.arch import Architecture
from pipeline.core.space import SearchSpace
from pipeline.shared.errors import UserError

FORMAT = "autoformer-latency-model"
FORMAT_VERSION = 1
KINDS = ("table", "regressor")
RUNTIMES = ("torch", "onnxruntime")


def block_key(embed_dim: int, num_heads: int, mlp_ratio: float) -> str:
    return f"e{embed_dim}-h{num_heads}-r{mlp_ratio:g}"


@dataclasses.dataclass(frozen=True)
class LatencyModel:
    space: dict[str, Any]  # SearchSpace.to_dict() of the space it was built for (image size included)
    device: dict[str, Any]  # name (a Ray resource or "local") and description (CPU/GPU, threads, library versions)
    runtime: str
    batch: int
    threads: int
    blocks: dict[str, float]  # block_key -> median ms
    fixed: dict[str, float]  # str(embed_dim) -> median ms
    kind: str = "table"
    correction: tuple[float, float, float] = (0.0, 1.0, 0.0)  # regressor: ms = a + b * table sum + c * depth
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)  # mape, kendall_tau, count (held out)

    def table_ms(self, arch: Architecture) -> float:
        try:
            total = self.fixed[str(arch.embed_dim)]
            for heads, ratio in zip(arch.num_heads, arch.mlp_ratio):
                total += self.blocks[block_key(arch.embed_dim, heads, ratio)]
        except KeyError as exc:
            raise UserError(
                f"latency model: architecture {arch.key} uses {exc.args[0]}, which the table does not hold"
            ) from None
        return total

    def predict(self, arch: Architecture) -> float:
        """Predicted ms per forward pass of ``batch`` images."""
        table = self.table_ms(arch)
        if self.kind == "table":
            return table
        a, b, c = self.correction
        return a + b * table + c * arch.depth

    def check_matches(self, space: SearchSpace, batch: int, where: str) -> None:
        """One line naming what differs when this model was built for another space, image size or batch."""
        built = SearchSpace.from_dict(self.space, source=where)
        if built.image_size != space.image_size:
            raise UserError(
                f"{where} was built for {built.image_size} px images; the search runs at {space.image_size} px"
            )
        if built.to_dict() != space.to_dict():
            raise UserError(
                f"{where} was built for search space {built.name!r}, not the supernet's {space.name!r} (or its choices differ)"
            )
        if self.batch != batch:
            raise UserError(
                f"{where} was built for batch {self.batch}; the search times batches of {batch} (search.latency_batch)"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["correction"] = list(self.correction)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **out}

    def save(self, path: str | Path) -> None:
        """Write the file atomically (a temporary sibling, then a rename): a crash never leaves half a model, and
        a write that fails (a read-only directory, a directory in the way) is one line naming the file and the
        cause, leaving no temporary file behind."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise UserError(f"latency model {str(path)!r} cannot be written: {exc.strerror or exc}") from None
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        where = f"latency model {str(path)!r}"
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (FileNotFoundError, IsADirectoryError):
            raise UserError(f"{where} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{where} is not a latency model file (not valid JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{where} is not a latency model file (written by 'autoformer latency build')")
        if data.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"{where}: format_version {data.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            model = cls(
                space=dict(data["space"]),
                device=dict(data["device"]),
                runtime=str(data["runtime"]),
                batch=int(data["batch"]),
                threads=int(data["threads"]),
                blocks={str(k): float(v) for k, v in data["blocks"].items()},
                fixed={str(k): float(v) for k, v in data["fixed"].items()},
                kind=str(data["kind"]),
                correction=tuple(float(x) for x in data["correction"]),
                validation=dict(data.get("validation") or {}),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise UserError(f"{where} is damaged: {type(exc).__name__} {exc}") from None
        bad = [v for v in (*model.blocks.values(), *model.fixed.values()) if not math.isfinite(v) or v < 0]
        shape_ok = len(model.correction) == 3 and model.blocks and model.fixed
        if model.kind not in KINDS or model.runtime not in RUNTIMES or bad or not shape_ok:
            raise UserError(f"{where} is damaged: kind, runtime or table entries are not valid")
        SearchSpace.from_dict(model.space, source=where)
        return model
