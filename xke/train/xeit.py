"""XE-IT: cross-lingual edit instruction tuning with TRL's ``SFTTrainer``.

Loss is computed on answer tokens only. With a chat template that marks
assistant turns (``{% generation %}``), TRL's ``assistant_only_loss`` masks
everything but them; otherwise each row becomes a conversational
prompt/completion pair and ``completion_only_loss`` masks the prompt. The
model's own chat template renders every row (the very text X-KDE inference
reads). LoRA (PEFT) or full fine-tuning; packing optional.

Rows longer than ``max_length`` would be truncated by TRL and lose their
answer, so they are counted, reported and dropped (``on_overlength``).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, XkeError
from ..models.prompts import chat_kwargs


@dataclass
class XeitConfig:
    """XE-IT (SFT) options. Presets: ``xke/configs/train/{toy,paper,release}.yaml`` (section ``xeit``)."""

    learning_rate: float = 1e-5
    num_train_epochs: float = 5.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 2560
    warmup_steps: float = 0.05          # >= 1: steps; < 1: ratio of the total
    weight_decay: float = 1e-4
    lr_scheduler_type: str = "cosine"
    #: ``random`` (default), ``group_by_length`` (batches of similar length: less padding) or
    #: ``sequential`` (file order, e.g. for a curriculum)
    train_sampling_strategy: Literal["random", "group_by_length", "sequential"] = "random"
    optim: str = "adamw_torch"
    max_grad_norm: float = 1.0
    packing: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None   # default: all linear layers
    merge_lora: bool = True
    gradient_checkpointing: bool = False
    bf16: bool | None = None            # None: bf16 on a CUDA device that supports it
    seed: int = 0
    logging_steps: int = 10
    eval: bool = True                   # evaluate loss on the validation file at the end
    save_strategy: Literal["no", "epoch", "steps"] = "no"
    save_steps: int = 500
    max_rows: int | None = None
    on_overlength: Literal["drop", "truncate", "error"] = "drop"
    dataloader_num_workers: int = 0
    peak_tflops: float | None = None    # for MFU; None: guessed from the GPU name
    #: chat templates with a reasoning switch (Qwen3): render rows with thinking mode on (default off)
    thinking: bool = False

    def validate(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError("xeit.learning_rate must be > 0")
        if self.max_length < 8:
            raise ValueError("xeit.max_length is too small")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise ValueError("xeit: set num_train_epochs > 0 or max_steps > 0")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("xeit: batch size and gradient accumulation must be >= 1")
        if self.train_sampling_strategy not in ("random", "group_by_length", "sequential"):
            raise ValueError(f"xeit.train_sampling_strategy: {self.train_sampling_strategy!r} is not random, "
                             "group_by_length or sequential")


def has_generation_markers(tokenizer) -> bool:
    tpl = getattr(tokenizer, "chat_template", None) or ""
    return "{% generation %}" in tpl or "{%- generation %}" in tpl or "generation -%}" in tpl


def require_chat_template(tokenizer, what: str = "X-KDE training") -> None:
    """A clear :class:`XkeError` when ``tokenizer`` has no chat template (a base model)."""
    if not getattr(tokenizer, "chat_template", None):
        raise XkeError(f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has no chat template (a base "
                       f"model?); {what} renders every row and prompt with the model's own chat template. Use an "
                       "instruct/chat model, or add a 'chat_template' to its tokenizer_config.json")


def to_sft_records(rows: list[dict], tokenizer, thinking: bool = False) -> tuple[list[dict], str]:
    """(records, mode): ``messages`` records for assistant-only loss, else prompt/completion records; each
    carries the ``chat_template_kwargs`` TRL renders it with (``enable_thinking``, off unless ``thinking``)."""
    require_chat_template(tokenizer)
    kw = {"chat_template_kwargs": chat_kwargs(thinking)}
    if has_generation_markers(tokenizer):
        return [{"messages": r["messages"], **kw} for r in rows], "assistant_only"
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:], **kw} for r in rows], "completion_only"


def row_length(tokenizer, messages: list[dict], thinking: bool = False) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False, **chat_kwargs(thinking))
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def check_lengths(rows: list[dict], tokenizer, max_length: int, policy: str, what: str = "XE-IT"
                  ) -> tuple[list[dict], dict[str, int]]:
    """Drop / keep / refuse rows longer than ``max_length``; warn with counts."""
    lengths = [row_length(tokenizer, r["messages"]) for r in rows]
    over = [i for i, n in enumerate(lengths) if n > max_length]
    info = {"rows": len(rows), "over_max_length": len(over), "max_seen": max(lengths) if lengths else 0,
            "tokens": int(sum(lengths))}
    if over:
        msg = (f"{what}: {len(over)} of {len(rows)} rows are longer than max_length={max_length} tokens "
               f"(longest {info['max_seen']})")
        if policy == "error":
            raise ConfigError(msg + "; raise max_length or shorten the data")
        if policy == "drop":
            warnings.warn(msg + "; they are DROPPED (set on_overlength: truncate to keep them truncated)",
                          stacklevel=2)
            keep = set(range(len(rows))) - set(over)
            rows = [r for i, r in enumerate(rows) if i in keep]
            info["tokens"] = int(sum(n for i, n in enumerate(lengths) if i in keep))
        else:
            warnings.warn(msg + "; they will be TRUNCATED (answers may be cut)", stacklevel=2)
    return rows, info


def _device_kind() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _use_bf16(flag: bool | None) -> bool:
    import torch

    if flag is not None:
        return bool(flag) and torch.cuda.is_available()
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def guess_peak_tflops() -> float | None:
    """Dense bf16 peak of the current GPU (for model FLOPs utilisation), when known."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0).lower()
    for key, val in (("h200", 989.0), ("h100", 989.0), ("a100", 312.0), ("l40", 181.0), ("a10", 125.0),
                     ("4090", 165.0), ("v100", 125.0)):
        if key in name:
            return val
    return None


