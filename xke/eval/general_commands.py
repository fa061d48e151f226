"""``xke general``: general ability (lm-evaluation-harness tasks) before and after N edits."""

from __future__ import annotations

import argparse

GENERAL_EPILOG = """examples:
  xke general --model world --methods memit,xkde --n-edits 100 --out runs/general
  xke general --model world --methods memit,rome,xkde --n-edits 1,10,100 --out runs/degradation
  xke general --model DIR --methods memit --data ../shared/data/bizsre/test.json --bench bizsre \\
      --tasks xke_mmlu,xke_cmmlu --task-data xke_mmlu=mmlu.jsonl --task-data xke_cmmlu=cmmlu.jsonl --out runs/g

Tasks: lm-eval task names (datasets already on this machine; nothing is downloaded), configs in
--include-path, xke's configs for local copies (xke_mmlu, xke_cmmlu, xke_mc_en/zh, xke_qa_en/zh, with
--task-data NAME=PATH) and xke_world (generated from the toy world; the default).
Writes OUT/general.json, OUT/general.md (Table-3 layout), OUT/degradation.png (several --n-edits);
rerunning the same command resumes."""


def _ints(s: str) -> list[int]:
    from ..errors import ConfigError

    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--n-edits takes comma-separated numbers, got {s!r}") from None


def _pairs(items: list[str] | None, option: str, default_key: str | None = None) -> dict[str, str]:
    """``KEY=VALUE`` items as a dict; a bare value goes under ``default_key`` when there is one."""
    from ..errors import ConfigError

    out = {}
    for it in items or []:
        if "=" not in it:
            if default_key is None:
                raise ConfigError(f"{option} takes NAME=PATH, got {it!r}")
            out[default_key] = it.strip()
            continue
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def register(sub, groups) -> None:
    p = sub.add_parser("general", help="general ability (lm-eval tasks) before and after N edits",
                       description="Run lm-evaluation-harness tasks on a model before editing and after N edits "
                                   "of each method (sequential or batch; in-context methods retrieve from a memory "
                                   "of N edits), and report the difference per task (X-KDE Table 3) with the edits' "
                                   "reliability and locality; several --n-edits draw degradation curves.",
                       epilog=GENERAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="local model directory, a tiny config, 'world' or 'world:DIR'")
    p.add_argument("--methods", default="memit", help="comma-separated editing methods (default memit)")
    p.add_argument("--n-edits", default="100", help="comma-separated numbers of edits, e.g. 1,10,100 (default 100)")
    p.add_argument("--protocol", choices=["sequential", "batch"], default="sequential",
                   help="sequential: --batch-size edits per step, accumulating (default); batch: all N at once")
    p.add_argument("--batch-size", type=int, default=1, help="edits per sequential step (default 1)")
    p.add_argument("--tasks", default="xke_world", help="comma-separated lm-eval tasks/groups (default xke_world)")
    p.add_argument("--task-data", action="append", metavar="TASK=PATH",
                   help="local data (JSON list or JSONL) of one of xke's task configs; repeatable")
    p.add_argument("--include-path", action="append", metavar="DIR", help="folder of lm-eval task YAMLs; repeatable")
    p.add_argument("--bench", default="jsonl", help="format of --data: bizsre, mzsre, clm or jsonl (default)")
    p.add_argument("--data", default="", help="edit cases (default: every edit the toy world has, shuffled)")
    p.add_argument("--edit-lang", default="en", help="language the edits are made in, or mix (default en)")
    p.add_argument("--test-langs", default="en,zh", help="languages of the reliability/locality check (default en,zh)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N documents of each task")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--config", action="append", metavar="[METHOD=]PATH",
                   help="YAML with method options (its 'method:' section or the whole file), for every method or, "
                        "as METHOD=PATH, for one; repeatable")
    p.add_argument("--template", choices=["auto", "chat", "raw"], default="auto",
                   help="task prompts through the chat template (chat), as the task writes them (raw), "
                        "or chat when the tokenizer has a template (auto)")
    p.add_argument("--lm-batch-size", type=int, default=32, help="lm-eval batch size (default 32)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_general)


def cmd_general(args) -> int:
    from .general import GeneralSpec, run_general

    spec = GeneralSpec.from_dict({
        "model": args.model, "out": args.out, "methods": _csv(args.methods), "n_edits": _ints(args.n_edits),
        "protocol": args.protocol, "batch_size": args.batch_size, "tasks": _csv(args.tasks),
        "task_data": _pairs(args.task_data, "--task-data"), "include_paths": list(args.include_path or []),
        "bench": args.bench, "data": args.data, "edit_lang": args.edit_lang, "test_langs": _csv(args.test_langs),
        "limit": args.limit, "num_fewshot": args.num_fewshot, "seed": args.seed,
        "configs": _pairs(args.config, "--config", "*"),
        "template": args.template, "lm_batch_size": args.lm_batch_size, "dtype": args.dtype, "device": args.device,
    })
    result = run_general(spec, progress=not args.quiet)
    from .general import render_table

    print(render_table(result))
    print(f"results in {args.out}")
    return 0
