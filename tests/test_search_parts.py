"""Evaluator, split arrays and result files, without Ray: exact scores, latency limit, Parquet schema, picture."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.core.sampling import sample_architectures
from pipeline.core.task import load_task
from pipeline.data.arrays import check_same_splits, split_dataset
from pipeline.data.ray_ingest import load_split
from pipeline.data.splits import SplitDataset
from pipeline.data.transforms import eval_transform
from pipeline.model.supernet import Supernet
from pipeline.results.plot import pareto_png
from pipeline.results.tables import (
    CANDIDATE_SCHEMA,
    PARETO_SCHEMA,
    candidates_table,
    pareto_records,
    pareto_table,
    read_table,
    write_table,
)
from pipeline.search.evaluator import Evaluator
from pipeline.shared.errors import UserError
from pipeline.shared.metrics import evaluate_sums, finish


@pytest.fixture(scope="module")
def digits():
    task = load_task("digits")
    split = load_split(task, "search")
    model = Supernet(task.space(), sharing="entangled").eval()
    return task, split, model


def _evaluator(task, split, model, **kw) -> Evaluator:
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    for v in weights.values():
        v.setflags(write=False)  # as object-store views arrive
    config = {"space": model.space.to_dict(), "sharing": model.sharing, "regularization": {}}
    args = dict(batch_size=64, latency_batch=16, latency_repeats=3, threads=1)
    args.update(kw)
    return Evaluator(
        config, weights, split.images, split.labels, {"mean": task.data["mean"], "std": task.data["std"]}, **args
    )


def test_uint8_split_scores_exactly_like_the_dataloader(digits) -> None:
    task, split, model = digits
    assert split.images.dtype == np.uint8 and split.images.shape == (200, 1, 8, 8) and split.role == "search"
    dataset, _ = split_dataset(task, "search")
    normal = SplitDataset(dataset.source, dataset.indices, eval_transform(task.data), "search")
    loader = DataLoader(normal, batch_size=64)
    evaluator = _evaluator(task, split, model)
    for arch in sample_architectures(model.space, 3, seed=0):
        reference = finish(evaluate_sums(model, arch, loader, torch.device("cpu")))
        got = evaluator.evaluate(arch.to_dict())
        assert got["status"] == "ok" and got["latency_ms"] > 0 and got["eval_s"] > 0
        for k in ("top1", "top5"):
            assert got[k] == reference[k]
        assert got["loss"] == pytest.approx(reference["loss"], rel=1e-5)


def test_latency_limit_skips_scoring(digits) -> None:
    task, split, model = digits
    evaluator = _evaluator(task, split, model)
    arch = sample_architectures(model.space, 1, seed=3)[0].to_dict()
    out = evaluator.evaluate(arch, max_latency_ms=1e-6)
    assert out["status"] == "over_latency" and math.isnan(out["top1"]) and out["latency_ms"] > 1e-6


def test_supernet_weights_are_used_in_place_on_cpu(digits) -> None:
    task, split, model = digits
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    config = {"space": model.space.to_dict(), "sharing": model.sharing, "regularization": {}}
    evaluator = Evaluator(config, weights, split.images, split.labels, {"mean": [0.3], "std": [0.4]}, 64, 16, 3)
    # zero-copy: the module's parameters are the arrays it was given (object-store memory, shared per node)
    assert evaluator.model.pos_embed.data_ptr() == weights["pos_embed"].ctypes.data
    assert evaluator.images.data_ptr() == split.images.ctypes.data
    before = {k: v.clone() for k, v in evaluator.model.state_dict().items()}
    evaluator.evaluate(sample_architectures(model.space, 1, seed=4)[0].to_dict())
    assert all(torch.equal(before[k], v) for k, v in evaluator.model.state_dict().items())


def test_splits_must_match_the_supernet(digits) -> None:
    task, split, _ = digits
    check_same_splits(split.summary, split.summary, "here")
    other = load_task("digits", ["splits.seed=1"])
    with pytest.raises(UserError, match="not the one the supernet was trained with"):
        check_same_splits(split.summary, load_split(other, "search").summary, "here")


def _records(n: int = 30) -> list[dict]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        status = "over_latency" if i == 3 else "ok"
        params = int(rng.integers(20_000, 200_000))
        records.append(
            {
                "key": f"k{i}",
                "arch": {"embed_dim": 32, "depth": 2, "num_heads": [2, 3], "mlp_ratio": [2.0, 4.0]},
                "params": params,
                "macs": int(params * 17 + rng.integers(0, 400_000)),
                "latency_ms": float(rng.random()),
                "top1": float("nan") if status != "ok" else float(rng.random()),
                "top5": 1.0,
                "loss": 0.5,
                "status": status,
                "generation": i // 10,
                "origin": "random",
                "trial_id": f"t{i}",
                "evaluator": "node:1",
                "eval_s": 0.1,
            }
        )
    return records


def test_result_tables_schema_and_fronts(tmp_path) -> None:
    records = _records()
    write_table(candidates_table(records), str(tmp_path / "candidates.parquet"), {"settings": {"population": 10}})
    table = pq.read_table(tmp_path / "candidates.parquet")
    assert table.schema.remove_metadata() == CANDIDATE_SCHEMA and table.num_rows == 30
    assert json.loads(table.schema.metadata[b"autoformer"])["settings"]["population"] == 10
    df = table.to_pandas()
    assert json.loads(df.architecture[0])["num_heads"] == [2, 3] and list(df.num_heads[0]) == [2, 3]
    assert not df.within_constraints[3] and df.within_constraints.sum() == 29
    front = pareto_records(records)
    ok = [r for r in records if r["status"] == "ok"]
    for r in front:  # nothing on a front is dominated in its own objective pair
        cost = "params" if r["on_params_front"] else "macs"
        assert not any(
            o["top1"] >= r["top1"] and o[cost] <= r[cost] and (o["top1"] > r["top1"] or o[cost] < r[cost]) for o in ok
        )
    assert [r["rank"] for r in front] == list(range(1, len(front) + 1))
    assert all(front[i]["top1"] >= front[i + 1]["top1"] for i in range(len(front) - 1))
    write_table(pareto_table(front), str(tmp_path / "pareto.parquet"))
    assert read_table(str(tmp_path / "pareto.parquet")).schema.remove_metadata() == PARETO_SCHEMA
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def test_pareto_png_is_written(tmp_path) -> None:
    pareto_png(_records(), str(tmp_path / "pareto.png"), "test", None, 150_000)
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("concurrency", [1, 2, 3, 7, 64, 1000])
def test_trials_take_no_cpu_and_exactly_concurrency_of_them_fit_on_the_head(concurrency: int) -> None:
    """Trial actors must never take CPUs an evaluator needs (a lost evaluator's replacement found the new node's
    CPUs filled with trial actors and the search waited forever), and Tune must never hold more trial actors than
    trials run at once (it starts one per queued trial wherever there is room): Ray places as many as fit in the
    head's one unit of its marker resource, counted in steps of 1e-4."""
    from pipeline.search.experiment import HEAD_RESOURCE, trial_resources

    resources = trial_resources(concurrency)
    assert resources["CPU"] == 0 and set(resources) == {"CPU", HEAD_RESOURCE}
    share = round(resources[HEAD_RESOURCE] * 10_000)  # Ray's fixed-point units
    assert share * concurrency <= 10_000 < share * (concurrency + 1)


