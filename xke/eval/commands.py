"""``xke eval``, ``xke report``, ``xke demo`` and ``xke experiment``."""

from __future__ import annotations

import argparse
import json
import sys

EVAL_EPILOG = """examples:
  xke eval --model tiny-llama --method none --bench mzsre --data ../shared/data/mzsre/test \\
      --edit-lang en --test-langs en,zh,de --limit 50 --out runs/none-en
  xke eval --model world --method memit --bench jsonl --data WORLD/cases.jsonl --split heldout \\
      --edit-lang mix --test-langs en,zh --protocol batch --batch-size 10 --save-deltas --out runs/memit-mix

Rerunning the same command into the same --out resumes where it stopped.
Writes OUT/spec.json, OUT/cases.jsonl (streamed), OUT/metrics.json, OUT/report.md, OUT/heatmap.png."""


def register(sub, groups) -> None:
    from ..methods.base import METHOD_MODULES

    p = sub.add_parser("eval", help="evaluate an editing method on a benchmark (resumable)",
                       description="Edit a model with a method and evaluate reliability, generality, locality "
                                   "and portability in every test language.",
                       epilog=EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="local Hugging Face model directory, a built-in tiny config (tiny-llama, ...), "
                        "'world' (the default toy-world model) or 'world:DIR'")
    p.add_argument("--method", default="none", help=f"editing method: {', '.join(METHOD_MODULES)} (default: none)")
    p.add_argument("--bench", default="jsonl",
                   help="bizsre, mzsre, clm, knowedit (KnowEdit ZsRE) or jsonl (xke's own format; default)")
    p.add_argument("--data", required=True, help="benchmark file or folder")
    p.add_argument("--edit-lang", default="en", help="language the edits are made in, or 'mix' (zh and en at once)")
    p.add_argument("--test-langs", default="en", help="comma-separated test languages (default: en)")
    p.add_argument("--protocol", choices=["single", "batch", "sequential"], default="single",
                   help="single: edit one case, evaluate, restore; batch: N edits together; "
                        "sequential: edits accumulate, evaluate at the end")
    p.add_argument("--batch-size", type=int, default=None,
                   help="cases per batch (batch protocol) or per sequential step (default 1)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N cases (after --split)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--config", default=None, help="YAML with method options (its 'method:' section or the whole file)")
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--split", choices=["train", "heldout", "all"], default="all",
                   help="select cases by meta.split (toy-world cases.jsonl; default all)")
    p.add_argument("--mode", choices=["gold", "retrieve"], default="gold",
                   help="in-context methods: put the case's own edit in context (gold) or retrieve from memory")
    p.add_argument("--save-deltas", action="store_true",
                   help="write OUT/deltas.safetensors (sum over batches of each edited matrix's change) + deltas.json")
    p.add_argument("--save-edited", default=None, metavar="DIR",
                   help="save the edited model (save_pretrained + tokenizer) at the end of a batch/sequential run")
    p.add_argument("--overwrite", action="store_true",
                   help="let --save-edited replace an existing model folder (refused otherwise)")
    p.add_argument("--eval-after-each", action="store_true",
                   help="sequential: also evaluate each case right after its own edit")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--template", choices=["auto", "chat", "plain"], default="auto",
                   help="prompt format: the tokenizer's chat template, plain 'Q: ... A:', or auto")
    p.add_argument("--thinking", action="store_true",
                   help="chat templates with a reasoning switch (Qwen3): leave thinking mode on "
                        "(default: enable_thinking=False, so answers start right after the prompt)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="greedy generation length limit (default 16)")
    p.add_argument("--profile", default=None, choices=["xke", "xkde-release", "bizsre", "easyedit"],
                   help="whose metric definitions to follow: xke (default), xkde-release (the released X-KDE "
                        "eval.py), bizsre (Bi-ZsRE's script), easyedit; see docs/profiles.md")
    p.add_argument("--system-prompt", default=None, metavar="TEXT",
                   help="system message of chat prompts (default: the profile's, else the chat template's own)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)

    r = sub.add_parser("report", help="merge evaluation runs into one table (and heatmap)",
                       description="Merge the metrics.json of several `xke eval` output directories into one "
                                   "X-KDE-Table-1-style report (tf_acc and F1 tables, CLM-Bench scores, heatmap).")
    r.add_argument("dirs", nargs="+", help="output directories of xke eval")
    r.add_argument("--out", default=None, help="write report.md, runs.json and heatmap.png here")
    r.add_argument("--layout", default="table1",
                   choices=["table1", "table2", "table4", "table5", "table6", "clm1", "clm2"],
                   help="paper layout: table1 (X-KDE Table 1, default), table2 (MzsRE, per metric, en-xx columns "
                        "and en-avg), table4/5/6 (X-KDE ablations), clm1/clm2 (CLM-Bench Tables 1-2)")
    r.add_argument("--metric", default="tf_acc", choices=["tf_acc", "tf_f1", "f1", "tf_em", "em"],
                   help="figure shown by layouts other than table1 (default tf_acc)")
    r.add_argument("--labels", default=None,
                   help="comma-separated row names, one per run directory (ablation variants)")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the paper's story on the toy world in a few minutes (README's first command)",
                       description="On the tiny toy world's held-out edits, edit in en and in zh and test in en and "
                                   "zh: the weight-editing baselines on the world model, X-KDE on the X-KDE-trained "
                                   "model (edit in context), and X-KDE with 1,000 edits in its edit memory. Prints "
                                   "one table (reliability and locality, exact match) and three sentences; writes "
                                   "report.md, heatmap.png and demo.json. Uses the shipped world, retriever and "
                                   "X-KDE model; --rebuild trains them from scratch first (~12 CPU-minutes).")
    d.add_argument("--out", default=None, help="output directory (default: runs/demo)")
    d.add_argument("--n", type=int, default=30, help="number of held-out edit cases (default 30: all of them)")
    d.add_argument("--preset", default="tiny",
                   help="toy-world preset (default tiny, shipped; another preset is built and X-KDE-trained first)")
    d.add_argument("--methods", default=None,
                   help="comma-separated rows (default: none,ft-m,rome,memit,alphaedit,pmet,xkde)")
    d.add_argument("--memory", type=int, default=1000,
                   help="edits in X-KDE's edit memory for its retrieve-mode row (default 1000; 0: no such row)")
    d.add_argument("--rebuild", action="store_true",
                   help="rebuild the world, its retriever and the X-KDE model from scratch (~12 CPU-minutes) and "
                        "say which files are bit-identical to the shipped ones")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.add_argument("--system-prompt", default=None, metavar="TEXT", help="system message of chat prompts")
    d.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "experiment", help="run a grid of evaluations from a YAML and write a merged report",
        description="Expand an experiment YAML (defaults + grid of xke eval fields, e.g. xke/configs/experiments/"
                    "clm_bench.yaml) into runs, run each (finished runs are resumed/skipped), and write "
                    "OUT/report.md (merged tables, CLM-Bench Table 1/2 layout, geometry of zh/en/mix deltas) "
                    "and OUT/experiment.json.")
    p.add_argument("config", help="experiment YAML, or the name of a packaged one (clm_bench, clm_bench_layers, toy_clm)")
    p.add_argument("--out", default=None, help="output directory (default runs/<experiment name>)")
    p.add_argument("--only", action="append", default=None, metavar="SEL",
                   help="select runs: key=v1,v2 (e.g. method=memit batch_size=1,10) or a run-name glob; repeatable")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", dest="set_fields",
                   help="replace a run field in every run, value in YAML syntax (e.g. model=/models/llama3 "
                        "data=/data/clm_bench limit=20); repeatable")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their fields, run nothing")
    p.add_argument("--no-analyze", action="store_true", help="skip the geometry analysis")
    p.set_defaults(func=cmd_experiment)


