"""End-to-end search through the CLI (Ray Tune + evaluator actors on this machine): slow, run in CI.

The supernet here is freshly initialised (not trained): the search machinery does not care, and it saves the
minutes of training. Each test runs ``autoformer search`` in its own process, as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.model.subnet_dir import load_model
from pipeline.results.tables import CANDIDATE_SCHEMA, PARETO_SCHEMA
from pipeline.shared.faults import FAULT_ENV, TOKEN_ENV

pytestmark = pytest.mark.slow

SMALL = ["--population", "6", "--generations", "3", "--set", "search.parents=3", "--set", "search.latency_repeats=2"]


@pytest.fixture
def supernet(digits_supernet: Path) -> Path:
    return digits_supernet


def _cmd(supernet: Path, storage: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.cli.main",
        "search",
        "digits",
        "--supernet",
        str(supernet),
        "--storage",
        str(storage),
        *SMALL,
        *args,
    ]


def _search(
    supernet: Path, storage: Path, *args: str, timeout: float = 600, fault: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if fault:
        env.update({FAULT_ENV: fault, TOKEN_ENV: str(storage / "fault-token")})
    return subprocess.run(_cmd(supernet, storage, *args), capture_output=True, text=True, timeout=timeout, env=env)


def _ok(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_search_survives_the_router_dying(supernet: Path, tmp_path: Path) -> None:
    """kill -9 of the router mid-search: Ray restarts it, the trials' calls are retried, nothing fails."""
    out = _search(supernet, tmp_path, "--evaluators", "1", "--cpus-per-evaluator", "0.5", fault="router_exit_after=3")
    _ok(out)
    assert (tmp_path / "fault-token").exists()  # the router did die
    df = pq.read_table(tmp_path / "digits-search" / "candidates.parquet").to_pandas()
    assert len(df) == df.key.nunique() == 18 and (df.status == "ok").all()


