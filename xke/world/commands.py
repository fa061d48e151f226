"""``xke world build``: generate the toy world and train its tiny model (cached)."""

from __future__ import annotations

import json


def register(sub, groups) -> None:
    p = groups["world"].add_parser(
        "build", help="generate the toy world and train its tiny model (cached by arguments)",
        description="Generate the toy multilingual world (world.json, cases.jsonl, corpus.txt), train its tiny "
                    "Llama on CPU (model/) and measure recall and reading (report.json). Building again with the "
                    "same arguments reuses the result.")
    p.add_argument("--out", default=None, help="output directory (default: the xke cache, keyed by the arguments)")
    p.add_argument("--preset", default="default", help="world preset: tiny or default (xke/configs/world/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator and the training (default 0)")
    p.add_argument("--langs", default=None, help="languages, comma-separated (default the preset's: en,zh; "
                                                 "templates exist for en, zh, de, fr)")
    p.add_argument("--force", action="store_true", help="rebuild even if a build with these arguments exists")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_build)

    p = groups["world"].add_parser(
        "path", help="print the directory of a built world (building it first if needed)",
        description="Print the directory of the world for these arguments, building it (cached) when missing; "
                    "handy in scripts: --data \"$(xke world path)/cases.jsonl\".")
    p.add_argument("--preset", default="default", help="world preset: tiny or default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--langs", default=None)
    p.set_defaults(func=_path)


def _build(args) -> int:
    import os

    from .build import build_world

    threads = args.threads if getattr(args, "threads", None) else int(os.environ.get("XKE_THREADS", "0") or 0) or None
    d = build_world(preset=args.preset, seed=args.seed, langs=args.langs, out=args.out, threads=threads,
                    force=args.force, verbose=not args.quiet)
    report = json.loads((d / "report.json").read_text())
    print(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"world: {d}")
    return 0


def _path(args) -> int:
    import sys

    from .build import build_world

    d = build_world(preset=args.preset, seed=args.seed, langs=args.langs, verbose=False)
    print(d)
    sys.stdout.flush()
    return 0
