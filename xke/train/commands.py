"""``xke data build-xeit`` and ``xke train xeit|tlpo|xkde``."""

from __future__ import annotations

import json
from pathlib import Path

SOURCE_HELP = ("edit source, KIND:PATH (repeatable): mzsre:PATH (MzsRE/ZsRE train TSVs), clm:PATH (CLM-Bench "
               "CounterFact rows), jsonl:PATH (xke edit JSONL), world:DIR or world (toy world, train split only)")


def _common(p, *, model: bool = True):
    if model:
        p.add_argument("--model", required=True, help="local HF model dir, tiny-llama, world or world:DIR")
    p.add_argument("--preset", default="toy", help="train preset: toy (CPU), paper (Table 7), release (released code)")
    p.add_argument("--config", default=None,
                   help="YAML with sections data/source_options/llm/xeit/sampling/scoring/tlpo/eval")
    p.add_argument("--threads", dest="train_threads", type=int, default=None, help="torch CPU threads")
    if model:
        p.add_argument("--system-prompt", default=None, metavar="TEXT",
                       help="system message put first in every training row / prompt (config key system_prompt)")


def register(sub, groups) -> None:
    d = groups["data"].add_parser("build-xeit", help="build X-KDE XE-IT training data (Table 8 layout)",
                                  description="Build the XE-IT data: in-scope / out-of-scope samples with and "
                                              "without the edit descriptor, monolingual and cross-lingual.")
    d.add_argument("--source", action="append", required=True, help=SOURCE_HELP)
    d.add_argument("--langs", default=None, help="languages, e.g. en,zh (default: the preset's)")
    d.add_argument("--out", required=True, help="output folder (train.jsonl, validation.jsonl, stats.json)")
    d.add_argument("--backend", choices=["offline", "openai"], default=None,
                   help="LLM steps: offline (ground truth) or an OpenAI-compatible endpoint")
    d.add_argument("--llm-base-url", default=None)
    d.add_argument("--llm-model", default=None)
    d.add_argument("--limit", type=int, default=None, help="at most N facts per source")
    d.add_argument("--long-answers", action="store_true", help="add long-answer samples")
    d.add_argument("--parquet", action="store_true", help="also write Parquet")
    d.add_argument("--tokenizer", default=None, help="model whose tokenizer measures the average length")
    _common(d, model=False)
    # the command line's model provider turns world specs in these arguments into a model dir / source object
    d.set_defaults(func=cmd_build_xeit, provide={"source": "sources", "tokenizer": "model"})

    g = groups["train"]
    x = g.add_parser("xeit", help="XE-IT: SFT with answer-only loss on XE-IT data")
    _common(x)
    x.add_argument("--data", required=True,
                   help="folder from `xke data build-xeit`, or ShareGPT / conversations JSON (X-KDE release, LTE)")
    x.add_argument("--out", required=True)
    x.add_argument("--lora", action="store_true", help="train LoRA adapters (merged on save)")
    x.set_defaults(func=cmd_xeit, provide={"model": "model"})

    t = g.add_parser("tlpo", help="TL-PO: sample, score, build pairs, preference-optimise (ORPO/DPO/CPO/KTO)")
    _common(t)
    t.add_argument("--data", default=None,
                   help="XE-IT data (folder with train.jsonl, or ShareGPT JSON): prompts to sample from; "
                        "rows without xke's metadata get it inferred")
    t.add_argument("--out", required=True)
    t.add_argument("--algo", choices=["orpo", "dpo", "cpo", "kto"], default=None)
    t.add_argument("--beta", type=float, default=None)
    t.add_argument("--scorer", default=None, help="light, or seq2seq:PATH (local NLLB/M2M100/Marian)")
    t.add_argument("--pairs", default=None,
                   help="train on existing pairs instead of sampling and scoring: an xke pairs folder, or the "
                        "release's {prompt, choice, reject, score-diff} NAME-train.json (+ NAME-dev.json)")
    t.set_defaults(func=cmd_tlpo, provide={"model": "model"})

    k = g.add_parser("xkde", help="the full X-KDE recipe: data -> XE-IT -> sampling -> scoring -> TL-PO -> eval")
    _common(k)
    k.add_argument("--source", action="append", required=True, help=SOURCE_HELP)
    k.add_argument("--langs", default=None, help="languages, e.g. en,zh")
    k.add_argument("--out", required=True)
    k.add_argument("--algo", choices=["orpo", "dpo", "cpo", "kto"], default=None)
    k.add_argument("--stages", default=None,
                   help="comma list of stages to include (default all): data,xeit,sample,score,pairs,tlpo,eval; "
                        "e.g. data,tlpo,eval = TL-PO only")
    k.add_argument("--force", default="", help="comma list of stages to redo even if complete")
    k.set_defaults(func=cmd_xkde, provide={"model": "model", "source": "sources"})


def _cfg(args, overrides=None):
    from ..data.languages import parse_langs
    from .recipe import load_train_config

    ov = overrides or {}
    if getattr(args, "langs", None):
        ov.setdefault("data", {})["langs"] = parse_langs(args.langs)
    if getattr(args, "train_threads", None) is not None:
        ov["threads"] = args.train_threads  # checked (> 0) with the config
    if getattr(args, "system_prompt", None) is not None:
        ov["system_prompt"] = args.system_prompt
    return load_train_config(args.preset, args.config, ov)


