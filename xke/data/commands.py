"""``xke data check``: load a benchmark file, validate it, print a summary."""

from __future__ import annotations

import json


def register(sub, groups) -> None:
    p = groups["data"].add_parser(
        "check", help="validate a benchmark or edit file and count its cases",
        description="Load BENCH from PATH with xke's loader, validate every record and print a summary "
                    "(cases per language, skipped records, warnings). A broken file exits with status 2 "
                    "and a message naming the file, record and field.")
    p.add_argument("bench", metavar="BENCH", help="bizsre, mzsre, mzsre-train, clm or jsonl")
    p.add_argument("path", metavar="PATH", help="benchmark file or folder")
    p.add_argument("--langs", default=None, help="only these languages, e.g. en,zh,de (ISO cs/nl accepted)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.set_defaults(func=_check)


def _check(args) -> int:
    from .loaders import check_bench

    s = check_bench(args.bench, args.path, langs=args.langs)
    if args.json:
        print(json.dumps(s, ensure_ascii=False))
        return 0
    langs = ", ".join(f"{k} {v}" for k, v in s["languages"].items())
    unit = "pairs" if s["bench"] == "mzsre-train" else "cases"
    print(f"{s['bench']}: {s['path']}")
    print(f"  {s['cases']} {unit}; languages: {langs or 'none'}; skipped: {s['skipped']}")
    for w in s["warnings"]:
        print(f"  warning: {w}")
    return 0
