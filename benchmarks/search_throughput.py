"""Search throughput: warm evaluator actors vs loading the supernet per candidate, and orchestration overhead.

    python benchmarks/search_throughput.py [--supernet DIR --task TASK] [--heavy-root ../shared/data/cifar10-10k]

1. Warm vs reload (same candidates, same run, same Ray instance): candidates/s of one warm evaluator actor
   (supernet and search split loaded once) against Ray tasks that each load the supernet directory and the
   search split from disk, then evaluate one candidate. Goal: >= 10x.
2. Orchestration overhead of a real search (Tune trials -> router -> evaluators):
   (Tune wall time x evaluators - summed evaluation compute) / summed evaluation compute, on digits and on a
   heavier task (the compact-32 space on a CIFAR-10 ImageFolder subset, 1,000 search images). Goal: <= 15 %
   on the heavier one.

Without --supernet a freshly initialised supernet is used: speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.sampling import sample_architectures  # noqa: E402
from pipeline.core.task import Task, load_task  # noqa: E402
from pipeline.model.supernet import Supernet  # noqa: E402
from pipeline.model.supernet_dir import WEIGHTS_FILE, read_supernet_config, read_weights, save_supernet  # noqa: E402
from pipeline.search.launch import run_search  # noqa: E402
from pipeline.search.settings import EvaluatorResources, SearchSettings  # noqa: E402
from pipeline.training.launch import validate_data  # noqa: E402


def fresh_supernet(task: Task, where: Path) -> Path:
    checked = validate_data(task)
    return save_supernet(
        Supernet(checked["space"]),
        where / f"{task.name}-supernet",
        task=task.to_dict(),
        splits=checked["splits"],
        epochs=0,
    )


def cold_evaluate(
    supernet_dir: str, task_dict: dict, arch: dict, batch: int, latency_batch: int, repeats: int
) -> float:
    """What a search without resident evaluators pays per candidate: load everything, evaluate, throw away."""
    import torch
    from safetensors.numpy import load_file

    from pipeline.data.arrays import load_split
    from pipeline.search.evaluator import Evaluator

    torch.set_num_threads(1)
    start = time.perf_counter()
    task = Task.from_dict(task_dict)
    config = read_supernet_config(supernet_dir)
    split = load_split(task, "search")
    weights = read_weights(supernet_dir, config, load_file)
    evaluator = Evaluator(
        config,
        weights,
        split.images,
        split.labels,
        {"mean": task.data["mean"], "std": task.data["std"]},
        batch,
        latency_batch,
        repeats,
        threads=1,
    )
    evaluator.evaluate(arch)
    return time.perf_counter() - start


def warm_vs_reload(task: Task, supernet: Path, count: int) -> None:
    import ray
    from safetensors.numpy import load_file

    from pipeline.data.arrays import load_split
    from pipeline.search.evaluator import Evaluator

    s = task.search
    space = validate_data(task)["space"]
    archs = [a.to_dict() for a in sample_architectures(space, count, seed=123)]
    split = load_split(task, "search")
    refs = dict(
        weights=ray.put(read_weights(supernet, read_supernet_config(supernet), load_file)),
        images=ray.put(split.images),
        labels=ray.put(split.labels),
    )
    config = read_supernet_config(supernet)
    actor = (
        ray.remote(Evaluator)
        .options(num_cpus=1)
        .remote(
            config,
            normalization={"mean": task.data["mean"], "std": task.data["std"]},
            batch_size=s["batch_size"],
            latency_batch=s["latency_batch"],
            latency_repeats=s["latency_repeats"],
            threads=1,
            **refs,
        )
    )
    ray.get(actor.describe.remote())
    cold = ray.remote(num_cpus=1)(cold_evaluate)
    ray.get(
        cold.remote(str(supernet), task.to_dict(), archs[0], s["batch_size"], s["latency_batch"], s["latency_repeats"])
    )  # warm the worker
    rates = {"warm": [], "reload": []}
    for _ in range(2):  # alternate blocks so drift hits both alike
        start = time.perf_counter()
        for a in archs:
            ray.get(actor.evaluate.remote(a))
        rates["warm"].append(count / (time.perf_counter() - start))
        start = time.perf_counter()
        for a in archs:
            ray.get(
                cold.remote(str(supernet), task.to_dict(), a, s["batch_size"], s["latency_batch"], s["latency_repeats"])
            )
        rates["reload"].append(count / (time.perf_counter() - start))
    ray.kill(actor)
    warm, reload = statistics.median(rates["warm"]), statistics.median(rates["reload"])
    print(
        f"  {task.name}: warm actor {warm:.2f} candidates/s, reload per candidate {reload:.2f} candidates/s  ->  {warm / reload:.1f}x"
    )


def paper_supernet_load_times(where: Path) -> None:
    """What one reload costs at the paper's scale: build + load each autoformer-* supernet from its directory."""
    import torch

    from pipeline.core.space import load_space
    from pipeline.model.supernet_dir import load_supernet

    torch.set_num_threads(1)
    for name in ("autoformer-tiny", "autoformer-small", "autoformer-base"):
        path = save_supernet(Supernet(load_space(name)), where / name)
        size = (path / WEIGHTS_FILE).stat().st_size / 2**20
        start = time.perf_counter()
        load_supernet(path)
        print(f"  {name}: {size:.0f} MiB, build + load {time.perf_counter() - start:.1f} s per reload")
        shutil.rmtree(path)