def _threads(cfg):
    import os

    import torch

    n = cfg.threads or (int(os.environ["XKE_THREADS"]) if os.environ.get("XKE_THREADS") else None)
    if n:
        torch.set_num_threads(n)


def cmd_build_xeit(args) -> int:
    from .llm import make_steps
    from .sources import xeit_inputs
    from .xeit_data import build_xeit_dataset

    ov: dict = {}
    if args.backend:
        ov.setdefault("llm", {})["backend"] = args.backend
    if args.llm_base_url:
        ov.setdefault("llm", {})["base_url"] = args.llm_base_url
    if args.llm_model:
        ov.setdefault("llm", {})["model"] = args.llm_model
    if args.long_answers:
        ov.setdefault("data", {})["long_answers"] = True
    if args.parquet:
        ov.setdefault("data", {})["formats"] = ["jsonl", "parquet"]
    cfg = _cfg(args, ov)
    facts, extra = xeit_inputs(args.source, cfg.data, limit=args.limit, options=cfg.source_options)
    tok = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        from ..models.loading import resolve_model_path

        tok = AutoTokenizer.from_pretrained(resolve_model_path(args.tokenizer))
    build_xeit_dataset(facts, cfg.data, args.out, steps=make_steps(cfg.llm, seed=cfg.data.seed), tokenizer=tok,
                       extra_rows=extra)
    return 0


def cmd_xeit(args) -> int:
    from .xeit import train_xeit

    ov = {"xeit": {"lora": True}} if args.lora else {}
    cfg = _cfg(args, ov)
    _threads(cfg)
    m = train_xeit(args.model, args.data, args.out, cfg.xeit, system_prompt=cfg.system_prompt)
    print(json.dumps({k: v for k, v in m.items() if k != "config"}, indent=2))
    return 0


def cmd_tlpo(args) -> int:
    """``xke train tlpo``: the recipe's TL-PO stages (:func:`xke.train.recipe.tlpo_stages`) on ``--model``,
    prompts from ``--data`` (or existing ``--pairs``); resumable like the recipe (stage markers in ``--out``)."""
    from ..errors import ConfigError
    from .recipe import TLPO_STAGES, Stages, tlpo_stages

    ov: dict = {}
    if args.algo:
        ov.setdefault("tlpo", {})["algo"] = args.algo
    if args.beta is not None:
        ov.setdefault("tlpo", {})["beta"] = args.beta
    if args.scorer:
        if args.scorer == "light":
            ov["scoring"] = {"kind": "light"}
        elif args.scorer.startswith("seq2seq:"):
            ov["scoring"] = {"kind": "seq2seq", "path": args.scorer.split(":", 1)[1]}
        else:
            raise ConfigError(f"--scorer {args.scorer!r}: use light or seq2seq:PATH")
    cfg = _cfg(args, ov)
    _threads(cfg)
    if not args.pairs and not args.data:
        raise ConfigError("xke train tlpo: give --data (prompts to sample from) or --pairs (existing pairs)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from ..fsutil import hash_path

    # a rerun into the same --out skips what is done, unless the model folder or the prompts changed
    deps = {"model_files": _files_stamp(args.model)}
    if not args.pairs:
        deps["data"] = {"path": str(args.data), "sha256": hash_path(args.data)}

    def rows():
        from .importers import load_xeit_rows

        return load_xeit_rows(args.data)[0]

    res = tlpo_stages(Stages(out, names=TLPO_STAGES), args.model, rows, out, cfg, pairs=args.pairs, extra_deps=deps)
    if "pairs" in res:
        print(json.dumps(res["pairs"], indent=2))
    print(json.dumps({k: v for k, v in res["tlpo"].items() if k != "config"}, indent=2))
    return 0


def _files_stamp(model: str) -> list[str]:
    """Name, size and modification time of the files of a local model folder (empty for a built-in name)."""
    p = Path(model).expanduser()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
    return [f"{f.relative_to(p)}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files]


def cmd_xkde(args) -> int:
    from .recipe import run_recipe

    ov: dict = {}
    if args.algo:
        ov.setdefault("tlpo", {})["algo"] = args.algo
    if args.stages:
        ov["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    cfg = _cfg(args, ov)
    _threads(cfg)
    res = run_recipe(args.model, args.source, args.out, cfg, force=[s for s in args.force.split(",") if s])
    for line in eval_summary(res.get("eval") or {}):
        print(line)
    print(f"model: {Path(args.out) / 'model'}")
    return 0


def eval_summary(ev: dict) -> list[str]:
    """One line per evaluated model x edit -> test pair of the recipe's ``eval.json`` (wrong-form counts
    where the block has them: gold mode)."""
    lines = []
    for name, block in ev.items():
        if isinstance(block, dict) and "pairs" in block:
            for pair, b in block["pairs"].items():
                form = f"  wrong-form {b['form_errors']['any']}" if "form_errors" in b else ""
                lines.append(f"{name:6} {pair:7} rel {b.get('reliability')}  gen {b.get('generality')}  "
                             f"loc {b.get('locality')}  port {b.get('portability')}{form}")
        elif isinstance(block, dict):
            lines.append(f"{name} {json.dumps(block)}")
    return lines
