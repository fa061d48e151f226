"""``xke world build|path|cases|distractors|retriever``: the toy world, its tiny model and its retriever."""

from __future__ import annotations

import json
from pathlib import Path


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

    p = _file_writer(groups, "cases", _cases,
                     "write counterfactual edit cases of a built world (e.g. every held-out fact)",
                     "Write a world's counterfactual edit cases as xke JSONL, deterministically. The build's "
                     "cases.jsonl has one case per subject; --per-subject 5 gives a case for every fact of "
                     "every person and company (115 held-out cases on the default world).")
    p.add_argument("--split", default="heldout", choices=["train", "heldout", "all"])
    p.add_argument("--per-subject", type=int, default=5, help="cases per person/company (default 5: all facts)")

    p = _file_writer(groups, "distractors", _distractors,
                     "write edit-memory rows about invented people (fills a memory to N edits)",
                     "Write N edit descriptors about invented people (never a world name) as edit-memory "
                     "JSONL, for `xke memory import`: a large memory in which retrieval must find the "
                     "edits a test asks about.")
    p.add_argument("--n", type=int, required=True, help="number of edits")
    p.add_argument("--lang", default="en", help="language of the descriptors (default en)")

    p = groups["world"].add_parser(
        "retriever", help="train the toy world's small cross-lingual dense retriever",
        description="Train a small dense retriever (sentence-transformers) on the world's parallel sentences; "
                    "saved to <world>/retriever with report.json (recall@1, threshold).")
    p.add_argument("--world", default=None, help="world directory (default: the default world, built if missing)")
    p.add_argument("--out", default=None, help="output directory (default: <world>/retriever)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--arch", choices=["static", "bert"], default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--langs", default=None, help="languages (default: the world's)")
    p.set_defaults(func=_world_retriever)


def _file_writer(groups, name: str, func, help: str, description: str):
    """A ``xke world NAME`` subcommand reading a built world and writing one JSONL file (``--out``)."""
    p = groups["world"].add_parser(name, help=help, description=description)
    p.add_argument("--world", default=None, help="built world directory (default: the preset's cached build)")
    p.add_argument("--preset", default="default", help="world preset when --world is not given")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output JSONL")
    p.set_defaults(func=func)
    return p


def _load(args):
    from ..fsutil import check_out_file
    from .build import build_world
    from .world import load_world

    check_out_file(args.out)  # before building or reading the world

    d = args.world or build_world(preset=args.preset, seed=args.seed, verbose=False)
    return load_world(d)


def _cases(args) -> int:
    from ..data.loaders import write_jsonl

    cases = _load(args).counterfactual_cases(args.split, per_subject=args.per_subject)
    write_jsonl(args.out, cases)
    print(f"wrote {len(cases)} {args.split} case(s) to {args.out}")
    return 0


def _distractors(args) -> int:
    rows = _load(args).distractor_edits(args.n, args.lang)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} distractor edit(s) to {out}")
    return 0


def _build(args) -> int:
    import os

    from .build import build_world

    threads = args.threads if getattr(args, "threads", None) else int(os.environ.get("XKE_THREADS", "0") or 0) or None
    if args.out is not None:  # a file or unwritable --out fails now, not after the build
        from ..fsutil import prepare_out_dir
        prepare_out_dir(Path(args.out).expanduser().parent, what="--out folder")
        if Path(args.out).expanduser().exists() and not Path(args.out).expanduser().is_dir():
            from ..errors import XkeError
            raise XkeError(f"--out {args.out} is a file, not a folder; give a folder path")
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


def _world_retriever(args) -> int:
    import os
    import time

    from .build import build_world
    from .retriever import train_world_retriever

    world = Path(args.world) if args.world else build_world(preset="default")
    overrides = {k: v for k, v in {"epochs": args.epochs, "dim": args.dim, "arch": args.arch,
                                   "seed": args.seed}.items() if v is not None}
    if os.environ.get("XKE_THREADS"):
        overrides["threads"] = int(os.environ["XKE_THREADS"])
    langs = args.langs.split(",") if args.langs else None
    t0 = time.time()
    out = train_world_retriever(world, args.out, overrides, langs=langs)
    rep = json.loads((out / "report.json").read_text())
    print(f"retriever saved to {out} ({time.time() - t0:.0f} s, {rep['cpu_seconds']} CPU-s)")
    for pair, r in rep["heldout"]["recall"].items():
        print(f"  {pair}: recall@1 reliability {100 * r.get('reliability_recall@1', 0):.1f}%  "
              f"generality {100 * r.get('generality_recall@1', 0):.1f}%  (memory {r['n_memory']})")
    thr = rep["threshold"]
    at = rep["heldout"].get(f"at_{thr}", {})
    print(f"  threshold {thr} (chosen on the train split): held-out false-hit rate "
          f"{100 * at.get('false_hit_rate', 0):.1f}% on unrelated queries, "
          f"true-hit rate {100 * at.get('true_hit_rate', 0):.1f}%")
    for pair, x in rep["heldout"].get("with_999_distractors", {}).items():
        print(f"  {pair}: held-out locality questions hitting an edit with 999 invented-person edits in memory: "
              f"{100 * x:.1f}%")
    return 0
