"""After the search: write candidates.parquet, export and test-score the chosen models, write pareto.parquet
and pareto.png, and print the front as a table."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from pipeline.core.records import CandidateRecord, best_record, tied_with
from pipeline.core.shortlist import ranking_pool, with_reranked
from pipeline.core.task import Task
from pipeline.data.ray_ingest import load_split
from pipeline.model.supernet_dir import load_supernet
from pipeline.rerank.launch import Reranked
from pipeline.results.models import export_ranked
from pipeline.results.plot import PLOT_FILE, pareto_png
from pipeline.results.tables import (
    CANDIDATES_FILE,
    PARETO_FILE,
    candidates_table,
    pareto_records,
    pareto_table,
    write_table,
)
from pipeline.shared.metrics import pick_device
from pipeline.shared.progress import say
from pipeline.shared.storage import join

FRONT_KEYS = ("on_params_front", "on_macs_front", "rank")  # what pareto_records adds to a record


@dataclasses.dataclass
class SearchReport:
    run_path: str
    front: list[dict[str, Any]]  # pareto.parquet rows (exported ones carry test scores and model_dir)
    best: dict[str, Any] | None  # highest search top-1 within the constraints
    tied: list[dict[str, Any]]  # candidates statistically tied with the best (paired, same images), smallest first;
    # re-ranked: as the rankings saw them (their re-ranked scores in place of the inherited ones)
    files: list[str]


def write_report(
    run_path: str,
    records: list[CandidateRecord],
    metadata: dict[str, Any],
    task: Task,
    supernet: str,
    gpu: bool = False,
    measure: Callable[[torch.nn.Module], float] | None = None,
    reranked: Reranked | None = None,
) -> SearchReport:
    """Write the result files of a finished search under ``run_path``; ``metadata`` (the search's settings,
    constraints, space and supernet, as recorded) goes into the Parquet footers and the models' metadata.
    ``measure`` times an exported model on the target device (searches that predicted latency). With
    ``reranked`` (the shortlist's scores after a short fine-tune), the best, its ties and the fronts are taken
    among the shortlist on those scores, and its models are exported with their fine-tuned weights."""
    settings, constraints = metadata["settings"], metadata["constraints"]
    weights = {}
    if reranked is not None:
        records = with_reranked(records, reranked.scores)
        weights = reranked.weights
        metadata = {**metadata, "rerank": {"steps": reranked.steps, "experiment": reranked.run_path}}
    pool = ranking_pool(records)
    best = best_record(pool)
    tied = {r["key"] for r in tied_with(best, pool)} if best is not None else set()
    records = [{**r, "tied_with_best": r["key"] in tied} for r in records]
    write_table(candidates_table(records), join(run_path, CANDIDATES_FILE), metadata)
    by_key = {r["key"]: r for r in records}
    front = [{**by_key[r["key"]], **{k: r[k] for k in FRONT_KEYS}} for r in pareto_records(ranking_pool(records))]
    # constrained: the best architecture; pareto: every architecture on the top-1/params front.
    if settings["objective"] == "pareto":
        chosen = [r for r in front if r["on_params_front"]]
    else:
        chosen = [r for r in front if best is not None and r["key"] == best["key"]]
    device = pick_device(gpu)
    say(f"[export] exporting {len(chosen)} model(s) and scoring each once on the test split ({device.type})")
    test = load_split(task, "test", batch_size=task.search["batch_size"])
    model, _ = load_supernet(supernet)
    exported = {
        r["key"]: r
        for r in export_ranked(chosen, model, supernet, task, test, run_path, device, metadata, measure, weights)
    }
    front = [exported.get(r["key"], r) for r in front]
    best = exported.get(best["key"], by_key[best["key"]]) if best is not None else None
    write_table(pareto_table(front), join(run_path, PARETO_FILE), metadata)
    title = f"{task.name}: {settings['algorithm']} ({settings['objective']}), {len(records)} candidates, space {metadata['space']}"
    pareto_png(records, join(run_path, PLOT_FILE), title, constraints["min_params"], constraints["max_params"])
    ties = sorted((r for r in pool if r["key"] in tied), key=lambda r: (r["params"], -r["top1"], r["key"]))
    return SearchReport(
        run_path, front, best, ties, [join(run_path, f) for f in (CANDIDATES_FILE, PARETO_FILE, PLOT_FILE)]
    )
