"""Loading local Hugging Face causal LMs.

``--model`` takes a local directory in Hugging Face format or the name of a
built-in tiny config (``tiny-llama``, ``tiny-qwen2``, ...); the command line
also takes toy-world specs, which its world provider turns into a model
directory before they get here. Hub ids are refused: weights must be local. Weights load with safetensors only: a directory holding only pickle
checkpoints (``*.bin``, ``*.pt``) is refused unless the caller passes
``allow_pickle=True`` or the user sets ``XKE_ALLOW_PICKLE=1``.
``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    path: Path
    name: str


def resolve_model_path(spec: str) -> Path:
    """The local directory for a model spec (see module docstring)."""
    from .tiny import TINY_CONFIGS, build_tiny_model

    if spec in TINY_CONFIGS:
        return build_tiny_model(spec)
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            inner = [d for d in ("model", "xeit") if (p / d / "config.json").exists()]
            if inner:  # an `xke train tlpo` / `xke train xkde` / `xke train xeit` output directory
                raise ModelError(f"{p} is an xke training output directory, not a model; the trained model is "
                                 f"{p / inner[0]}: pass --model {p / inner[0]}")
            raise ModelError(f"{p} is not a Hugging Face model directory (no config.json)")
        return p
    if p.exists():
        raise ModelError(f"{p} is a file; --model takes a model directory")
    hint = (" It looks like a hub id: xke never downloads weights; download the model elsewhere "
            "and pass its local directory.") if "/" in spec and not spec.startswith((".", "/", "~")) else ""
    raise ModelError(f"model {spec!r} not found: weights must be a local directory in Hugging Face format, "
                     f"a built-in tiny config ({', '.join(TINY_CONFIGS)}) or, on the command line, 'world' or 'world:DIR'.{hint}")


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; any other name is checked: a clear :class:`ModelError`
    for an unknown device, or a CUDA/MPS device this machine does not have."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelError(f"--device {device!r}: unknown device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ModelError(f"--device {device!r}: no CUDA GPU is available here (or torch was built without "
                             "CUDA); use --device cpu or auto")
        if dev.index is not None and dev.index >= n:
            raise ModelError(f"--device {device!r}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ModelError(f"--device {device!r}: MPS is not available here; use --device cpu or auto")
    elif dev.type != "cpu":
        raise ModelError(f"--device {device!r}: xke runs on cpu, cuda or mps, not {dev.type}")
    return dev


def context_length(model, tokenizer=None) -> int | None:
    """The longest sequence the model accepts (``max_position_embeddings`` and similar config fields,
    else the tokenizer's ``model_max_length`` when it is a real limit); ``None`` when unknown."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    return v if isinstance(v, int) and 0 < v < 10**7 else None


def check_weights_format(path: Path, allow_pickle: bool = False) -> bool:
    """Whether ``path`` must be loaded from pickle weights; :class:`ModelError` when it holds only pickle
    checkpoints (``*.bin``, ``*.pt``, ``*.pth``: they can run code when loaded) and that was not asked for."""
    if any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json")):
        return False
    pickles = sorted(p.name for pat in ("*.bin", "*.pt", "*.pth") for p in path.glob(pat))
    if not pickles:
        return False
    if allow_pickle or os.environ.get("XKE_ALLOW_PICKLE") == "1":
        return True
    raise ModelError(f"{path} holds only pickle weights ({', '.join(pickles[:3])}); xke loads safetensors only, "
                     "since a pickle file can run code when loaded. Convert the checkpoint to safetensors, or set "
                     "XKE_ALLOW_PICKLE=1 if you trust it")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(spec: str, *, dtype: str = "auto", device: str = "auto",
               trust_remote_code: bool = False, allow_pickle: bool = False) -> LoadedModel:
    """Load a causal LM and its tokenizer from a local spec, in eval mode, with a pad token set
    (safetensors weights only unless ``allow_pickle``; see :func:`check_weights_format`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    path = resolve_model_path(spec)
    use_pickle = check_weights_format(path, allow_pickle)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, use_safetensors=not use_pickle,
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model from {path}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.to(dev).eval()
    return LoadedModel(model=model, tokenizer=tok, path=path, name=spec)


def cache_argument(model: torch.nn.Module) -> str:
    """The name of the KV-cache argument (and output field) of ``model.forward``: ``cache`` in recent
    transformers 5 releases, ``past_key_values`` before (the old name still works there, with a
    deprecation warning on every call)."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"
