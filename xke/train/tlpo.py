"""TL-PO: target-language preference optimisation (ORPO by default; DPO, CPO, KTO selectable).

Pairs (:func:`build_pairs`) from scored samples:

- the reference (chosen) against flawed samples (rejected): samples scoring
  below ``flaw_threshold`` times the reference's score (the paper's "flawed
  outputs ... and the ground truth in the target language");
- sample pairs with distinct scores (higher chosen, lower rejected) when the
  gap is at least ``min_gap``.

Pairs are split by PROMPT into train / validation. Training goes through TRL
(``ORPOTrainer``/``CPOTrainer`` from ``trl.experimental``, ``DPOTrainer``,
``KTOTrainer``) with ``beta`` actually passed and ``max_length`` set; pairs
that would be truncated are counted and reported (and dropped by default).
"""

from __future__ import annotations

import hashlib
import os
import json
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, XkeError

ALGOS = ("orpo", "dpo", "cpo", "kto")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO/CPO live in trl.experimental in TRL 1.x


@dataclass
class TlpoConfig:
    """TL-PO options (section ``tlpo`` of the train presets)."""

    algo: Literal["orpo", "dpo", "cpo", "kto"] = "orpo"
    beta: float = 0.1
    learning_rate: float = 1e-6
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 1024
    warmup_steps: float = 100
    weight_decay: float = 0.05
    lr_scheduler_type: str = "cosine"
    optim: str = "adamw_torch"
    on_overlength: Literal["drop", "truncate", "error"] = "drop"
    # pairs
    flaw_threshold: float = 0.999
    min_gap: float = 0.1
    max_rejected_per_prompt: int = 2
    max_sample_pairs_per_prompt: int = 2
    val_fraction: float = 0.05
    seed: int = 0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    merge_lora: bool = True
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    logging_steps: int = 10

    def validate(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"tlpo.algo must be one of {list(ALGOS)}")
        if self.beta <= 0:
            raise ValueError("tlpo.beta must be > 0")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("tlpo.val_fraction must be in [0, 1)")
        if self.max_length < 8:
            raise ValueError("tlpo.max_length is too small")


# ----------------------------------------------------------------------------- pairs


def build_pairs(records: list[dict], cfg: TlpoConfig) -> list[dict[str, Any]]:
    """Preference pairs (conversational: ``prompt`` messages, ``chosen``/``rejected`` assistant turns)."""
    pairs = []
    for rec in records:
        ref, ref_score = rec["reference"], rec.get("reference_score")
        scored = sorted(zip(rec["samples"], rec.get("scores") or []), key=lambda x: -x[1])
        if ref_score is None or not scored:
            continue
        base = {"prompt": rec["prompt"], "prompt_id": rec["prompt_id"], "tgt_lang": rec["tgt_lang"],
                "src_lang": rec["src_lang"], "section": rec["section"], "scope": rec["scope"]}
        flawed = [(s, sc) for s, sc in scored if sc < cfg.flaw_threshold * ref_score]
        # the most plausible flawed samples first: the model's most likely mistakes
        for s, sc in flawed[: cfg.max_rejected_per_prompt]:
            pairs.append({**base, "chosen": [{"role": "assistant", "content": ref}],
                          "rejected": [{"role": "assistant", "content": s}], "kind": "reference",
                          "chosen_score": ref_score, "rejected_score": sc})
        n = 0
        for i in range(len(scored)):
            for j in range(len(scored) - 1, i, -1):
                if n >= cfg.max_sample_pairs_per_prompt:
                    break
                (a, sa), (b, sb) = scored[i], scored[j]
                if sa - sb >= cfg.min_gap:
                    pairs.append({**base, "chosen": [{"role": "assistant", "content": a}],
                                  "rejected": [{"role": "assistant", "content": b}], "kind": "samples",
                                  "chosen_score": sa, "rejected_score": sb})
                    n += 1
    return pairs