def load_for_training(model_spec: str, dtype: str = "auto"):
    """(model, tokenizer, path) in train mode, right padding for training."""
    from ..models.loading import load_model

    lm = load_model(model_spec, dtype="float32" if _device_kind() == "cpu" else dtype, device="auto")
    tok = lm.tokenizer
    tok.padding_side = "right"
    lm.model.train()
    return lm.model, tok, lm.path


def _lora_config(cfg: XeitConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules or "all-linear", task_type="CAUSAL_LM")


def build_sft_trainer(model, tokenizer, train_rows: list[dict], val_rows: list[dict] | None, cfg: XeitConfig,
                      out_dir: str | Path):
    """The TRL ``SFTTrainer`` for XE-IT (answer-only loss); returns (trainer, mode)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    train_recs, mode = to_sft_records(train_rows, tokenizer, cfg.thinking)
    val_recs = to_sft_records(val_rows, tokenizer, cfg.thinking)[0] if val_rows else None
    bf16 = _use_bf16(cfg.bf16)
    kwargs = dict(
        output_dir=str(out_dir), learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_length=cfg.max_length,
        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler_type,
        optim=cfg.optim, max_grad_norm=cfg.max_grad_norm, packing=cfg.packing,
        train_sampling_strategy=cfg.train_sampling_strategy,
        packing_strategy="bfd_split" if cfg.packing else "bfd",
        assistant_only_loss=(mode == "assistant_only"), completion_only_loss=(mode == "completion_only") or None,
        gradient_checkpointing=cfg.gradient_checkpointing, bf16=bf16, fp16=False, seed=cfg.seed,
        logging_steps=cfg.logging_steps, save_strategy=cfg.save_strategy, save_steps=cfg.save_steps,
        report_to="none", use_cpu=_device_kind() == "cpu", dataloader_num_workers=cfg.dataloader_num_workers,
        eval_strategy="no", disable_tqdm=os.environ.get("XKE_NO_PROGRESS") == "1",
        padding_free=False,
    )
    with warnings.catch_warnings():  # transformers 5 renames gradient_checkpointing; TRL still defaults it on
        warnings.simplefilter("ignore", FutureWarning)
        args = SFTConfig(**kwargs)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_recs),
                         eval_dataset=Dataset.from_list(val_recs) if val_recs else None,
                         processing_class=tokenizer, peft_config=_lora_config(cfg) if cfg.lora else None)
    return trainer, mode


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def train_xeit(model_spec: str, data_dir: str | Path, out_dir: str | Path, cfg: XeitConfig, *,
               system_prompt: str | None = None) -> dict[str, Any]:
    """Run XE-IT on ``data_dir/train.jsonl`` (+ ``validation.jsonl``) and save the model in ``out_dir``.

    ``data_dir`` may also be a ShareGPT / conversations JSON file (the X-KDE release, LTE) or a folder
    holding one (:func:`xke.train.importers.load_xeit_rows`). ``system_prompt`` is put first in every row.
    Returns metrics (losses, tokens, tokens/s, MFU on GPU, CPU seconds), also
    written to ``out_dir/xeit_metrics.json``.
    """
    import torch

    from .importers import load_xeit_rows, with_system

    data_dir, out = Path(data_dir), Path(out_dir)
    if data_dir.is_dir() and not (data_dir / "train.jsonl").exists() and not any(data_dir.glob("*.json")):
        raise XkeError(f"{data_dir}: no train.jsonl (build it with `xke data build-xeit`) and no ShareGPT *.json")
    rows, val_rows = load_xeit_rows(data_dir)
    rows = [dict(r, messages=with_system(r["messages"], system_prompt)) for r in rows]
    val_rows = [dict(r, messages=with_system(r["messages"], system_prompt)) for r in val_rows]
    if cfg.max_rows is not None:
        rows = rows[: cfg.max_rows]
    model, tok, path = load_for_training(model_spec)
    rows, len_info = check_lengths(rows, tok, cfg.max_length, cfg.on_overlength)
    val_rows, _ = check_lengths(val_rows, tok, cfg.max_length, "drop", "XE-IT validation") if val_rows else ([], {})
    trainer, mode = build_sft_trainer(model, tok, rows, val_rows if cfg.eval else None, cfg, out / "checkpoints")
    n_params = count_params(model)
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    epochs = cfg.num_train_epochs
    if cfg.max_steps and cfg.max_steps > 0:
        steps_per_epoch = max(1, math.ceil(len(rows) / (cfg.per_device_train_batch_size
                                                       * cfg.gradient_accumulation_steps)))
        epochs = cfg.max_steps / steps_per_epoch
    tokens_seen = len_info["tokens"] * epochs
    metrics: dict[str, Any] = {
        "mode": mode, "rows": len(rows), "validation_rows": len(val_rows), "dropped_over_max_length":
        len_info["over_max_length"] if cfg.on_overlength == "drop" else 0,
        "truncated_over_max_length": len_info["over_max_length"] if cfg.on_overlength == "truncate" else 0,
        "params": n_params, "train_loss": round(float(result.training_loss), 5), "steps": result.global_step,
        "train_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "threads": torch.get_num_threads(),
        "tokens": int(tokens_seen), "tokens_per_s": round(tokens_seen / wall, 1) if wall > 0 else None,
        "device": _device_kind(),
    }
    peak = cfg.peak_tflops or guess_peak_tflops()
    if peak and wall > 0:
        metrics["mfu"] = round(6 * n_params * tokens_seen / wall / (peak * 1e12), 4)
        metrics["peak_tflops"] = peak
    if cfg.eval and val_rows:
        ev = trainer.evaluate()
        metrics["eval_loss"] = round(float(ev.get("eval_loss", float("nan"))), 5)
    save_trained(trainer, tok, out, merge_lora=cfg.lora and cfg.merge_lora)
    metrics["config"] = asdict(cfg)
    (out / "xeit_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def save_trained(trainer, tokenizer, out: Path, *, merge_lora: bool) -> None:
    """Save the trained model (LoRA merged when asked) + tokenizer, ready for ``--model DIR``.

    Uses ``trainer.save_model`` (which gathers FSDP / DeepSpeed ZeRO-3 shards) unless
    LoRA adapters are merged into the base weights first."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    tokenizer.padding_side = "left"
    model = trainer.model
    if merge_lora and hasattr(model, "merge_and_unload"):
        merged = model.merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(out, safe_serialization=True)
    else:
        trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(out)
        ck = out / "checkpoints"
        if ck.exists() and not any(ck.iterdir()):
            shutil.rmtree(ck, ignore_errors=True)
