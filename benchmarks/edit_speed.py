"""Seconds per edit of xke's weight-editing methods (process CPU seconds, one torch thread).

Not a test: prints a table. Models: the toy world (the shipped tiny world unless --world DIR) and a randomly
initialised Llama of hidden 256, 4 layers, 4 heads, intermediate 688, vocab 8000 (7.3M parameters),
the config on which EasyEdit was timed (:data:`EASYEDIT`). Key statistics are computed (and cached)
before timing and reported separately.

Same work as EasyEdit's defaults (its ``hparams/<METHOD>/llama-7b.yaml`` and code), per edit:

- ROME: 25 steps (``v_num_grad_steps``), 21 rewrite prompts (the bare prompt + 10 context prefixes of
  ~5 tokens + 10 of ~10 tokens: ``context_template_length_params [[5,10],[10,10]]``) + 1 KL prompt;
- MEMIT, AlphaEdit: 25 steps, 6 rewrite prompts (bare + 5 prefixes of ~10 tokens) + 1 KL prompt;
- PMET: 20 steps, 6 rewrite prompts + 1 KL prompt;
- FT-L, FT-M: 25 steps on the one prompt.

With ``--compare-full``, FT-L and FT-M are also timed as EasyEdit's own loop runs them (:func:`naive_ft`:
``benchmarks/easyedit_ft.py``, run here in the same process): the in-run reference, independent of the
machine's speed; and the time xke's matrix products alone take (:func:`matmul_seconds`): the floor of
the same edits, which no change around the products can go below; and both sides' arithmetic
(:func:`flop_count`: torch's FLOP counter), the share of the products that does not depend on the machine.

Early stopping per request as in the originals (loss < 5e-2; FT: 1e-2). EasyEdit generates its
prefixes with the model; here fixed strings of the same token lengths are used (the byte tokenizer of
the random model: one token per byte). Ratios are xke ÷ EasyEdit per edit (target ≤ 0.33); MEMIT/AlphaEdit batch 1000
vs 50 (target ≤ 20×).

    python benchmarks/edit_speed.py [--world DIR] [--skip-world] [--n-single 5]     # ~1.5 CPU-minutes
    python benchmarks/edit_speed.py --batch-sizes 20,50 --big-batch 1000              # + batch scaling

Timings are process CPU time of this process; on a shared machine wall time is meaningless and even CPU
time varies with cache contention: say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's xke, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

torch.set_num_threads(1)

from xke.data.schema import EditRequest  # noqa: E402
from xke.models.prompts import PromptFormatter  # noqa: E402
from xke.world.provider import provided_method  # noqa: E402

from easyedit_ft import execute_ft  # noqa: E402

#: EasyEdit's seconds per edit on that model (CPU, one thread; MEMIT batch of 20: EASYEDIT_MEMIT_B20 s in all)
EASYEDIT = {"rome": 4.2, "memit": 1.8, "alphaedit": 2.2, "pmet": 1.8, "ft-l": 0.35, "ft-m": 0.38}
EASYEDIT_MEMIT_B20 = 42.0
BATCH_SIZES = [20]
METHODS = ["ft-l", "ft-m", "rome", "memit", "alphaedit", "pmet"]


def random_llama(tmp: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from xke.models.tiny import build_byte_tokenizer
    tok = build_byte_tokenizer()
    cfg = LlamaConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=688, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(f"Person{i} was born in City{i % 97} and works for Company{i % 31}." for i in range(2000)),
                      encoding="utf-8")
    reqs = [EditRequest(f"r{i}", "en", f"Where was Person{i} born?", f"City{(i * 7) % 101}", f"Person{i}")
            for i in range(1000)]
    n = sum(p.numel() for p in model.parameters())
    return model, tok, PromptFormatter(tok, mode="plain"), reqs, str(corpus), f"random Llama 256x4 ({n / 1e6:.1f}M params)"


def world_model(world_dir: str | None):
    from xke.data.schema import EditCase, LangView
    import xke
    if world_dir is None:   # the tiny world (seed 0) shipped with xke: nothing to build
        from xke.artifacts import demo_artifacts
        world_dir = str(demo_artifacts()[0])
    lm = xke.load("world:" + world_dir, device="cpu")
    cases = []
    for line in open(Path(world_dir) / "cases.jsonl", encoding="utf-8"):
        d = json.loads(line)
        cases.append(EditCase(d["case_id"], {k: LangView(**v) for k, v in d["views"].items()}))
    reqs = [c.request(lang) for c in cases for lang in ("en", "zh") if lang in c.views]
    n = sum(p.numel() for p in lm.model.parameters())
    return lm.model, lm.tokenizer, PromptFormatter(lm.tokenizer), reqs, None, f"toy world {world_dir} ({n / 1e6:.2f}M params)"


#: EasyEdit's optimisation steps per method (llama-7b presets)
STEPS = {"rome": 25, "memit": 25, "alphaedit": 25, "pmet": 20, "ft-l": 25, "ft-m": 25}
_WORDS = ["The", "Therefore", "Because", "I", "You", "It", "We", "This", "When", "After"]


def prefixes(n: int, length: int) -> list[str]:
    """``n`` fixed context prefixes of ``length`` characters ending in ". " (EasyEdit: generated text + ". ")."""
    out = []
    for i in range(n):
        body = (_WORDS[i % len(_WORDS)] + " was the one of it all and more")[:max(1, length - 2)]
        out.append(body + ". ")
    return out


def context_prefixes(name: str) -> list[str]:
    if name == "rome":            # [[5, 10], [10, 10]]
        return [""] + prefixes(10, 5) + prefixes(10, 10)
    return [""] + prefixes(5, 10)  # MEMIT/AlphaEdit/PMET: [(10, 5)]


def overrides(name, model, corpus):
    from xke.models.architectures import num_layers
    L = num_layers(model)
    if name in ("ft-l", "ft-m"):
        return {"layers": [min(1, L - 2)], "steps": STEPS[name]}
    spread = [0, 1, 2] if L >= 4 else ([0, 1] if L == 3 else [0])
    ov = {"layers": [min(1, L - 2)] if name == "rome" else spread, "v_steps": STEPS[name], "progress": False,
          "mom2_n_samples": 1000, "context_prefixes": {"default": context_prefixes(name)}}
    if corpus:
        ov["stats_corpus"] = corpus
    return ov


def timed(fn):
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def time_single(name, model, tok, fmt, reqs, corpus, n_single, **extra):
    m = provided_method(name, model, tok, fmt, overrides={**overrides(name, model, corpus), **extra})
    m.apply(reqs[:1]).restore()      # warm-up (first-call allocations)
    tot = 0.0
    for r in reqs[1:n_single + 1]:
        t, h = timed(lambda: m.apply([r]))
        h.restore()
        tot += t
    return tot


#: the matrix-product kernels (their self time is the floor of a step's work)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matmul_seconds(fn) -> float:
    """CPU seconds spent inside matrix-product kernels while ``fn()`` runs (torch profiler, self time):
    what the edits would cost with every other operation free."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS) / 1e6


