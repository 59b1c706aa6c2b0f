"""``autoformer import cream``: a reference AutoFormer supernet checkpoint as a supernet directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.core.space import builtin_space_names, load_space
from pipeline.shared.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import supernets trained elsewhere")
    kinds = p.add_subparsers(dest="import_kind", required=True, metavar="KIND")
    c = kinds.add_parser(
        "cream",
        help="a supernet-T/S/B checkpoint of the AutoFormer reference code (microsoft/Cream)",
        description="Convert a reference AutoFormer supernet checkpoint (the paper's released supernet-T/S/B, "
        "ImageNet-trained) into a supernet directory that search, export and evaluate accept. Every key and shape is "
        "checked before anything is written; the checkpoint is loaded with weights_only=True.",
    )
    c.add_argument("checkpoint", metavar="CHECKPOINT.pth")
    c.add_argument(
        "--space", required=True, metavar="NAME|PATH", help=f"the space ({', '.join(builtin_space_names())})"
    )
    c.add_argument("--out", required=True, help="supernet directory to create")
    c.add_argument("--force", action="store_true", help="replace an existing directory")
    c.set_defaults(func=cmd_import_cream)


def cmd_import_cream(args: argparse.Namespace) -> int:
    from pipeline.model.cream import import_cream  # CLI start-up: torch loads only when needed

    if Path(args.out).exists() and not args.force:
        raise UserError(f"--out {args.out!r} already exists; choose another path (or --force to replace it)")
    space = load_space(args.space)
    path = import_cream(args.checkpoint, space, args.out, overwrite=args.force)
    print(
        f"imported {args.checkpoint} as a {space.name} supernet (mean pooling, LayerNorm eps 1e-5, prefix Q-K-V bias): {path}"
    )
    return 0
