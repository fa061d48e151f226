"""Family x path x dtype matrix: does every ``xke eval`` path run on every model family?

Each family is a tiny random-weight model built with its real ``transformers`` config class, its
published chat template and (where one ships offline) its real tokenizer
(:mod:`xke.models.families`). Each cell runs ``xke eval`` (the runner, in process) on two hand-written
edit cases, edit in English, test in English and Chinese, with a few optimisation steps, and reports:

- ``ok`` — the run finished with finite metrics; for weight edits ``ok Δ=x`` gives max |ΔW|, the
  largest change of an edited weight (finite and small: the edit did not blow the model up; random
  weights cannot be edited to a new argmax in a few steps, so reliability says nothing here);
- ``refused`` — a clear xke error by design (mixture-of-experts models have no single MLP to edit);
- ``FAIL: …`` — anything else (a traceback's last line);
- ``skip: …`` — the family's tokenizer is not available here (``../shared/tokenizers``, test extras).

    python benchmarks/family_matrix.py                      # every family and path in float32
    python benchmarks/family_matrix.py --dtypes float32,bfloat16,float16   # the README table, ~5 CPU-minutes
    python benchmarks/family_matrix.py --families llama2,qwen3 --paths none,rome --dtypes float32

Prints a markdown table (one row per family x dtype). Tests run a subset
(``tests/test_family_matrix.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FAMILY_ORDER = ["llama2", "llama3", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                "phi3", "olmo2", "gpt2", "gpt_neox"]
PATHS = ["none", "rome", "memit", "ft-m", "ike", "xkde"]
WEIGHT_PATHS = ("rome", "memit", "ft-m")
DTYPES = ["float32", "bfloat16", "float16"]

def _view(subject, prompt, target, paraphrase, loc_q, loc_a):
    return {"subject": subject, "prompt": prompt, "target_new": target, "paraphrases": [paraphrase],
            "locality_prompt": loc_q, "locality_answer": loc_a}


CASES = [
    {"case_id": "m0", "views": {
        "en": _view("Ada Lovelace", "Where was Ada Lovelace born?", "Paris", "What is the birthplace of Ada Lovelace?",
                    "What is the capital of Japan?", "Tokyo"),
        "zh": _view("艾达·洛夫莱斯", "艾达·洛夫莱斯出生在哪里？", "巴黎", "艾达·洛夫莱斯的出生地是哪里？",
                    "日本的首都是哪里？", "东京")}},
    {"case_id": "m1", "views": {
        "en": _view("Alan Turing", "What did Alan Turing work as?", "a chef", "What was the job of Alan Turing?",
                    "Who wrote Hamlet?", "Shakespeare"),
        "zh": _view("艾伦·图灵", "艾伦·图灵的职业是什么？", "厨师", "艾伦·图灵做什么工作？",
                    "《哈姆雷特》的作者是谁？", "莎士比亚")}},
]
POOL = [
    {"case_id": "p0", "views": {
        "en": {"subject": "Marie Curie", "prompt": "Where was Marie Curie born?", "target_new": "Warsaw"},
        "zh": {"subject": "玛丽·居里", "prompt": "玛丽·居里出生在哪里？", "target_new": "华沙"}}},
    {"case_id": "p1", "views": {
        "en": {"subject": "Isaac Newton", "prompt": "What did Isaac Newton work as?", "target_new": "a physicist"},
        "zh": {"subject": "艾萨克·牛顿", "prompt": "艾萨克·牛顿的职业是什么？", "target_new": "物理学家"}}},
]
CORPUS = ["Ada Lovelace was born in London.", "Alan Turing worked as a mathematician.",
          "The capital of Japan is Tokyo.", "Hamlet was written by Shakespeare.",
          "艾达·洛夫莱斯出生在伦敦。", "艾伦·图灵是一位数学家。", "日本的首都是东京。"] * 4


def method_overrides(path: str, n_layers: int, work: Path) -> dict:
    """Few-step options for each path (fast on tiny models)."""
    locate = dict(v_steps=25, progress=False, mom2_n_samples=len(CORPUS), mom2_batch_size=8,
                  stats_corpus=str(work / "corpus.txt"))
    return {"none": {}, "rome": dict(locate, layers=[0]), "memit": dict(locate, layers=list(range(max(1, n_layers - 1)))),
            "ft-m": dict(layers=[0]), "ike": dict(pool=str(work / "pool.jsonl"), k=2), "xkde": {}}[path]


def _write_inputs(work: Path) -> None:
    for name, rows in (("cases.jsonl", CASES), ("pool.jsonl", POOL)):
        (work / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (work / "corpus.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")


def run_cell(model_dir: Path, path: str, dtype: str, work: Path) -> str:
    """One cell's text (see module docstring)."""
    import warnings

    from xke.errors import XkeError
    from xke.eval.runner import EvalSpec, run_eval
    from xke.models.architectures import MIXTURE_OF_EXPERTS, decoder_layers
    from xke.models.loading import load_model

    try:
        lm = load_model(str(model_dir), dtype=dtype, device="cpu")
        n_layers = len(decoder_layers(lm.model))
        out = Path(tempfile.mkdtemp(dir=work, prefix=f"{path}-{dtype}-"))
        spec = EvalSpec.from_dict(dict(model=str(model_dir), out=str(out), method=path, bench="jsonl",
                                       data=str(work / "cases.jsonl"), edit_lang="en", test_langs=["en", "zh"],
                                       dtype=dtype, device="cpu", max_new_tokens=3,
                                       save_deltas=path in WEIGHT_PATHS,
                                       method_overrides=method_overrides(path, n_layers, work)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = run_eval(spec, loaded=lm, progress=False)
    except XkeError as e:
        moe = lm.model.config.model_type in MIXTURE_OF_EXPERTS if "lm" in locals() else False
        return "refused" if moe and "mixture-of-experts" in str(e) else f"FAIL: {str(e).splitlines()[0][:80]}"
    except Exception as e:  # noqa: BLE001 - the matrix reports every failure
        return f"FAIL: {type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
    vals = [v for b in m["by_test_lang"].values() for k in b.values() for v in k.values() if v is not None]
    if any(v != v for v in vals):
        return "FAIL: NaN metric"
    if path not in WEIGHT_PATHS:
        return "ok"
    from safetensors.torch import load_file

    delta = max(float(t.abs().max()) for t in load_file(str(out / "deltas.safetensors")).values())
    if delta != delta or delta == float("inf"):
        return "FAIL: non-finite weights"
    return f"ok Δ={delta:.2g}"


def build_matrix(families=FAMILY_ORDER, paths=PATHS, dtypes=DTYPES, work: Path | None = None,
                 log=None) -> dict[tuple[str, str], dict[str, str]]:
    """``{(family, dtype): {path: cell}}`` for the requested cells."""
    from xke.errors import ModelError
    from xke.models.families import build_family_model

    work = Path(work or tempfile.mkdtemp(prefix="xke-matrix-"))
    work.mkdir(parents=True, exist_ok=True)
    _write_inputs(work)
    table: dict[tuple[str, str], dict[str, str]] = {}
    for fam in families:
        try:
            model_dir = build_family_model(fam, work / "models" / fam)
        except ModelError as e:
            for dt in dtypes:
                table[(fam, dt)] = {p: f"skip: {str(e)[:50]}" for p in paths}
            continue
        for dt in dtypes:
            row = table.setdefault((fam, dt), {})
            for p in paths:
                t0 = time.process_time()
                row[p] = run_cell(model_dir, p, dt, work)
                if log:
                    log(f"{fam:12} {dt:9} {p:6} {row[p]}  ({time.process_time() - t0:.1f} CPU-s)")
    return table


def markdown(table: dict[tuple[str, str], dict[str, str]], paths=PATHS) -> str:
    """The matrix as a markdown table."""
    lines = ["| family | dtype | " + " | ".join(paths) + " |", "|" + "---|" * (len(paths) + 2)]
    for (fam, dt), row in table.items():
        lines.append(f"| {fam} | {dt} | " + " | ".join(row.get(p, "") for p in paths) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(FAMILY_ORDER))
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--dtypes", default="float32",
                    help=f"default float32 (a short run); the README table: {','.join(DTYPES)} (~5 CPU-minutes)")
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    paths = split(a.paths)
    table = build_matrix(split(a.families), paths, split(a.dtypes), Path(a.work) if a.work else None,
                         log=None if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True)))
    print(markdown(table, paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