def test_search_survives_an_evaluator_death_and_writes_results(supernet: Path, tmp_path: Path) -> None:
    """Two evaluators taking every CPU of the machine (the trials take none), one of them dying mid-search."""
    from ray._private.utils import get_num_cpus

    out = _search(
        supernet,
        tmp_path,
        "--evaluators",
        "2",
        "--cpus-per-evaluator",
        f"{get_num_cpus() / 2:g}",
        "--objective",
        "pareto",
        "--max-params",
        "120000",
        fault="evaluator_exit_after=2",
    )
    _ok(out)
    assert "1 evaluator(s) replaced" in out.stdout
    for g in (0, 1, 2):  # numbered as the Parquet's generation column
        assert f"[search] generation {g} (of 0-2): 6 evaluated" in out.stdout
    run = tmp_path / "digits-search"
    candidates = pq.read_table(run / "candidates.parquet")
    assert candidates.schema.remove_metadata() == CANDIDATE_SCHEMA
    keys = candidates.column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 18  # none lost to the dead evaluator, none counted twice
    df = candidates.to_pandas()
    assert (df.params <= 120_000).all() and (df.status == "ok").all() and sorted(set(df.generation)) == [0, 1, 2]
    assert df.evaluator.nunique() >= 2
    assert (df.node.str.len() == 56).all()  # the Ray node id of the evaluator that scored each candidate
    pareto = pq.read_table(run / "pareto.parquet")
    assert pareto.schema.remove_metadata() == PARETO_SCHEMA
    front = pareto.to_pandas()
    exported = front[front.model_dir.notna()]
    assert len(exported) == front.on_params_front.sum() >= 1
    for _, row in exported.iterrows():
        model, config = load_model(row.model_dir)
        assert model.arch.key == row.key
        assert config["metadata"]["test"]["top1"] == row.test_top1 and config["metadata"]["search"]["top1"] == row.top1
    assert (run / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    meta = json.loads(candidates.schema.metadata[b"autoformer"])
    assert meta["settings"]["population"] == 6 and meta["constraints"]["max_params"] == 120_000


def test_interrupted_search_resumes_to_the_same_candidates_and_extends(
    supernet: Path, tmp_path: Path, finished_search
) -> None:
    args = ["--seed", "7", "--set", "search.latency_repeats=1"]
    # the uninterrupted search, shared (tests/conftest.py): these settings, 5 generations, named whole
    finished, out = finished_search
    _ok(out)
    whole = _generations(finished, "whole")
    proc = subprocess.Popen(
        _cmd(supernet, tmp_path, "--name", "cut", "--generations", "4", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seen = []
    deadline = time.time() + 300
    for line in proc.stdout:
        seen.append(line)
        if "[search] generation 1 (of 0-3)" in line:
            proc.send_signal(signal.SIGINT)
            break
        assert time.time() < deadline, "".join(seen)
    rest = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, "".join(seen) + rest
    assert "--resume" in rest and not (tmp_path / "cut" / "candidates.parquet").exists()
    assert "Tuner.restore" not in "".join(seen) + rest  # Tune's hint for Python users, not for the CLI
    out = _search(supernet, tmp_path, "--name", "cut", "--resume", "--generations", "4", *args)
    _ok(out)
    assert "[search] generation 0 (of 0-3)" not in out.stdout and "[search] generation 3 (of 0-3)" in out.stdout
    assert _generations(tmp_path, "cut") == {k: g for k, g in whole.items() if g < 4}

    # fewer generations would change what was run: refused; more extend the run, recorded
    out = _search(supernet, tmp_path, "--name", "cut", "--resume", "--generations", "3", *args)
    assert out.returncode == 2 and "search.generations = 4 (now 3)" in out.stderr, out.stderr[-2000:]
    out = _search(supernet, tmp_path, "--name", "cut", "--resume", "--generations", "5", *args)
    _ok(out)
    assert "extending" in out.stdout and "[search] generation 4 (of 0-4)" in out.stdout
    assert _generations(tmp_path, "cut") == whole  # exactly what the longer run evaluates
    settings = json.loads((tmp_path / "cut" / "search-settings.json").read_text())
    assert settings["search.generations"] == 5 and settings["extensions"][0]["generations_from"] == 4
    meta = json.loads(pq.read_table(tmp_path / "cut" / "candidates.parquet").schema.metadata[b"autoformer"])
    assert meta["settings"]["generations"] == 5


def _generations(storage: Path, name: str) -> dict[str, int]:
    table = pq.read_table(storage / name / "candidates.parquet", columns=["key", "generation"]).to_pylist()
    return {r["key"]: r["generation"] for r in table}


def test_search_errors_are_one_line_and_write_nothing(supernet: Path, tmp_path: Path) -> None:
    out = _search(supernet, tmp_path, "--max-params", "1000")
    assert out.returncode == 2 and "below the smallest architecture" in out.stderr and "Traceback" not in out.stderr
    out = _search(supernet, tmp_path, "--resume")
    assert out.returncode == 2 and "no search" in out.stderr
    out = _search(supernet, tmp_path, "--set", "splits.seed=5")
    assert out.returncode == 2 and "not the one the supernet was trained with" in out.stderr
    out = _search(supernet, tmp_path, "--evaluators", "0")
    assert out.returncode == 2 and "argument --evaluators: must be an integer >= 1, not '0'" in out.stderr
    assert not (tmp_path / "digits-search").exists()


def test_an_impossible_timed_latency_limit_writes_nothing(supernet: Path, tmp_path: Path) -> None:
    out = _search(supernet, tmp_path / "runs", "--max-latency-ms", "0.000001")  # (1e-6 is text to YAML 1.1)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "max_latency_ms 1e-06: even the smallest architecture of search space 'digits' takes" in out.stderr
    assert not (tmp_path / "runs").exists()  # the evaluators timed it before the run was recorded


def test_a_finished_search_is_re_ranked_and_picks_on_the_re_ranked_scores(
    supernet: Path, tmp_path: Path, finished_search
) -> None:
    """search.rerank_top on a finished search (a copy of the shared one): the shortlist is fine-tuned a few steps
    each, its re-ranked scores are recorded beside the inherited ones, the picks and exported models come from
    them (with the fine-tuned weights), and the same command again resumes the re-ranking instead of redoing it."""
    import shutil

    import torch
    from conftest import FINISHED_SEARCH, run_cli

    from pipeline.core.arch import Architecture
    from pipeline.model.supernet_dir import load_supernet

    storage, out = finished_search
    _ok(out)
    shutil.copytree(storage / "whole", tmp_path / "whole")
    command = ["search", "digits", "--supernet", supernet.name, "--storage", str(tmp_path), "--name", "whole"]
    command += ["--resume", *FINISHED_SEARCH, "--rerank-top", "3", "--rerank-steps", "4"]
    out = run_cli(*command, cwd=supernet.parent)  # the supernet as a relative path, as users give it
    _ok(out)
    assert "[rerank] fine-tuning 3 shortlisted candidate(s), 4 steps each" in out.stdout
    assert out.stdout.count("after 4 steps") >= 3 and "re-ranked" in out.stdout
    run = tmp_path / "whole"
    df = pq.read_table(run / "candidates.parquet").to_pandas()
    reranked = df[df.rerank_top1.notna()]
    assert len(reranked) == 3 and (reranked.rerank_steps == 4).all()
    best_inherited = df.sort_values(["top1", "params", "key"], ascending=[False, True, True]).key.iloc[0]
    assert best_inherited in set(reranked.key)
    assert (
        (reranked.rerank_top1_low <= reranked.rerank_top1) & (reranked.rerank_top1 <= reranked.rerank_top1_high)
    ).all()
    front = pq.read_table(run / "pareto.parquet").to_pandas().sort_values("rank")
    assert set(front.key) <= set(reranked.key)  # picked among the re-ranked only, ranked on their new scores
    assert list(front.rerank_top1) == sorted(front.rerank_top1, reverse=True)
    supernet_model, _ = load_supernet(supernet)
    exported = front[front.model_dir.notna()]
    assert len(exported) >= 1
    for _, row in exported.iterrows():
        model, config = load_model(row.model_dir)
        meta = config["metadata"]
        assert "re-ranked" in meta["source"] and meta["rerank"]["top1"] == row.rerank_top1
        inherited = supernet_model.extract(Architecture.from_json(row.architecture)).state_dict()
        assert any(not torch.equal(v, inherited[k]) for k, v in model.state_dict().items())  # fine-tuned weights
    again = run_cli(*command, cwd=supernet.parent)
    _ok(again)
    assert "[rerank] resuming 3 shortlisted" in again.stdout and "inherited ->" not in again.stdout, again.stdout
    df2 = pq.read_table(run / "candidates.parquet").to_pandas()
    assert df2.rerank_top1.fillna(-1).tolist() == df.rerank_top1.fillna(-1).tolist()
