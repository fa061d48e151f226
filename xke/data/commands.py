"""``xke data check``: load a benchmark file, validate it, print a summary.
``xke data convert``: load a benchmark with its loader and write xke's JSONL (e.g. an IKE/LTE pool)."""

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

    c = groups["data"].add_parser(
        "convert", help="write any benchmark as xke JSONL (e.g. the demonstration pool of IKE)",
        description="Load BENCH from PATH with xke's loader (the same validation as `xke data check`) and write "
                    "one EditCase per line to --out: the format `--bench jsonl` and IKE's `pool:` read. "
                    "mzsre-train pairs have no subject: the question stands in for it (IKE reads only the "
                    "question and its answer).")
    c.add_argument("bench", metavar="BENCH", help="bizsre, mzsre, mzsre-train, clm or jsonl")
    c.add_argument("path", metavar="PATH", help="benchmark file or folder")
    c.add_argument("--out", required=True, help="output JSONL file (e.g. pool.jsonl)")
    c.add_argument("--langs", default=None, help="only these languages, e.g. en,zh")
    c.add_argument("--limit", type=int, default=None, help="at most this many cases")
    c.set_defaults(func=_convert)


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


def _convert(args) -> int:
    from .loaders import convert_bench

    n, out = convert_bench(args.bench, args.path, args.out, langs=args.langs, limit=args.limit)
    print(f"wrote {n} cases to {out}")
    return 0
