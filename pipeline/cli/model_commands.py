"""``autoformer export`` and ``autoformer evaluate``: one architecture as a standalone model, and its scores.

The architecture comes from a JSON file (``--arch``) or from a search's ``candidates.parquet`` (``--candidates``
with ``--row`` or ``--key``). The task (data, normalisation, splits) defaults to the one the supernet or the
model recorded, so a model can be re-scored without restating it; ``--set data.root=...`` points at the data
on another machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pipeline.cli.options import add_selection, recorded_task, select_architecture
from pipeline.core.arch import validate_in_space
from pipeline.shared.errors import UserError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export", help="write one architecture with its inherited weights as a standalone model directory"
    )
    e.add_argument("--supernet", default=None, help="supernet directory (path or URI)")
    e.add_argument("--model", default=None, metavar="DIR", help="add ONNX to this existing model directory instead")
    e.add_argument("--out", default=None, help="model directory to create (with --supernet)")
    e.add_argument("--force", action="store_true", help="replace an existing model directory")
    e.add_argument(
        "--allow-off-space", action="store_true", help="an architecture outside the space's choices is intended"
    )
    e.add_argument(
        "--format",
        choices=("safetensors", "onnx"),
        default="safetensors",
        help="onnx: also write model.onnx (dynamic batch) beside the weights",
    )
    add_selection(e)
    e.set_defaults(func=cmd_export)

    v = sub.add_parser(
        "evaluate", help="score a model directory, or an architecture with inherited weights, on a split"
    )
    v.add_argument(
        "model", nargs="?", default=None, metavar="MODEL_DIR", help="a model directory (from export or search)"
    )
    v.add_argument(
        "--supernet", default=None, help="score an architecture of this supernet instead of a model directory"
    )
    v.add_argument("--split", choices=("test", "search"), default="test")
    v.add_argument("--gpu", action="store_true", help="evaluate on the GPU")
    v.add_argument("--json", action="store_true", help="print the scores as JSON")
    v.add_argument(
        "--allow-off-space", action="store_true", help="an architecture outside the space's choices is intended"
    )
    add_selection(v)
    v.set_defaults(func=cmd_evaluate)


def _supernet(args: argparse.Namespace):
    from pipeline.model.supernet_dir import load_supernet  # CLI start-up: torch loads only when needed

    arch, row = select_architecture(args)
    supernet, config = load_supernet(args.supernet)
    supernet.check_architecture(arch)  # beyond what the supernet holds: an error
    try:
        validate_in_space(arch, supernet.space)
    except UserError as exc:  # inside the weights but not a trained choice
        if not args.allow_off_space:
            print(
                f"autoformer: warning: {exc}: the supernet never trained that choice, so its inherited weights are "
                f"untested (--allow-off-space: this is intended, no warning)",
                file=sys.stderr,
            )
    return supernet, config, arch, row


def cmd_export(args: argparse.Namespace) -> int:
    # CLI start-up: torch loads only when needed
    from pipeline.api import export_model
    from pipeline.model.subnet_dir import add_onnx

    if (args.supernet is None) == (args.model is None):
        raise UserError("give --supernet PATH (with an architecture and --out) or --model DIR (with --format onnx)")
    if args.model is not None:
        if args.format != "onnx":
            raise UserError("--model DIR adds an ONNX graph to an existing model directory: pass --format onnx")
        print(f"wrote {add_onnx(args.model)}")
        return 0
    if args.out is None:
        raise UserError("--supernet needs --out DIR (the model directory to create)")
    if Path(args.out).exists() and not args.force:  # before the supernet loads; in flag words (the library's differ)
        raise UserError(f"--out {args.out!r} already exists; choose another path (or --force to replace it)")
    supernet, config, arch, row = _supernet(args)
    task = recorded_task(args, config.get("task"), f"supernet {args.supernet!r}")
    path = export_model(
        supernet, arch, args.out, task, args.supernet, row, overwrite=args.force, onnx=args.format == "onnx"
    )
    print(f"exported {arch.key} to {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    # CLI start-up: torch loads only for the commands that use it
    from pipeline.core.complexity import count_macs, count_params
    from pipeline.data.arrays import score
    from pipeline.data.ray_ingest import load_split
    from pipeline.shared.metrics import pick_device

    if (args.model is None) == (args.supernet is None):
        raise UserError("give a MODEL_DIR or --supernet PATH with an architecture, not both")
    if args.model is not None:
        from pipeline.model.subnet_dir import load_model

        model, config = load_model(args.model)
        task = recorded_task(args, (config.get("metadata") or {}).get("task"), f"model directory {args.model!r}")
        normalization = config["normalization"]
    else:
        supernet, config, arch, _ = _supernet(args)
        model = supernet.extract(arch)
        task = recorded_task(args, config.get("task"), f"supernet {args.supernet!r}")
        normalization = {"mean": task.data["mean"], "std": task.data["std"]}
    if task.data["image_size"] != model.fixed["image_size"] or task.data["in_chans"] != model.fixed["in_chans"]:
        raise UserError(
            f"task {task.name!r} has {task.data['image_size']} px x {task.data['in_chans']} channels; the model expects "
            f"{model.fixed['image_size']} px x {model.fixed['in_chans']}"
        )
    split = load_split(task, args.split, batch_size=task.search["batch_size"])
    device = pick_device(args.gpu)
    if args.gpu and device.type != "cuda":
        raise UserError("--gpu was given but this machine has no GPU; drop --gpu to evaluate on the CPU")
    scores = score(model, split, normalization, device, task.search["batch_size"])
    result = {
        "architecture": model.arch.to_dict(),
        "key": model.arch.key,
        "split": args.split,
        "images": int(len(split.labels)),
        "params": count_params(model.arch, model.fixed),
        "macs": count_macs(model.arch, model.fixed),
        **scores,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['key']}: {args.split} top-1 {scores['top1']:.4f}  top-5 {scores['top5']:.4f}  loss {scores['loss']:.4f}  "
            f"({result['images']} images; {result['params']:,} params, {result['macs']:,} MACs)"
        )
    return 0 if not math.isnan(scores["loss"]) else 1