def flop_count(fn) -> int:
    """Floating-point operations of the matrix products and attention run by ``fn()``, as torch's own
    ``FlopCounterMode`` counts them (2 per multiply-add; elementwise work is not counted). Independent of
    the machine: xke's count ÷ the reference loop's is the ratio of the two sides' matrix-product time at
    the same speed per FLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


#: the naive loop's arguments per FT method (EasyEdit's FT-L and FT-M objectives and constraints)
NAIVE = {"ft-l": dict(objective="prompt_last", norm=5e-4), "ft-m": dict(objective="target_new", norm=None)}


def naive_ft(model, tok, fmt, req, **kw) -> None:
    """One edit as EasyEdit's FT loop makes it (:func:`easyedit_ft.execute_ft`) at the layer FT edits here."""
    layer = overrides("ft-l", model, None)["layers"][0]
    execute_ft(model, tok, fmt.format(req.prompt, req.style), req.target_new, req.lang, layer=layer,
               steps=STEPS["ft-l"], **kw)


def bench(model, tok, fmt, reqs, corpus, title, n_single, big, compare_full=False, batch_steps=None,
          methods=None):
    print(f"\n== {title}; torch threads = {torch.get_num_threads()} ==")
    print(f"{'method':10s} {'protocol':12s} {'CPU s total':>12s} {'s / edit':>9s} {'EasyEdit s/edit':>16s} {'ratio':>7s}")
    rows = {}
    for name in (METHODS if methods is None else [x for x in METHODS if x in methods]) if n_single > 0 else []:
        m = provided_method(name, model, tok, fmt, overrides=overrides(name, model, corpus))
        if name not in ("ft-l", "ft-m"):
            st, _ = timed(lambda: m.second_moments([m.mlp_out(l) for l in m.config.layers]))
            print(f"{name:10s} {'(key stats)':12s} {st:12.2f}")
        tot = time_single(name, model, tok, fmt, reqs, corpus, n_single)
        per = tot / n_single
        rows[(name, 1)] = per
        print(f"{name:10s} {'single':12s} {tot:12.2f} {per:9.3f} {EASYEDIT[name]:16.2f} {per / EASYEDIT[name]:7.3f}")
        if name in NAIVE and compare_full:
            for p in model.parameters():
                p.requires_grad_(False)
            naive_ft(model, tok, fmt, reqs[0], **NAIVE[name])       # warm-up
            nt, _ = timed(lambda: [naive_ft(model, tok, fmt, r, **NAIVE[name]) for r in reqs[1:n_single + 1]])
            rows[(name, "naive")] = nt / n_single
            print(f"{name:10s} {'naive loop':12s} {nt:12.2f} {nt / n_single:9.3f} {'':16s} {'':7s}"
                  f"  EasyEdit's loop run here; xke / naive = {per / (nt / n_single):.2f}")
            mm = matmul_seconds(lambda: [m.apply([r]).restore() for r in reqs[1:n_single + 1]]) / n_single
            rows[(name, "matmul")] = mm
            print(f"{name:10s} {'matmuls':12s} {mm * n_single:12.2f} {mm:9.3f} {'':16s} {'':7s}"
                  f"  xke's matrix products alone (profiler); / naive = {mm / (nt / n_single):.2f}")
            edits = reqs[1:n_single + 1]
            fx = flop_count(lambda: [m.apply([r]).restore() for r in edits])
            fn = flop_count(lambda: [naive_ft(model, tok, fmt, r, **NAIVE[name]) for r in edits])
            rows[(name, "flops")] = fx / fn
            print(f"{name:10s} {'GFLOP':12s} {fx / 1e9:12.2f} {fx / 1e9 / n_single:9.3f} {'':16s} {'':7s}"
                  f"  xke's arithmetic; the naive loop's {fn / 1e9 / n_single:.3f} per edit: / naive = {fx / fn:.2f}")
        if compare_full:
            # the same edits with a full forward pass at every step (no cached stream / prefix keys): the
            # in-run speed-up of the caching, independent of how loaded the machine is
            full = time_single(name, model, tok, fmt, reqs, corpus, n_single, reuse_prefix_layers=False) / n_single
            rows[(name, "full")] = full
            print(f"{name:10s} {'single, full':12s} {full * n_single:12.2f} {full:9.3f} {'':16s} {'':7s}"
                  f"  speed-up from caching {full / per:.2f}x")
    for name in [x for x in ("memit", "alphaedit") if methods is None or x in methods]:
        ov = overrides(name, model, corpus)
        if batch_steps:
            ov["v_steps"] = batch_steps
            print(f"{name}: batch timings with v_steps = {batch_steps} (scaling check, not EasyEdit's step count)")
        m = provided_method(name, model, tok, fmt, overrides=ov)
        sizes = list(BATCH_SIZES) + ([big] if big and len(reqs) >= big else [])
        for b in sizes:
            t, h = timed(lambda: m.apply(reqs[:b]))
            h.restore()
            rows[(name, b)] = t
            ref = f"{EASYEDIT_MEMIT_B20:16.2f} {t / EASYEDIT_MEMIT_B20:7.3f}" if (name == "memit" and b == 20) else ""
            print(f"{name:10s} {'batch ' + str(b):12s} {t:12.2f} {t / b:9.3f} {ref}")
        if (name, big) in rows and (name, 50) in rows:
            print(f"{name:10s} batch {big} / batch 50 = {rows[(name, big)] / rows[(name, 50)]:.1f}x (target <= 20x)")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default=None, help="built world directory (default: the shipped tiny world)")
    ap.add_argument("--skip-world", action="store_true")
    ap.add_argument("--skip-llama", action="store_true")
    ap.add_argument("--n-single", type=int, default=5)
    ap.add_argument("--big-batch", type=int, default=0,
                    help="also time MEMIT/AlphaEdit on one batch of N edits (1000: the scaling check; minutes)")
    ap.add_argument("--batch-steps", type=int, default=None,
                    help="optimisation steps for the batch-size comparison (fewer = cheaper scaling check)")
    ap.add_argument("--methods", default=None, help="comma-separated subset of methods")
    ap.add_argument("--batch-sizes", default="20", help="batch sizes timed besides --big-batch (default 20; the "
                                                          "scaling check: 20,50 with --big-batch 1000)")
    ap.add_argument("--compare-full", action="store_true",
                    help="also time single edits with full forward passes at every step (in-run speed-up)")
    a = ap.parse_args()
    BATCH_SIZES[:] = [int(x) for x in a.batch_sizes.split(",") if x]
    methods = a.methods.split(",") if a.methods else None
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("XKE_CACHE", str(Path(tmp) / "cache"))
        if not a.skip_llama:
            bench(*random_llama(Path(tmp)), a.n_single, a.big_batch, a.compare_full, a.batch_steps, methods)
        if not a.skip_world:
            bench(*world_model(a.world), a.n_single, 0, a.compare_full, a.batch_steps, methods)


if __name__ == "__main__":
    main()