def test_a_resumed_search_may_only_grow_its_generations(tmp_path) -> None:
    """The comparison ``--resume`` makes, without Ray: the recorded settings must match, except that more
    generations extend the run (returned, to be recorded); the record's extensions list does not count."""
    from pipeline.search.launch import SETTINGS_FILE, check_recorded_settings, recorded_settings
    from pipeline.search.settings import SearchSettings

    settings = recorded_settings(SearchSettings.from_task(load_task("digits")), str(tmp_path / "supernet"))
    assert check_recorded_settings(str(tmp_path), settings, resume=False) == (None, settings)
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({**settings, "extensions": [{"generations_from": 10}]}))
    assert check_recorded_settings(str(tmp_path), settings, resume=True) == (None, None)
    grown = {**settings, "search.generations": settings["search.generations"] + 5}
    extended_from, record = check_recorded_settings(str(tmp_path), grown, resume=True)
    assert (
        extended_from == settings["search.generations"] and record["search.generations"] == grown["search.generations"]
    )
    assert [e["generations_from"] for e in record["extensions"]] == [10, extended_from]
    for changed in ({"search.generations": 1}, {"search.population": 7}):
        key, value = next(iter(changed.items()))
        with pytest.raises(UserError) as refused:
            check_recorded_settings(str(tmp_path), {**settings, **changed}, resume=True)
        assert str(refused.value) == (
            f"search {str(tmp_path)!r} was made with {key} = {settings[key]!r} (now {value!r}); only "
            f"search.generations may grow: re-run with the same settings to resume it, or choose another run name"
        )