def overhead(
    task: Task, supernet: Path, storage: Path, evaluators: int, cpus: float, population: int, generations: int
) -> None:
    strategy = {
        "algorithm": "evolution",
        "objective": "constrained",
        "population": population,
        "generations": generations,
        "parents": max(2, population // 5),
        "mutations": population // 2,
        "crossovers": population // 2,
        "seed": 0,
    }
    unset = ("min_params", "max_params", "max_macs", "max_latency_ms", "latency_model")  # no constraints
    overrides = [f"search.{k}={v}" for k, v in strategy.items()] + [f"search.{k}=null" for k in unset]
    settings = SearchSettings.from_task(task.with_overrides(overrides))
    outcome = run_search(
        task,
        str(supernet),
        settings,
        EvaluatorResources(count=evaluators, cpus=cpus),
        storage=str(storage),
        name=f"overhead-{task.name}-{evaluators}",
    )
    compute = sum(r["eval_s"] for r in outcome.records)
    n = len(outcome.records)
    ratio = (outcome.tune_s * evaluators - compute) / compute
    print(
        f"  {task.name}: {n} candidates, {evaluators} evaluator(s): Tune run {outcome.tune_s:.1f} s, evaluation compute {compute:.1f} s "
        f"({compute / n * 1000:.0f} ms/candidate)  ->  overhead {100 * ratio:.0f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heavy-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10-10k"))
    parser.add_argument(
        "--count",
        type=int,
        default=20,
        help="candidates per warm/reload block on digits (a quarter on the heavier task)",
    )
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tmp = Path(tempfile.mkdtemp(prefix="search-bench-"))
    try:
        tasks = [load_task("digits")]
        if Path(args.heavy_root).is_dir():
            tasks.append(
                load_task(
                    "imagefolder",
                    [
                        f"data.root={args.heavy_root}",
                        "space=compact-32",
                        "data.image_size=32",
                        "data.mean=[0.4914,0.4822,0.4465]",
                        "data.std=[0.2470,0.2435,0.2616]",
                        "splits.search_per_class=100",
                        "splits.test_per_class=100",
                        "data.loader_workers=1",
                        "search.batch_size=250",
                        "search.latency_batch=64",
                    ],
                )
            )
        else:
            print(f"(no {args.heavy_root}: heavier task skipped)")
        supernets = {t.name: fresh_supernet(t, tmp) for t in tasks}
        print(
            "warm evaluator actor vs loading the supernet and split per candidate (same candidates, alternating blocks):"
        )
        for t in tasks:
            warm_vs_reload(t, supernets[t.name], args.count if t.name == "digits" else max(2, args.count // 4))
        print("what a reload costs at the paper's scale (supernet only, no data; 1 thread):")
        paper_supernet_load_times(tmp)
        print("orchestration overhead = (Tune wall x evaluators - evaluation compute) / evaluation compute:")
        for t in tasks:
            pop, gens = (50, 4) if t.name == "digits" else (10, 3)
            for evaluators, cpus in ((1, 1.0), (2, 0.5)):  # on 2 cores, two evaluators only share the same CPUs
                overhead(t, supernets[t.name], tmp / "runs", evaluators, cpus, pop, gens)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
