"""``autoformer latency build``: a latency model of a supernet's space on a target device."""

from __future__ import annotations

import argparse
import json

from pipeline.cli.options import int_at_least, positive_int
from pipeline.core.latency_model import RUNTIMES
from pipeline.shared.storage import check_output_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="latency models for the hardware you deploy to")
    verbs = p.add_subparsers(dest="latency_command", required=True, metavar="COMMAND")
    b = verbs.add_parser(
        "build",
        help="measure a block-latency table on a device, validated on held-out architectures",
        description="Measure every block of the space (embedding dim x heads x MLP ratio) and the fixed parts on the "
        "target device, validate the table's predictions against end-to-end timings of held-out architectures "
        "(MAPE, Kendall tau), fit a correction where the table misses by more than 10 %, and write the model.",
    )
    b.add_argument("--supernet", required=True, help="supernet directory (its space is what is measured)")
    b.add_argument("--device", default="local", help="local, or a Ray custom resource that the target nodes offer")
    b.add_argument("--runtime", choices=RUNTIMES, default="torch")
    b.add_argument("--batch", type=positive_int, default=1)
    b.add_argument("--threads", type=positive_int, default=1)
    b.add_argument(
        "--validate", type=int_at_least(2), default=50, help="held-out architectures measured end to end (default 50)"
    )
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True, help="latency model file to write (JSON)")
    b.add_argument("--json", action="store_true", help="print one JSON line (mape, kendall_tau, kind, ...)")
    b.set_defaults(func=cmd_latency_build)


def cmd_latency_build(args: argparse.Namespace) -> int:
    # CLI start-up: torch and Ray load only for the commands that use them
    from pipeline.latency.build import BuildSettings, build_latency_model

    check_output_file(args.out, "--out")  # before the build: a file it could not write would waste all of it
    settings = BuildSettings(args.device, args.runtime, args.batch, args.threads, args.validate, args.seed)
    model = build_latency_model(args.supernet, settings)
    model.save(args.out)
    v = model.validation
    if args.json:
        print(
            json.dumps({**v, "file": args.out, "device": model.device, "runtime": model.runtime, "batch": model.batch})
        )
    else:
        print(
            f"[latency] {model.kind}: MAPE {100 * v['mape']:.1f} %, Kendall tau {v['kendall_tau']:.3f} on {v['count']} held-out "
            f"architectures (table alone: {100 * v['table_mape']:.1f} %, {v['table_kendall_tau']:.3f}; measuring twice: "
            f"{100 * v['noise_floor_mape']:.1f} %, tau {v['noise_floor_kendall_tau']:.3f}); built in "
            f"{v['build_s']:.1f} s"
        )
        print(f"wrote {args.out}")
    return 0
