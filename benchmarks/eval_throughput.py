"""Throughput of xke's evaluation engine (not a timed test).

Compares, on a tiny model, cases/s of

- ``engine``: what ``xke eval`` does per evaluated case (``Evaluator.evaluate``:
  prompts, tokenization, batched teacher-forced scoring and batched greedy
  generation with a KV cache, metrics), all queries of the cases at once;
- ``naive``: one case at a time, one unbatched forward per query for scoring
  and greedy generation without a KV cache (the whole sequence re-run for each
  new token) — how the released X-KDE evaluation worked;
- ``raw``: one raw batched forward pass (left padded, budgeted like the
  engine) over the same tokens the engine feeds the model: every query's
  prompt + target, and every prompt + its generated answer. No generation
  loop, no tokenization, no metrics: a lower bound on the engine's time.

Prints both ratios (targets: engine >= 0.5 x raw, engine >= 10 x naive), the
thread count (set explicitly) and the process CPU seconds of each part.

    python benchmarks/eval_throughput.py [--model tiny-llama|world|DIR] [--cases 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's xke, installed or not


def make_cases(n: int):
    from xke.data.schema import EditCase, LangView

    cases = []
    for i in range(n):
        en = LangView(subject=f"Person {i}", prompt=f"Where was the scientist Person {i} born?",
                      target_new=f"New City {i}", paraphrases=[f"In which city was Person {i} born?"],
                      locality_prompt=f"What is the capital of Country {i}?", locality_answer=f"Capital {i}",
                      portability_prompt=f"Which country is the birthplace of Person {i} in?",
                      portability_answer=f"Country {i % 5}")
        zh = LangView(subject=f"人物{i}", prompt=f"科学家人物{i}出生在哪里？", target_new=f"新城市{i}",
                      paraphrases=[f"人物{i}出生在哪个城市？"], locality_prompt=f"国家{i}的首都是哪里？",
                      locality_answer=f"首都{i}")
        cases.append(EditCase(f"b{i}", {"en": en, "zh": zh}))
    return cases


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--cases", type=int, default=64)
    ap.add_argument("--naive-cases", type=int, default=8, help="cases for the (slow) naive loop")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    torch.set_num_threads(args.threads)

    from xke.eval.engine import Engine
    from xke.eval.runner import Evaluator
    from xke.methods.none import NoEdit
    import xke
    from xke.models.prompts import PromptFormatter, encode_prompt, encode_prompt_target

    lm = xke.load(args.model, device="cpu", dtype="float32")
    model, tok = lm.model, lm.tokenizer
    fmt = PromptFormatter(tok)
    method = NoEdit(model, tok, fmt)
    engine = Engine(model, tok, max_new_tokens=args.max_new_tokens)
    ev = Evaluator(engine, method, fmt, tok, ["en", "zh"])
    cases = make_cases(args.cases)
    pre = {r["case_id"]: r for r in ev.pre_edit(cases)}
    ev.evaluate(cases[:4], pre)  # warm-up

    # --- engine
    recs, e_wall, e_cpu = timed(lambda: ev.evaluate(cases, pre))

    # --- the tokens the engine fed the model
    seqs = []
    for rec, c in zip(recs, cases):
        qs = [q for lang in ("en", "zh") for q in c.queries(lang)]
        for q, r in zip(qs, rec["queries"]):
            ptext = method.prompt(q)
            if q.kind == "locality":
                p, t = encode_prompt(tok, ptext), pre[c.case_id]["langs"][q.lang]["answer_ids"]
            else:
                p, t = encode_prompt_target(tok, ptext, q.target, q.lang)
            seqs.append(p + t)
            seqs.append(p + list(tok(r["pred"], add_special_tokens=False)["input_ids"]))
    from xke.eval.engine import _batches

    def raw():
        with torch.inference_mode():
            for b in _batches([len(s) for s in seqs], engine.token_budget, engine.max_rows):
                ids, mask, pos = engine._pad_left([seqs[i] for i in b])
                model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    raw()  # warm-up
    _, r_wall, r_cpu = timed(raw)

    # --- naive: one case at a time, unbatched, no KV cache
    def naive():
        with torch.no_grad():
            for c in cases[:args.naive_cases]:
                for lang in ("en", "zh"):
                    for q in c.queries(lang):
                        ptext = fmt.format(q.prompt, q.style)
                        p, t = encode_prompt_target(tok, ptext, q.target, q.lang)
                        lg = model(torch.tensor([p + t])).logits[0]
                        lg[len(p) - 1:len(p) + len(t) - 1].argmax(-1)
                        ids = list(p)
                        for _ in range(args.max_new_tokens):
                            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
                            if nxt == tok.eos_token_id:
                                break
                            ids.append(nxt)
    _, n_wall, n_cpu = timed(naive)

    n_tokens = sum(len(s) for s in seqs)
    e_cps, r_cps, n_cps = args.cases / e_wall, args.cases / r_wall, args.naive_cases / n_wall
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; "
          f"torch threads {torch.get_num_threads()}; {args.cases} cases x 2 languages, "
          f"{sum(len(r['queries']) for r in recs)} queries, {n_tokens} tokens in the raw pass; "
          f"max_new_tokens {args.max_new_tokens}")
    print(f"engine: {e_cps:8.2f} cases/s  (wall {e_wall:.2f} s, process CPU {e_cpu:.2f} s)")
    print(f"raw   : {r_cps:8.2f} cases/s  (wall {r_wall:.2f} s, process CPU {r_cpu:.2f} s)  one batched forward")
    print(f"naive : {n_cps:8.2f} cases/s  (wall {n_wall:.2f} s, process CPU {n_cpu:.2f} s, "
          f"{args.naive_cases} cases)")
    print(f"engine / raw   = {e_cps / r_cps:.2f}   (target >= 0.5; by process CPU time: {r_cpu / e_cpu:.2f})")
    print(f"engine / naive = {e_cps / n_cps:.1f}x  (target >= 10x; by process CPU time: "
          f"{(n_cpu / args.naive_cases) / (e_cpu / args.cases):.1f}x)")


if __name__ == "__main__":
    main()