def cmd_eval(args) -> int:
    from .runner import run_eval, spec_from_args

    spec = spec_from_args(args)
    m = run_eval(spec, progress=not args.quiet)
    _print_summary(m, spec.out)
    return 0


def _print_summary(m: dict, out: str) -> None:
    from .report import render_tables

    print(render_tables([dict(m, _spec={})]))
    if m.get("clm"):
        print("clm:", json.dumps(m["clm"]))
    print(f"avg (tf_acc) = {m['avg']}; n_cases = {m['n_cases']}; results in {out}")


def cmd_report(args) -> int:
    from .report import merge_runs

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    md, written = merge_runs(args.dirs, args.out, layout=args.layout, metric=args.metric, labels=labels)
    print(md)
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo

    methods = [s.strip() for s in args.methods.split(",") if s.strip()] if args.methods else None
    if getattr(args, "threads", None) is None:   # toy models run fastest on one thread (`xke --threads N demo`)
        import torch
        torch.set_num_threads(1)
    run_demo(out=args.out, n=args.n, preset=args.preset, methods=methods, progress=not args.quiet,
             system_prompt=args.system_prompt, rebuild=args.rebuild, memory=args.memory)
    return 0


def parse_set(items) -> dict:
    """``["k=v", ...]`` → mapping, values read as YAML (numbers, lists, true/false)."""
    import yaml

    from ..errors import DataError

    out = {}
    for item in items or []:
        if "=" not in item:
            raise DataError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError as e:
            raise DataError(f"--set {item!r}: bad value: {e}") from None
    return out


def cmd_experiment(args: argparse.Namespace) -> int:
    """``xke experiment CONFIG``: run the grid (:func:`xke.eval.experiment.run_experiment`)."""
    from .experiment import resolve_config, run_experiment

    run_experiment(resolve_config(args.config), args.out, only=args.only, dry_run=args.dry_run,
                   analyze=not args.no_analyze, overrides=parse_set(args.set_fields))
    return 0
