"""``autoformer space ...`` and ``autoformer arch ...``: look at spaces and architectures without torch."""

from __future__ import annotations

import argparse
import json
import random
import sys

from pipeline.cli.format import si
from pipeline.core.arch import Architecture, validate_in_space
from pipeline.core.complexity import count_macs, count_params, space_ranges, stats
from pipeline.core.published import load_published, published_names
from pipeline.core.sampling import largest_architecture, sample_architecture, smallest_architecture
from pipeline.core.space import SearchSpace, builtin_space_names, load_space
from pipeline.shared.errors import UserError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    space = sub.add_parser("space", help="inspect search spaces")
    space_sub = space.add_subparsers(dest="space_command", required=True, metavar="COMMAND")
    show = space_sub.add_parser("show", help="choices, number of architectures, parameter and MAC ranges")
    show.add_argument(
        "space", metavar="NAME|PATH", help=f"built-in space ({', '.join(builtin_space_names())}) or a .yaml file"
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(func=cmd_space_show)
    space_sub.add_parser("list", help="the built-in spaces").set_defaults(func=cmd_space_list)

    arch = sub.add_parser("arch", help="count and draw architectures")
    arch_sub = arch.add_subparsers(dest="arch_command", required=True, metavar="COMMAND")
    st = arch_sub.add_parser("stats", help="exact parameters and MACs of an architecture file")
    st.add_argument("--space", required=True, metavar="NAME|PATH", help="space whose fixed parts apply")
    st.add_argument("--arch", required=True, metavar="FILE.json", help="architecture JSON file")
    _add_overrides(st)
    st.add_argument("--check", action="store_true", help="also fail unless the architecture belongs to the space")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_arch_stats)
    show_arch = arch_sub.add_parser("show", help="a published architecture (AutoFormer-T/S/B) with its exact counts")
    show_arch.add_argument("name", metavar="NAME|FILE", help=f"{', '.join(published_names())} or a .yaml file")
    show_arch.add_argument("--json", action="store_true", help="print JSON")
    show_arch.set_defaults(func=cmd_arch_show)
    sample = arch_sub.add_parser("sample", help="print architectures of a space as JSON lines")
    sample.add_argument("--space", required=True, metavar="NAME|PATH")
    group = sample.add_mutually_exclusive_group()
    group.add_argument("--smallest", action="store_true", help="the smallest architecture")
    group.add_argument("--largest", action="store_true", help="the largest architecture")
    sample.add_argument("--count", type=int, default=1, help="how many uniform draws (default 1)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.set_defaults(func=cmd_arch_sample)


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=int, help="override the space's image size")
    parser.add_argument("--num-classes", type=int, help="override the space's number of classes")
    parser.add_argument("--in-chans", type=int, help="override the space's input channels")


def _space_with_overrides(args: argparse.Namespace) -> SearchSpace:
    space = load_space(args.space)
    return space.with_overrides(image_size=args.image_size, num_classes=args.num_classes, in_chans=args.in_chans)


def describe_space(space: SearchSpace) -> dict:
    ranges = space_ranges(space)
    return {
        "name": space.name,
        "description": space.description,
        "choices": {
            "embed_dim": list(space.embed_dim),
            "depth": list(space.depth),
            "num_heads": list(space.num_heads),
            "qkv_dim": [h * space.head_dim for h in space.num_heads],
            "mlp_ratio": list(space.mlp_ratio),
        },
        "fixed": space.fixed_parts(),
        "num_architectures": space.num_architectures(),
        "params": {"min": ranges["params"][0], "max": ranges["params"][1]},
        "macs": {"min": ranges["macs"][0], "max": ranges["macs"][1]},
        "smallest": smallest_architecture(space).to_dict(),
        "largest": largest_architecture(space).to_dict(),
    }


def cmd_space_list(args: argparse.Namespace) -> int:
    for name in builtin_space_names():
        space = load_space(name)
        print(f"{name:18s} {space.description}")
    return 0


def cmd_space_show(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    info = describe_space(space)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    f = space.fixed_parts()
    ch = info["choices"]
    rel = f"on (max distance {f['max_relative_position']})" if f["relative_position"] else "off"
    print(f"search space {space.name}" + (f": {space.description}" if space.description else ""))
    print(f"  embed_dim   {', '.join(map(str, ch['embed_dim']))}   (one for all layers)")
    print(f"  depth       {', '.join(map(str, ch['depth']))}")
    print(
        f"  num_heads   {', '.join(map(str, ch['num_heads']))}   (per layer; Q-K-V dim = heads x {f['head_dim']}: "
        f"{', '.join(map(str, ch['qkv_dim']))})"
    )
    print(f"  mlp_ratio   {', '.join(f'{r:g}' for r in ch['mlp_ratio'])}   (per layer)")
    print(
        f"  fixed       image {f['image_size']}, patch {f['patch_size']}, {f['in_chans']} channel(s), "
        f"{f['num_classes']} classes, relative position {rel}, qkv bias {'on' if f['qkv_bias'] else 'off'}"
    )
    print(f"  architectures  {info['num_architectures']:,} ({info['num_architectures']:.3g})")
    p, m = info["params"], info["macs"]
    print(f"  params         {si(p['min'])} .. {si(p['max'])}   ({p['min']:,} .. {p['max']:,})")
    print(f"  MACs           {si(m['min'])} .. {si(m['max'])}   ({m['min']:,} .. {m['max']:,}) per image")
    return 0


def cmd_arch_stats(args: argparse.Namespace) -> int:
    space = _space_with_overrides(args)
    arch = Architecture.load(args.arch)
    if args.check:
        validate_in_space(arch, space)
    result = stats(arch, space)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{arch.key}")
        print(f"  params  {result['params']:,} ({si(result['params'])})")
        print(f"  MACs    {result['macs']:,} ({si(result['macs'])}) per {space.image_size}x{space.image_size} image")
    return 0


def cmd_arch_show(args: argparse.Namespace) -> int:
    p = load_published(args.name)
    info = {
        "name": p.name,
        "description": p.description,
        "space": p.space.name,
        "architecture": p.architecture.to_dict(),
        "key": p.architecture.key,
        "params": count_params(p.architecture, p.space),
        "published_params": p.params,
        "macs": count_macs(p.architecture, p.space),
        "paper_macs": count_macs(p.architecture, p.space, paper=True),
        "published_top1": p.top1,
    }
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{p.name}: {p.description}")
    print(f"  space         {p.space.name}")
    print(f"  architecture  {p.architecture.to_json()}")
    print(f"  params        {info['params']:,} (published {p.params:,})")
    print(
        f"  MACs          {info['macs']:,} computed, {info['paper_macs']:,} as the paper counts (no relative-position products)"
    )
    print(f"  top-1         {p.top1} (paper, ImageNet)")
    return 0


def cmd_arch_sample(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    if args.count < 1:
        raise UserError(f"--count {args.count}: must be at least 1")
    if args.smallest or args.largest:
        archs = [smallest_architecture(space) if args.smallest else largest_architecture(space)]
    else:
        rng = random.Random(args.seed)
        archs = [sample_architecture(space, rng) for _ in range(args.count)]
    for arch in archs:
        sys.stdout.write(arch.to_json() + "\n")
    return 0
