"""``candidates.parquet`` and ``pareto.parquet``: one row per evaluated candidate, and the fronts.

Genes are columns (embed dim, depth, per-layer heads and MLP ratios as lists) beside the architecture's JSON,
so the tables can be filtered in pandas without parsing, and any row can be fed back to ``autoformer export``.
Every search score carries its 95 % interval (``top1_low``/``top1_high``) and the per-image hits behind it
(``hits``: ``numpy.unpackbits`` gives one bit per search image), so any two candidates can be compared paired;
``tied_with_best`` marks those McNemar's exact test cannot tell from the best. A re-ranked search
(``search.rerank_top``) adds each shortlisted candidate's score after a short fine-tune (``rerank_top1`` with
its interval, and the steps); its fronts, ranks and ties are then taken on those scores among the shortlist.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.arch import Architecture
from pipeline.core.records import by_top1, pareto_front
from pipeline.shared.errors import UserError
from pipeline.shared.storage import first_line, read_bytes, write_bytes

CANDIDATES_FILE = "candidates.parquet"
PARETO_FILE = "pareto.parquet"

# An architecture as columns: its key and JSON, and its genes (filterable in pandas without parsing).
ARCH_COLUMNS = [
    ("key", pa.string()),
    ("architecture", pa.string()),
    ("embed_dim", pa.int32()),
    ("depth", pa.int32()),
    ("num_heads", pa.list_(pa.int32())),
    ("mlp_ratio", pa.list_(pa.float64())),
]
CANDIDATE_SCHEMA = pa.schema(
    [
        *ARCH_COLUMNS,
        ("params", pa.int64()),
        ("macs", pa.int64()),
        ("latency_ms", pa.float64()),
        ("latency_ms_pred", pa.float64()),
        ("top1", pa.float64()),
        ("top1_low", pa.float64()),
        ("top1_high", pa.float64()),
        ("search_images", pa.int64()),
        ("hits", pa.binary()),
        ("tied_with_best", pa.bool_()),
        # re-ranked (search.rerank_top): search top-1 after rerank_steps steps of fine-tuning from inherited weights
        ("rerank_top1", pa.float64()),
        ("rerank_top1_low", pa.float64()),
        ("rerank_top1_high", pa.float64()),
        ("rerank_steps", pa.int32()),
        ("top5", pa.float64()),
        ("loss", pa.float64()),
        ("status", pa.string()),
        ("within_constraints", pa.bool_()),
        ("generation", pa.int32()),
        ("origin", pa.string()),
        ("trial_id", pa.string()),
        ("evaluator", pa.string()),
        ("node", pa.string()),
        ("eval_s", pa.float64()),
    ]
)
PARETO_SCHEMA = pa.schema(
    [
        *CANDIDATE_SCHEMA,
        ("on_params_front", pa.bool_()),
        ("on_macs_front", pa.bool_()),
        ("rank", pa.int32()),
        ("test_top1", pa.float64()),
        ("test_top5", pa.float64()),
        ("model_dir", pa.string()),
    ]
)


def arch_fields(arch: dict[str, Any]) -> dict[str, Any]:
    """The ``ARCH_COLUMNS`` of an architecture (``Architecture.to_dict()``)."""
    return {
        "key": Architecture.from_dict(arch).key,
        "architecture": json.dumps(arch),
        "embed_dim": arch["embed_dim"],
        "depth": arch["depth"],
        "num_heads": list(arch["num_heads"]),
        "mlp_ratio": list(arch["mlp_ratio"]),
    }


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        **arch_fields(record["arch"]),
        "params": record["params"],
        "macs": record["macs"],
        "latency_ms": record["latency_ms"],
        "latency_ms_pred": record.get("latency_ms_pred", float("nan")),
        "top1": record["top1"],
        "top1_low": record.get("top1_low", float("nan")),
        "top1_high": record.get("top1_high", float("nan")),
        "search_images": record.get("images", 0),
        "hits": bytes.fromhex(record.get("hits") or ""),
        "tied_with_best": bool(record.get("tied_with_best", False)),
        **_rerank_fields(record.get("rerank")),
        "top5": record["top5"],
        "loss": record["loss"],
        "status": record["status"],
        "within_constraints": record["status"] == "ok",
        "generation": record["generation"],
        "origin": record["origin"],
        "trial_id": str(record.get("trial_id", "")),
        "evaluator": str(record.get("evaluator", "")),
        "node": str(record.get("node", "")),
        "eval_s": record["eval_s"],
    }


def _rerank_fields(rerank: dict[str, Any] | None) -> dict[str, Any]:
    """A record's re-ranked columns: NaN and null where it was not re-ranked."""
    if rerank is None:
        return {
            "rerank_top1": math.nan,
            "rerank_top1_low": math.nan,
            "rerank_top1_high": math.nan,
            "rerank_steps": None,
        }
    return {
        "rerank_top1": rerank["top1"],
        "rerank_top1_low": rerank["top1_low"],
        "rerank_top1_high": rerank["top1_high"],
        "rerank_steps": rerank["steps"],
    }


def candidates_table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([_row(r) for r in records], schema=CANDIDATE_SCHEMA)


def pareto_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Candidates on the top-1/params front or the top-1/MACs front (within the constraints), ranked by top-1."""
    on_params = {r["key"] for r in pareto_front(records, "params")}
    on_macs = {r["key"] for r in pareto_front(records, "macs")}
    chosen = [r for r in records if r["key"] in on_params | on_macs]
    chosen.sort(key=by_top1)
    return [
        {**r, "on_params_front": r["key"] in on_params, "on_macs_front": r["key"] in on_macs, "rank": i + 1}
        for i, r in enumerate(chosen)
    ]


def pareto_table(front: list[dict[str, Any]]) -> pa.Table:
    rows = []
    for r in front:
        rows.append(
            {
                **_row(r),
                "on_params_front": r["on_params_front"],
                "on_macs_front": r["on_macs_front"],
                "rank": r["rank"],
                "test_top1": r.get("test_top1"),
                "test_top5": r.get("test_top5"),
                "model_dir": r.get("model_dir"),
            }
        )
    return pa.Table.from_pylist(rows, schema=PARETO_SCHEMA)


def write_table(table: pa.Table, target: str, metadata: dict[str, Any] | None = None) -> None:
    """One deterministic Parquet file; ``metadata`` (search settings, constraints, supernet) goes in its footer."""
    if metadata:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"autoformer": json.dumps(metadata).encode()}
        )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write_bytes(target, buffer.getvalue())


def read_table(source: str, what: str = "table") -> pa.Table:
    """The Parquet table at ``source`` (local or URI); a file that is not one (truncated by a copy that stopped,
    or another kind of file) is one line naming ``what``, the file and why, not pyarrow's traceback."""
    data = read_bytes(source)
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        cause = first_line(exc).removeprefix("Could not open Parquet input source '<Buffer>': ")
        raise UserError(f"{what} {source!r} is not a readable Parquet table ({cause})") from None