def split_pairs(pairs: list[dict], fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train / validation split by prompt (all pairs of a prompt on one side)."""
    train, val = [], []
    for p in pairs:
        h = int(hashlib.sha256(f"{seed}:{p['prompt_id']}".encode()).hexdigest()[:8], 16)
        (val if fraction > 0 and (h % 10_000) < fraction * 10_000 else train).append(p)
    return train, val


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_jsonl_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(l) for l in fh if l.strip()]


def pair_stats(pairs: list[dict]) -> dict[str, Any]:
    from collections import Counter

    return {"pairs": len(pairs), "prompts": len({p["prompt_id"] for p in pairs}),
            "by_kind": dict(Counter(p["kind"] for p in pairs)),
            "by_section": dict(Counter(p["section"] for p in pairs))}


# ----------------------------------------------------------------------------- lengths


def pair_lengths(tokenizer, pair: dict) -> tuple[int, int]:
    from .xeit import row_length

    return (row_length(tokenizer, pair["prompt"] + pair["chosen"]),
            row_length(tokenizer, pair["prompt"] + pair["rejected"]))


def check_pair_lengths(pairs: list[dict], tokenizer, max_length: int, policy: str) -> tuple[list[dict], dict]:
    """Count pairs whose prompt + chosen/rejected exceed ``max_length``; warn, then drop/keep/refuse."""
    over = []
    longest = 0
    for i, p in enumerate(pairs):
        a, b = pair_lengths(tokenizer, p)
        longest = max(longest, a, b)
        if max(a, b) > max_length:
            over.append(i)
    info = {"pairs": len(pairs), "over_max_length": len(over), "max_seen": longest}
    if over:
        msg = f"TL-PO: {len(over)} of {len(pairs)} pairs exceed max_length={max_length} tokens (longest {longest})"
        if policy == "error":
            raise ConfigError(msg + "; raise tlpo.max_length")
        if policy == "drop":
            warnings.warn(msg + "; they are DROPPED", stacklevel=2)
            bad = set(over)
            pairs = [p for i, p in enumerate(pairs) if i not in bad]
        else:
            warnings.warn(msg + "; they will be TRUNCATED", stacklevel=2)
    return pairs, info


# ----------------------------------------------------------------------------- training


def _to_dataset(pairs: list[dict], algo: str):
    from datasets import Dataset

    if algo == "kto":  # unpaired: each chosen is desirable, each rejected undesirable (deduplicated)
        seen, recs = set(), []
        for p in pairs:
            for key, label in (("chosen", True), ("rejected", False)):
                k = (json.dumps(p["prompt"], ensure_ascii=False), p[key][0]["content"], label)
                if k in seen:
                    continue
                seen.add(k)
                recs.append({"prompt": p["prompt"], "completion": p[key], "label": label})
        return Dataset.from_list(recs)
    return Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                              for p in pairs])


def make_po_trainer(model, tokenizer, train_pairs: list[dict], val_pairs: list[dict] | None, cfg: TlpoConfig,
                    out_dir: str | Path):
    """The TRL trainer for ``cfg.algo`` with ``beta`` and ``max_length`` passed."""
    from .xeit import _device_kind, _use_bf16

    common = dict(output_dir=str(out_dir), learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
                  max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
                  gradient_accumulation_steps=cfg.gradient_accumulation_steps, warmup_steps=cfg.warmup_steps,
                  weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler_type, optim=cfg.optim,
                  bf16=_use_bf16(cfg.bf16), fp16=False, seed=cfg.seed, logging_steps=cfg.logging_steps,
                  save_strategy="no", report_to="none", use_cpu=_device_kind() == "cpu",
                  gradient_checkpointing=cfg.gradient_checkpointing, max_length=cfg.max_length, beta=cfg.beta)
    if cfg.algo == "orpo":
        from trl.experimental.orpo import ORPOConfig as C, ORPOTrainer as T
    elif cfg.algo == "cpo":
        from trl.experimental.cpo import CPOConfig as C, CPOTrainer as T
    elif cfg.algo == "dpo":
        from trl import DPOConfig as C, DPOTrainer as T
    else:
        from trl import KTOConfig as C, KTOTrainer as T
    if cfg.algo in ("orpo", "cpo"):
        common["remove_unused_columns"] = False
    with warnings.catch_warnings():  # transformers 5 renames gradient_checkpointing; TRL still defaults it on
        warnings.simplefilter("ignore", FutureWarning)
        args = C(**common)
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = T(model=model, args=args, train_dataset=_to_dataset(train_pairs, cfg.algo),
                eval_dataset=_to_dataset(val_pairs, cfg.algo) if val_pairs else None,
                processing_class=tokenizer, peft_config=peft_config)
    if getattr(trainer, "beta", cfg.beta) != cfg.beta:  # the released code read beta and never passed it
        raise XkeError(f"TL-PO: trainer beta {trainer.beta} != configured {cfg.beta}")
    return trainer


def train_tlpo(model_spec: str, pairs_dir: str | Path, out_dir: str | Path, cfg: TlpoConfig, *,
               system_prompt: str | None = None) -> dict[str, Any]:
    """Preference-optimise ``model_spec`` on ``pairs_dir/{train,validation}.jsonl``; save to ``out_dir``.

    ``pairs_dir`` may also hold the released layout ``{prompt, choice, reject, score-diff}``
    (``NAME-train.json`` [+ ``NAME-dev.json``], or one such file): :func:`xke.train.importers.load_pairs`.
    ``system_prompt`` is put first in every pair's prompt."""
    import torch

    from .importers import load_pairs, with_system
    from .xeit import load_for_training, save_trained

    pairs_dir, out = Path(pairs_dir), Path(out_dir)
    train_pairs, val_pairs, layout = load_pairs(pairs_dir)
    train_pairs = [dict(p, prompt=with_system(p["prompt"], system_prompt)) for p in train_pairs]
    val_pairs = [dict(p, prompt=with_system(p["prompt"], system_prompt)) for p in val_pairs]
    if not train_pairs:
        raise XkeError(f"{pairs_dir}/train.jsonl has no pairs (every sample matched the reference?)")
    model, tok, _ = load_for_training(model_spec)
    tok.padding_side = "left" if cfg.algo in ("dpo", "kto") else "right"
    train_pairs, len_info = check_pair_lengths(train_pairs, tok, cfg.max_length, cfg.on_overlength)
    val_pairs, _ = check_pair_lengths(val_pairs, tok, cfg.max_length, "drop") if val_pairs else ([], {})
    trainer = make_po_trainer(model, tok, train_pairs, val_pairs or None, cfg, out / "checkpoints")
    cpu0, t0 = time.process_time(), time.perf_counter()
    res = trainer.train()
    metrics: dict[str, Any] = {
        "algo": cfg.algo, "beta": cfg.beta, "pairs": len(train_pairs), "validation_pairs": len(val_pairs),
        "pairs_layout": layout,
        "over_max_length": len_info["over_max_length"], "overlength_policy": cfg.on_overlength,
        "train_loss": round(float(res.training_loss), 5), "steps": res.global_step,
        "train_seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - cpu0, 2),
        "threads": torch.get_num_threads(),
    }
    if val_pairs:
        ev = trainer.evaluate()
        metrics["eval"] = {k: round(float(v), 5) for k, v in ev.items() if isinstance(v, (int, float))}
    save_trained(trainer, tok, out, merge_lora=cfg.lora and cfg.merge_lora)
    metrics["config"] = asdict(cfg)
    (out / "tlpo_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def make_pairs_dir(records: list[dict], out_dir: str | Path, cfg: TlpoConfig) -> dict[str, Any]:
    """Build pairs from scored records, split by prompt, write ``train.jsonl``/``validation.jsonl``/``stats.json``."""
    out = Path(out_dir)
    pairs = build_pairs(records, cfg)
    train, val = split_pairs(pairs, cfg.val_fraction, cfg.seed)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(val, out / "validation.jsonl")
    stats = {"train": pair_stats(train), "validation": pair_stats(val),
             "records": len(records), "records_with_samples": sum(1 for r in records if r["samples"])}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def shuffle(xs: list, seed: int) -> list:
    xs = list(xs)
    random.Random(seed).shuffle(xs)
    return xs
