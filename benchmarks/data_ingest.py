"""Images/s delivered to one training worker: Ray Data from a local S3 server (moto) against a DataLoader from
local disk, same images, same transform, measured side by side in one run.

The images are the CIFAR subset (``../shared/data/cifar10-10k``) upscaled to ``--size`` px and saved as JPEG
(quality 90), so decoding costs what ImageNet's does at 224 px; the transform is the ``--task`` recipe's
(imagenet-tiny: random resized crop, flip, RandAugment rand-m9-mstd0.5-inc1, random erasing). Three ways in:

* ``loader``: ``data.ingest=loader``, a torch DataLoader with ``--loader-workers`` processes reading the tree
  from local disk (what training did before Ray Data);
* ``ray-local-tree``: Ray Data tasks reading the same tree from local disk (what Ray Data itself costs);
* ``ray-s3-tree``: Ray Data tasks reading the tree from the S3 server, one object per image;
* ``ray-s3-pack``: Ray Data tasks reading the tree packed (``autoformer data pack``) into shards on the server.

Each way is timed over ``--batches`` batches of ``--batch`` images after one warm-up batch, alternating in
``--rounds`` rounds so machine noise hits all alike; the consumer only touches the tensors (no model), so the
figure is what the ingest can deliver. Ray gets ``--cpus`` CPUs in all (the DataLoader the same number of
processes). Run::

    python benchmarks/data_ingest.py --size 224 --images 2000 --rounds 3
    python benchmarks/data_ingest.py --size 32 --images 4000 --rounds 3
    python benchmarks/data_ingest.py --size 224 --images 2000 --rounds 3 --nodes 0,1,2

``--nodes 0,1,2`` instead compares the packed Ray Data way with 0, 1 and 2 CPU-only preprocessing nodes on one
simulated cluster (``ray.cluster_utils.Cluster``: a head without CPUs, a training node and two CPU-only nodes of
``--node-cpus`` CPUs each). Every node advertises the pools it serves (the training node ``pool0``..``pool2``,
the first CPU node ``pool1`` and ``pool2``, the second ``pool2``) and the way with K nodes asks its decoding tasks
for ``poolK``: the three layouts alternate in one cluster. The nodes share this machine's cores, so with 1-CPU
nodes on a 2-core machine the most any layout can reach is 2x the training node alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_jpeg_tree(source: Path, target: Path, size: int, count: int) -> Path:
    """``count`` images of the CIFAR subset (round-robin over classes), upscaled to ``size`` px, as JPEG."""
    if (target / "done").exists():
        return target
    classes = sorted(p.name for p in (source / "train").iterdir())
    files = {c: sorted((source / "train" / c).iterdir()) for c in classes}
    for n in range(count):
        c = classes[n % len(classes)]
        image = Image.open(files[c][n // len(classes)]).convert("RGB").resize((size, size), Image.BICUBIC)
        out = target / "train" / c / f"{n:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out, quality=90)
    (target / "done").write_text("")
    return target


class MotoProcess:
    """moto's S3 server in a process of its own (``moto_server``), as the S3 endpoint a cluster would reach:
    in this process its request handling would take the consumer's GIL. Its CPU time still comes out of this
    machine's cores, which real object storage does not."""

    def __init__(self) -> None:
        import socket
        import subprocess

        import boto3

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        exe = Path(sys.executable).with_name("moto_server")
        cmd = [str(exe), "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        client = boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for attempt in range(100):  # the server takes a moment to listen
            try:
                client.create_bucket(Bucket="autoformer-test")
                break
            except Exception:
                if attempt == 99:
                    raise
                time.sleep(0.1)

    def filesystem(self):
        import pyarrow.fs

        return pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http", region="us-east-1")

    def stop(self) -> None:
        self.process.terminate()


def upload(fs, local: Path, prefix: str) -> str:
    for path in sorted(local.rglob("*.jpg")):
        with fs.open_output_stream(f"autoformer-test/{prefix}/{path.relative_to(local).as_posix()}") as out:
            out.write(path.read_bytes())
    return f"s3://autoformer-test/{prefix}"


def loader_batches(task, batch: int, workers: int):
    import torch
    from torch.utils.data import DataLoader

    from pipeline.data.sources import open_sources
    from pipeline.data.splits import SplitDataset
    from pipeline.data.transforms import train_transform

    pool, _ = open_sources(task.data)
    dataset = SplitDataset(pool, np.arange(len(pool)), train_transform(task.data, task.train.augment), "train")
    sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)


