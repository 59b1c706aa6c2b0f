"""Latency models on this machine: how long a table takes to build, how well it predicts, what it saves a search.

1. For digits and compact-32, at batch 1 and 64, torch eager and ONNX Runtime (1 thread): table build time,
   MAPE and Kendall tau of predicted vs measured on held-out architectures (``autoformer latency build``).
2. The digits search with a latency model vs timing every candidate, same seed and budget, side by side:
   wall time of the search, candidates/s, and orchestration overhead ((Tune wall x evaluators - scoring compute)
   / scoring compute). Goal: >= 1.5x faster overall, overhead <= 25 %.
3. ONNX Runtime vs torch eager latency of three architectures from the digits front (small, middle, large).

Needs a trained (or freshly initialised) digits supernet; one is made when ``--supernet`` is not given. Run::

    python benchmarks/latency_models.py [--supernet runs/digits-supernet/supernet] [--validate 50]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from pipeline.core.latency_model import LatencyModel  # noqa: E402
from pipeline.core.space import load_space  # noqa: E402
from pipeline.core.task import load_task  # noqa: E402
from pipeline.latency.build import BuildSettings, build_latency_model, open_profiler  # noqa: E402
from pipeline.model.supernet import Supernet  # noqa: E402
from pipeline.model.supernet_dir import save_supernet  # noqa: E402
from pipeline.search.launch import run_search  # noqa: E402
from pipeline.search.settings import EvaluatorResources, SearchSettings  # noqa: E402
from pipeline.training.launch import validate_data  # noqa: E402


def fresh_supernet(task_name: str, where: Path) -> str:
    task = load_task(task_name)
    checked = validate_data(task)
    path = where / f"{task_name}-supernet"
    save_supernet(Supernet(checked["space"]), path, task=task.to_dict(), splits=checked["splits"], epochs=0)
    return str(path)


def tables(supernets: dict[str, str], validate: int, where: Path) -> dict[str, Path]:
    print("1. latency tables (1 thread): build time, held-out MAPE and Kendall tau")
    files = {}
    for name, supernet in supernets.items():
        for runtime in ("torch", "onnxruntime"):
            for batch in (1, 64):
                model = build_latency_model(supernet, BuildSettings("local", runtime, batch, 1, validate))
                v = model.validation
                path = where / f"{name}-{runtime}-b{batch}.json"
                model.save(path)
                files[f"{name}-{runtime}-b{batch}"] = path
                print(
                    f"   {name:10s} {runtime:11s} batch {batch:2d}: built in {v['build_s']:6.1f} s, {model.kind:9s} "
                    f"MAPE {100 * v['mape']:5.1f} % (table {100 * v['table_mape']:5.1f} %), "
                    f"tau {v['kendall_tau']:.3f} (table {v['table_kendall_tau']:.3f}), {v['count']} held out",
                    flush=True,
                )
    return files


def search_with_and_without(supernet: str, model_file: Path, storage: Path) -> None:
    print("2. digits search: timing every candidate vs a latency model (same seed, 1 evaluator, 1 CPU)")
    results = {}
    for label, extra in (("timing", []), ("latency model", [f"search.latency_model={model_file}"])):
        t = load_task("digits", ["search.population=50", "search.generations=6", *extra])
        settings = SearchSettings.from_task(t)
        start = time.perf_counter()
        outcome = run_search(
            t, supernet, settings, EvaluatorResources(count=1, cpus=1.0), str(storage), label.replace(" ", "-")
        )
        wall = time.perf_counter() - start
        compute = sum(r["eval_s"] for r in outcome.records if not math.isnan(r["eval_s"]))
        overhead = (outcome.tune_s - compute) / compute
        results[label] = wall
        print(
            f"   {label:13s}: {len(outcome.records)} candidates in {wall:6.1f} s ({len(outcome.records) / wall:.2f}/s); "
            f"Tune run {outcome.tune_s:.1f} s, scoring compute {compute:.1f} s -> overhead {100 * overhead:.0f} %",
            flush=True,
        )
    print(f"   speed-up with the latency model: {results['timing'] / results['latency model']:.2f}x")


def runtimes(supernet: str, model_file: Path) -> None:
    print("3. ONNX Runtime vs torch eager (digits, batch 64, 1 thread), three architectures")
    from pipeline.model.supernet_dir import load_supernet

    net, _ = load_supernet(supernet)
    space = net.space
    archs = {
        "small": {"embed_dim": 32, "depth": 2, "num_heads": [2, 2], "mlp_ratio": [2, 2]},
        "middle": {"embed_dim": 48, "depth": 3, "num_heads": [4, 2, 2], "mlp_ratio": [2, 2, 2]},
        "large": {"embed_dim": 64, "depth": 3, "num_heads": [4, 4, 2], "mlp_ratio": [2, 2, 2]},
    }
    model = LatencyModel.load(model_file)
    ms = {}
    for runtime in ("torch", "onnxruntime"):
        with open_profiler(space, BuildSettings("local", runtime, model.batch, 1)) as call:
            ms[runtime] = {k: call("arch_ms", a) for k, a in archs.items()}
    for k in archs:
        print(
            f"   {k:6s}: torch {ms['torch'][k]:.2f} ms, onnxruntime {ms['onnxruntime'][k]:.2f} ms ({ms['torch'][k] / ms['onnxruntime'][k]:.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default=None, help="a digits supernet (default: a fresh one)")
    parser.add_argument("--validate", type=int, default=50)
    args = parser.parse_args()
    where = Path(tempfile.mkdtemp(prefix="latency-bench-"))
    try:
        # the table depends only on the space: compact-32's needs no data (its weights are never read)
        compact = str(save_supernet(Supernet(load_space("compact-32")), where / "compact-32-supernet"))
        supernets = {"digits": args.supernet or fresh_supernet("digits", where), "compact-32": compact}
        files = tables(supernets, args.validate, where)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        search_with_and_without(supernets["digits"], files["digits-torch-b64"], where)
        runtimes(supernets["digits"], files["digits-torch-b64"])
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
