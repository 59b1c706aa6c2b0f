"""After the search: write candidates.parquet, export and test-score the chosen models, write pareto.parquet
and pareto.png, and print the front as a table."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.progress import say
from pipeline.results.models import export_ranked, pick_device
from pipeline.results.plot import pareto_png
from pipeline.results.tables import candidates_table, pareto_records, pareto_table, write_table
from pipeline.search.evolution import best_record
from pipeline.search.launch import SearchOutcome, local_supernet
from pipeline.search.split_data import load_split
from pipeline.storage import join
from pipeline.task import Task

CANDIDATES_FILE = "candidates.parquet"
PARETO_FILE = "pareto.parquet"
PLOT_FILE = "pareto.png"


@dataclasses.dataclass
class SearchReport:
    run_path: str
    front: list[dict[str, Any]]  # pareto.parquet rows (exported ones carry test scores and model_dir)
    best: dict[str, Any] | None  # highest search top-1 within the constraints
    files: list[str]


def _metadata(outcome: SearchOutcome, supernet: str) -> dict[str, Any]:
    return {
        "settings": dataclasses.asdict(outcome.settings),
        "constraints": outcome.constraints.to_dict(),
        "space": outcome.space.name,
        "supernet": supernet,
        "supernet_epochs": outcome.supernet_config.get("epochs"),
        "evaluators": outcome.evaluators,
        "replaced_evaluators": outcome.replaced_evaluators,
    }


def write_report(outcome: SearchOutcome, task: Task, supernet: str, gpu: bool = False) -> SearchReport:
    from pipeline.model.supernet_io import load_supernet

    base = outcome.run_path
    meta = _metadata(outcome, supernet)
    records = outcome.records
    write_table(candidates_table(records), join(base, CANDIDATES_FILE), meta)
    front = pareto_records(records)
    best = best_record(records)
    # constrained: the best architecture; pareto: every architecture on the top-1/params front.
    if outcome.settings.objective == "pareto":
        chosen = [r for r in front if r["on_params_front"]]
    else:
        chosen = [r for r in front if best is not None and r["key"] == best["key"]]
    device = pick_device(gpu)
    say(f"[export] exporting {len(chosen)} model(s) and scoring each once on the test split ({device.type})")
    test = load_split(task, "test", batch_size=task.search["batch_size"])
    with local_supernet(supernet) as supernet_dir:
        model, _ = load_supernet(supernet_dir)
    exported = {r["key"]: r for r in export_ranked(chosen, model, supernet, task, test, base, device, meta)}
    front = [exported.get(r["key"], r) for r in front]
    if best is not None and best["key"] in exported:
        best = exported[best["key"]]
    write_table(pareto_table(front), join(base, PARETO_FILE), meta)
    c = outcome.constraints
    title = (
        f"{task.name}: {outcome.settings.algorithm} ({outcome.settings.objective}), {len(records)} candidates, "
        f"space {outcome.space.name}"
    )
    pareto_png(records, join(base, PLOT_FILE), title, c.min_params, c.max_params)
    return SearchReport(base, front, best, [join(base, f) for f in (CANDIDATES_FILE, PARETO_FILE, PLOT_FILE)])