def ray_batches(task, batch: int):
    from pipeline.data.ray_ingest import DecodeSpec, EpochStream
    from pipeline.data.sources import open_sources

    pool, _ = open_sources(task.data)
    spec = DecodeSpec.make(task.data, task.train.augment)
    return EpochStream(pool, np.arange(len(pool)), spec, 0, 1, 0, batch, task.data["ingest_cpus"])


def in_pool(pool: str):
    """Ray Data's ``map_batches`` with every decoding task also asking for ``pool`` (a custom resource)."""
    import ray.data

    original = ray.data.Dataset.map_batches

    def map_batches(self, fn, *args, **kwargs):
        return original(self, fn, *args, **{**kwargs, "resources": {pool: 0.001}})

    @contextlib.contextmanager
    def patched():
        ray.data.Dataset.map_batches = map_batches
        try:
            yield
        finally:
            ray.data.Dataset.map_batches = original

    return patched()


def start_cluster(node_cpus: int):
    """Head without CPUs, a training node serving every pool, two CPU-only nodes serving the larger pools."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=node_cpus, resources={"pool0": 100, "pool1": 100, "pool2": 100})
    cluster.add_node(num_cpus=node_cpus, resources={"pool1": 100, "pool2": 100})
    cluster.add_node(num_cpus=node_cpus, resources={"pool2": 100})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def rate(batches, count: int, batch: int) -> float:
    """Images/s over ``count`` batches, after one warm-up batch (start-up is not throughput)."""
    iterator = iter(batches)
    next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        images, _labels = next(iterator)
        images.sum()  # touch the tensor as a training step would
    return count * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-10k"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "autoformer-ingest-bench"))
    parser.add_argument("--task", default="imagenet-tiny")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--nodes", default=None, help="e.g. 0,1,2: CPU-only nodes of a simulated cluster")
    parser.add_argument("--shard-mb", type=int, default=4, help="pack shard size (ImageNet: 256 MB, ~600 shards)")
    parser.add_argument("--node-cpus", type=int, default=1, help="CPUs of each simulated node")
    args = parser.parse_args()

    import ray

    from pipeline.core.task import load_task
    from pipeline.data.pack_job import pack

    tree = make_jpeg_tree(Path(args.data), Path(args.work) / f"jpeg-{args.size}-{args.images}", args.size, args.images)
    s3 = MotoProcess()
    os.environ.update(s3.env)
    remote_tree = upload(s3.filesystem(), tree, "tree")
    cluster = start_cluster(args.node_cpus) if args.nodes else None
    if cluster is None:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    pack(remote_tree, "s3://autoformer-test/pack", shard_bytes=args.shard_mb * 2**20)
    common = [f"data.image_size={args.size}", "data.eval_crop_pct=1.0", "splits.search_per_class=1"]
    packed = load_task(args.task, [*common, "data.root=s3://autoformer-test/pack", "data.ingest=ray_data"])
    if cluster is None:
        ways = {
            "loader": load_task(args.task, [*common, f"data.root={tree}", "data.ingest=loader"]),
            "ray-local-tree": load_task(args.task, [*common, f"data.root={tree}", "data.ingest=ray_data"]),
            "ray-s3-tree": load_task(args.task, [*common, f"data.root={remote_tree}", "data.ingest=ray_data"]),
            "ray-s3-pack": packed,
        }
    else:
        ways = {f"pack, {k} CPU node(s)": packed for k in args.nodes.split(",")}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, task in ways.items():
            if name == "loader":
                rates[name].append(
                    rate(loader_batches(task, args.batch, args.loader_workers), args.batches, args.batch)
                )
                continue
            with in_pool(f"pool{name.split(', ')[1].split()[0]}") if cluster else contextlib.nullcontext():
                rates[name].append(rate(ray_batches(task, args.batch), args.batches, args.batch))
    report(args, rates)
    s3.stop()
    ray.shutdown()
    if cluster is not None:
        cluster.shutdown()


def report(args: argparse.Namespace, rates: dict[str, list[float]]) -> None:
    where = f"simulated cluster, {args.node_cpus} CPU per node" if args.nodes else f"{args.cpus} CPUs"
    print(f"{args.size} px JPEG, {args.images} images, batch {args.batch}, {where}, task {args.task}")
    first = statistics.median(next(iter(rates.values())))
    for name, values in rates.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{r:.0f}" for r in values)
        print(f"  {name:22s} {median:7.1f} img/s (rounds: {rounds})  ratio to the first {median / first:.2f}")


if __name__ == "__main__":
    main()
