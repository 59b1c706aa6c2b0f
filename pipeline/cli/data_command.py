"""``autoformer data pack``: an ImageFolder tree into Parquet shards that training and search read."""

from __future__ import annotations

import argparse

from pipeline.cli.options import positive_float


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare datasets (pack an ImageFolder tree into Parquet shards)")
    kinds = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = kinds.add_parser(
        "pack",
        help="pack an ImageFolder tree (local or s3://, gs://) into Parquet shards plus a manifest",
        description="Pack SRC (train/<class>/<image>, and val/ or test/ when the tree has its own test split) into "
        "Parquet shards of encoded images under DST, plus manifest.json. Runs as a Ray Data job on the cluster's CPUs "
        "(RAY_ADDRESS) or on this machine; every image is decoded once on the way, so a file that is not an image "
        "stops the job naming it. Stopped part-way, the same command writes only the missing shards. A task reads the "
        "pack when its data.root points at DST (data.format: auto detects it).",
    )
    c.add_argument("src", metavar="SRC", help="the tree's root (a local path or a URI)")
    c.add_argument("dst", metavar="DST", help="where the pack goes (a local path or a URI)")
    c.add_argument("--shard-size", default="256MB", help="target bytes per shard (default 256MB; KB, MB, GB, KiB...)")
    c.add_argument("--seed", type=int, default=0, help="the seed of the row order (every shard mixes the classes)")
    c.add_argument("--cpus", type=positive_float, default=1.0, help="CPUs per packing task (default 1)")
    c.set_defaults(func=cmd_pack)


def cmd_pack(args: argparse.Namespace) -> int:
    from pipeline.data.pack_job import pack, parse_size  # CLI start-up: Ray loads only when needed
    from pipeline.shared.cluster import connect
    from pipeline.shared.storage import absolute, check_reachable, is_uri

    shard_bytes = parse_size(args.shard_size)
    src, dst = absolute(args.src), absolute(args.dst)
    if is_uri(src):
        check_reachable(src, "SRC")
    if is_uri(dst):
        check_reachable(dst, "DST")
    connect(False, "pack")
    manifest = pack(src, dst, shard_bytes, seed=args.seed, cpus=args.cpus)
    for name, split in manifest["splits"].items():
        print(
            f"{name}: {split['count']:,} images in {len(split['shards'])} shard(s), {len(manifest['classes'])} classes"
        )
    print(f"packed {src} -> {dst} (set data.root to {dst})")
    return 0
