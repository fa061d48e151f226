"""TL-PO sampling: ``n`` responses per prompt at temperature 0.8.

With ``transformers`` ``generate`` (batched, left padding, stops at EOS or
the chat template's end-of-turn token), or vLLM when it is installed and
``backend`` asks for it. Duplicates and exact copies of the reference are
dropped (the paper, §3.2; the released code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from ..models.prompts import chat_kwargs


@dataclass
class SamplingConfig:
    n: int = 5
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 16
    max_prompts: int | None = None
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    seed: int = 0
    #: which XE-IT rows become TL-PO prompts (the paper samples target-language answers)
    sections: list[str] | None = None        # None: all
    scopes: list[str] | None = None          # None: all ("in", "out")
    with_edit_only: bool = False
    #: chat templates with a reasoning switch (Qwen3): thinking mode on (default off: enable_thinking=False)
    thinking: bool = False

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError("sampling.n must be >= 1")
        if self.temperature <= 0:
            raise ValueError("sampling.temperature must be > 0 (sampling, not greedy)")


def end_token_ids(tokenizer) -> list[int]:
    """EOS plus the chat template's end-of-turn tokens the tokenizer knows (``<|end|>``, ``<|im_end|>``, ...)."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for t in ("<|end|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>", "<|endoftext|>"):
        if t in vocab and vocab[t] not in ids:
            ids.append(vocab[t])
    return ids


def clean_samples(samples: Sequence[str], reference: str) -> list[str]:
    """Stripped samples without duplicates, empties and exact copies of the reference (order kept)."""
    seen, out = set(), []
    ref = reference.strip()
    for s in samples:
        t = s.strip()
        if not t or t == ref or t in seen:
            continue
        seen.add(t)
        out.append(t)
    return out


def select_prompts(rows: list[dict], cfg: SamplingConfig) -> list[dict]:
    """XE-IT rows that become TL-PO prompts (filters from ``cfg``; deterministic subsample)."""
    import random

    from .importers import fill_row_metadata

    rows = [fill_row_metadata(r, i) for i, r in enumerate(rows)]
    # imported rows (no xke metadata) pass the section / scope filters, which name xke's own row kinds
    out = [r for r in rows
           if (cfg.sections is None or r.get("imported") or r["section"] in cfg.sections)
           and (cfg.scopes is None or r.get("imported") or r["scope"] in cfg.scopes)
           and (not cfg.with_edit_only or r["with_edit"])]
    if cfg.max_prompts is not None and len(out) > cfg.max_prompts:
        rng = random.Random(cfg.seed)
        out = rng.sample(out, cfg.max_prompts)
    return out


def _vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


def generate_samples(model_spec, prompts: Sequence[list[dict]], cfg: SamplingConfig) -> list[list[str]]:
    """``cfg.n`` sampled replies for each chat prompt (a list of messages)."""
    use_vllm = cfg.backend == "vllm" or (cfg.backend == "auto" and _vllm_available() and isinstance(model_spec, str))
    if use_vllm:
        return _generate_vllm(model_spec, prompts, cfg)
    return _generate_hf(model_spec, prompts, cfg)


def _generate_vllm(model_spec, prompts, cfg):  # pragma: no cover - needs vLLM + a GPU
    from vllm import LLM, SamplingParams

    from ..models.loading import resolve_model_path

    llm = LLM(model=str(resolve_model_path(model_spec)), seed=cfg.seed)
    sp = SamplingParams(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens)
    outs = llm.chat([list(p) for p in prompts], sp, use_tqdm=True, chat_template_kwargs=chat_kwargs(cfg.thinking))
    return [[o.text for o in r.outputs] for r in outs]


def _generate_hf(model_spec, prompts, cfg):
    import torch
    from tqdm.auto import tqdm

    from ..models.loading import load_model

    if isinstance(model_spec, (str, Path)):
        lm = load_model(str(model_spec), device="auto")
        model, tok = lm.model, lm.tokenizer
    else:
        model, tok = model_spec
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    dev = next(model.parameters()).device
    stops = end_token_ids(tok)
    texts = [tok.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True, **chat_kwargs(cfg.thinking))
             for p in prompts]
    torch.manual_seed(cfg.seed)
    out: list[list[str]] = []
    for i in tqdm(range(0, len(texts), cfg.batch_size), desc="sampling", leave=False):
        chunk = texts[i:i + cfg.batch_size]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
        with torch.inference_mode():
            res = model.generate(**enc, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                                 num_return_sequences=cfg.n, max_new_tokens=cfg.max_new_tokens,
                                 eos_token_id=stops, pad_token_id=tok.pad_token_id)
        new = res[:, enc["input_ids"].shape[1]:]
        dec = tok.batch_decode(new, skip_special_tokens=True)
        for j in range(len(chunk)):
            out.append(list(dec[j * cfg.n:(j + 1) * cfg.n]))
    return out


def sample_for_rows(model_spec, rows: list[dict], cfg: SamplingConfig, out_path: str | Path | None = None,
                    *, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """Sample for XE-IT ``rows``; each record: prompt messages, reference, kept samples, bookkeeping.
    Rows without xke's metadata (imported ShareGPT) get it inferred; ``system_prompt`` goes first."""
    from .importers import fill_row_metadata, with_system

    rows = [fill_row_metadata(r, i) for i, r in enumerate(rows)]
    prompts = [with_system(r["messages"][:-1], system_prompt) for r in rows]
    samples = generate_samples(model_spec, prompts, cfg)
    recs = []
    for r, ss in zip(rows, samples):
        ref = r["messages"][-1]["content"]
        recs.append({"prompt_id": f"{r['fact_id']}|{r['id']}", "prompt": prompts[len(recs)], "reference": ref,
                     "samples": clean_samples(ss, ref), "n_raw": len(ss), "tgt_lang": r["tgt_lang"],
                     "src_lang": r["src_lang"], "section": r["section"], "scope": r["scope"],
                     "with_edit": r["with_edit"], "fact_id": r["fact_id"]})
    if out_path is not None:
        p = Path(out_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in recs:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        tmp.replace(p)
    return recs
