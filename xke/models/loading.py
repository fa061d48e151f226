"""Loading local Hugging Face causal LMs.

``--model`` takes a local directory in Hugging Face format, the name of a
built-in tiny config (``tiny-llama``, ``tiny-qwen2``, ...), ``world`` (the
default toy-world model) or ``world:DIR``. Hub ids are refused: weights must
be local. Weights load with safetensors; ``trust_remote_code`` is off unless
asked for.
"""

from __future__ import annotations

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
    if spec == "world" or spec.startswith("world:"):
        from ..world import default_world_model_dir, world_model_dir
        return default_world_model_dir() if spec == "world" else world_model_dir(spec.split(":", 1)[1])
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
                     f"a built-in tiny config ({', '.join(TINY_CONFIGS)}), 'world' or 'world:DIR'.{hint}")


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(spec: str, *, dtype: str = "auto", device: str = "auto",
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM and its tokenizer from a local spec, in eval mode, with a pad token set."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(spec)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt, use_safetensors=None,
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
