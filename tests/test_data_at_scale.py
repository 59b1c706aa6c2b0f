"""Data in object storage and packed shards: remote listing, packs, Ray Data ingest and the bad inputs.

The tree is digits-sized (8x8 grayscale PNGs, 4 classes) so that the Ray Data paths run in seconds; the S3
server is moto's (tests/cluster_fixtures.py), reached as a user's driver reaches it, through ``AWS_*``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from pipeline.core.task import load_task
from pipeline.data.packed import MANIFEST, PackedSource
from pipeline.data.sources import open_sources, uses_ray_data
from pipeline.data.splits import plan_from_settings, splits_summary
from pipeline.shared.errors import UserError

CLASSES, PER_CLASS, VAL_PER_CLASS = 4, 40, 8


def make_tree(root: Path) -> Path:
    """train/<class>/*.png and val/<class>/*.png, digits images, with a nested directory in one class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    for split, count, offset in (("train", PER_CLASS, 0), ("val", VAL_PER_CLASS, PER_CLASS)):
        for c in range(CLASSES):
            members = np.flatnonzero(digits.target == c)[offset : offset + count]
            for n, i in enumerate(members):
                folder = root / split / f"digit{c}" / ("nested" if c == 1 and n % 3 == 0 else "")
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i]).save(folder / f"img{n:03d}.png")
    return root


DIGITS_TREE_SETTINGS = (
    "data.dataset=imagefolder",
    "data.num_classes=null",
    "splits.search_per_class=5",
    "data.ingest_cpus=0.25",
)


def task_for(root: str, *extra: str):
    """The digits recipe on an ImageFolder tree of 8x8 grayscale images."""
    return load_task("digits", [*DIGITS_TREE_SETTINGS, f"data.root={root}", *extra])


def upload(s3_server, local: Path, prefix: str) -> str:
    fs = s3_server.filesystem()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            with fs.open_output_stream(f"autoformer-test/{prefix}/{path.relative_to(local).as_posix()}") as out:
                out.write(path.read_bytes())
    return f"s3://autoformer-test/{prefix}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "digits-tree")


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_a_remote_tree_lists_as_the_same_tree_on_disk(tree: Path, s3_env) -> None:
    uri = upload(s3_env, tree, "trees/same")
    local_pool, local_test = open_sources(task_for(str(tree)).data)
    remote_pool, remote_test = open_sources(task_for(uri).data)
    assert remote_pool.classes == local_pool.classes == [f"digit{c}" for c in range(CLASSES)]
    assert remote_pool.labels.tolist() == local_pool.labels.tolist()
    assert [s.split("/digits-tree/")[-1] for s in local_pool.samples] == [
        s.split("/trees/same/")[-1] for s in remote_pool.samples
    ]
    assert remote_pool.fingerprint == local_pool.fingerprint
    splits = task_for(uri).splits
    local_plan = plan_from_settings(local_pool.labels, splits, has_own_test=True)
    remote_plan = plan_from_settings(remote_pool.labels, splits, has_own_test=True)
    assert splits_summary(remote_pool, remote_test, remote_plan) == splits_summary(local_pool, local_test, local_plan)
    assert len(remote_test) == CLASSES * VAL_PER_CLASS
    assert uses_ray_data(task_for(uri).data) and not uses_ray_data(task_for(str(tree)).data)
    image = remote_pool.load(0)
    assert image.size == (8, 8) and np.asarray(image).tolist() == np.asarray(local_pool.load(0)).tolist()


def test_remote_roots_that_cannot_be_used_are_one_line(tree: Path, s3_env, monkeypatch) -> None:
    with pytest.raises(UserError, match="does not exist"):
        open_sources(task_for("s3://autoformer-test/no-such-prefix").data)
    with pytest.raises(UserError, match=r"s3://no-such-bucket-here.*(cannot|does not)"):
        open_sources(task_for("s3://no-such-bucket-here/tree").data)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(UserError, match="cannot be reached"):
        open_sources(task_for("s3://autoformer-test/trees").data)
    assert time.perf_counter() - start < 20


def test_a_root_with_both_a_tree_and_a_pack_is_refused(tree: Path, tmp_path: Path) -> None:
    import shutil

    both = tmp_path / "both"
    shutil.copytree(tree, both)
    (both / MANIFEST).write_text("{}")
    with pytest.raises(UserError, match="holds both a pack"):
        open_sources(task_for(str(both)).data)


@pytest.mark.slow
def test_pack_keeps_the_listing_resumes_and_refuses_what_it_cannot_use(tree: Path, tmp_path: Path, local_ray) -> None:
    from pipeline.data.pack_job import pack

    dst = tmp_path / "pack"
    manifest = pack(str(tree), str(dst), shard_bytes=4000)
    shards = manifest["splits"]["train"]["shards"]
    assert len(shards) > 3 and sum(s["rows"] for s in shards) == CLASSES * PER_CLASS
    assert manifest["splits"]["val"]["per_class"] == [VAL_PER_CLASS] * CLASSES
    tree_pool, tree_test = open_sources(task_for(str(tree)).data)
    pool, test = open_sources(task_for(str(dst)).data)
    assert isinstance(pool, PackedSource) and pool.labels.tolist() == tree_pool.labels.tolist()
    assert pool.fingerprint == tree_pool.fingerprint and test.fingerprint == tree_test.fingerprint
    assert np.asarray(pool.load(7)).tolist() == np.asarray(tree_pool.load(7)).tolist()
    assert uses_ray_data(task_for(str(dst)).data)

    # stopped part-way: only the missing shard is written again, the rest kept as they are
    (dst / MANIFEST).unlink()
    (dst / shards[1]["file"]).unlink()
    kept = (dst / shards[0]["file"]).stat().st_mtime_ns
    assert pack(str(tree), str(dst), shard_bytes=4000) == manifest
    assert (dst / shards[0]["file"]).stat().st_mtime_ns == kept and (dst / shards[1]["file"]).exists()
    (dst / MANIFEST).unlink()
    with pytest.raises(UserError, match="another plan"):
        pack(str(tree), str(dst), shard_bytes=9000)

    broken = tmp_path / "broken"
    make_tree(broken)
    (broken / "train" / "digit2" / "img005.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"img005\.png"):
        pack(str(broken), str(tmp_path / "broken-pack"), shard_bytes=4000)
    assert not (tmp_path / "broken-pack" / MANIFEST).exists()

    manifest_file = dst / MANIFEST
    pack(str(tree), str(dst), shard_bytes=4000)
    manifest_file.write_text(json.dumps({**json.loads(manifest_file.read_text()), "version": 99}))
    with pytest.raises(UserError, match="pack format version 99"):
        open_sources(task_for(str(dst)).data)


def _epoch(stream, epoch: int, skip: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    stream.set_epoch(epoch)
    stream.skip = skip
    batches = list(stream)
    assert len(batches) == len(stream)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


@pytest.mark.slow
def test_ray_data_epochs_are_seeded_resumable_and_in_the_loaders_order(tree: Path, tmp_path: Path, local_ray) -> None:
    from torch.utils.data import DistributedSampler

    from pipeline.data.pack_job import pack
    from pipeline.data.ray_ingest import DecodeSpec, EpochStream

    task = task_for(str(tree), "data.ingest=ray_data")
    pool, own_test = open_sources(task.data)
    plan = plan_from_settings(pool.labels, task.splits, has_own_test=True)
    spec = DecodeSpec.make(task.data, task.train.augment)
    streams = [EpochStream(pool, plan.train, spec, 3, 2, rank, 16, 0.25) for rank in (0, 1)]
    images, labels = _epoch(streams[0], 1)
    again, _ = _epoch(streams[0], 1)
    assert torch.equal(images, again)  # the same images, the same augmentation
    other, _ = _epoch(streams[0], 2)
    assert not torch.equal(images, other)
    sampler = DistributedSampler(range(len(plan.train)), num_replicas=2, rank=0, seed=3, drop_last=True)
    sampler.set_epoch(1)
    expected = pool.labels[plan.train[list(sampler)]][: len(labels)]
    assert labels.tolist() == expected.tolist()  # the DataLoader path's order
    tail, tail_labels = _epoch(streams[0], 1, skip=32)
    assert torch.equal(tail, images[32:]) and torch.equal(tail_labels, labels[32:])  # a resumed epoch

    pack(str(tree), str(tmp_path / "pack"), shard_bytes=3000)
    packed = open_sources(task_for(str(tmp_path / "pack")).data)[0]
    seen = []
    for rank in (0, 1):
        stream = EpochStream(packed, plan.train, spec, 3, 2, rank, 16, 0.25)
        x, y = _epoch(stream, 1)
        assert len(y) == (len(plan.train) // 2) // 16 * 16 and torch.equal(x, _epoch(stream, 1)[0])
        seen.append(y)
    assert sorted(torch.cat(seen).tolist()) != []  # both ranks got their share


@pytest.mark.slow
def test_evaluation_splits_from_ray_data_match_the_loaders_bit_for_bit(tree: Path, local_ray) -> None:
    from pipeline.data.arrays import decode_locally
    from pipeline.data.ray_ingest import in_object_store, load_split

    loader = decode_locally(task_for(str(tree)), "search")
    task = task_for(str(tree), "data.ingest=ray_data")
    deferred = load_split(task, "search", deferred=True)
    assert deferred.images is None and deferred.count == len(loader.labels)
    stored = in_object_store(deferred)
    import ray

    images, labels = ray.get(list(stored.refs))
    assert np.array_equal(images, loader.images) and np.array_equal(labels, loader.labels)
    test = load_split(task, "test")
    assert np.array_equal(test.images, decode_locally(task_for(str(tree)), "test").images)
    assert stored.summary == loader.summary


@pytest.mark.slow
def test_pack_train_and_search_from_object_storage(tree: Path, tmp_path: Path, s3_server) -> None:
    """The user's path: a tree in S3 packed by `autoformer data pack`, a supernet trained from the pack through
    Ray Data and searched, with nothing of the dataset on local disk."""
    env = {**os.environ, **s3_server.env}
    src = upload(s3_server, tree, "trees/e2e")
    packed = run_cli("data", "pack", src, "s3://autoformer-test/packs/e2e", "--shard-size", "4KB", env=env)
    assert packed.returncode == 0, packed.stderr[-3000:]
    assert "train: 160 images" in packed.stdout and "[pack] 6/6 shards written, 192 images" in packed.stdout
    sets = [
        *DIGITS_TREE_SETTINGS,
        "data.root=s3://autoformer-test/packs/e2e",
        *("train.epochs=1", "train.warmup_epochs=0", "train.eval_subnets=1"),
    ]
    options = [a for s in sets for a in ("--set", s)]
    trained = run_cli("train", "digits", *options, "--storage", str(tmp_path / "runs"), "--name", "t", env=env)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "epoch 1/1" in trained.stdout
    record = json.loads((tmp_path / "runs" / "t" / "supernet" / "config.json").read_text())
    tree_pool, tree_test = open_sources(task_for(str(tree)).data)
    plan = plan_from_settings(tree_pool.labels, task_for(str(tree)).splits, has_own_test=True)
    assert record["splits"] == splits_summary(tree_pool, tree_test, plan)  # the tree's own record
    searched = run_cli(
        "search", "digits", *options, "--supernet", str(tmp_path / "runs" / "t" / "supernet"), "--storage",
        str(tmp_path / "runs"), "--name", "s", "--population", "4", "--generations", "1", env=env,
    )  # fmt: skip
    assert searched.returncode == 0, searched.stdout[-3000:] + searched.stderr[-3000:]
    assert "20 search images" in searched.stdout
    for out in (packed, trained, searched):  # the console: our lines, not Ray Data's own per dataset
        assert "streaming_executor" not in out.stdout + out.stderr and "Warning" not in out.stdout + out.stderr
