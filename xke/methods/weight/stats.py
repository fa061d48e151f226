"""Second-moment statistics ``C = E[k kᵀ]`` of MLP keys (inputs of the MLP output projection).

ROME uses ``C⁻¹`` to shape its rank-one update, MEMIT/PMET regularise with ``λC``, AlphaEdit
projects onto the null space of ``C``. EasyEdit computes them from a Wikipedia download, one data
pass per layer, cached under a key that ignores the corpus and the checkpoint. Here:

- the corpus is local and named by the user (``stats_corpus``): a text file (one sample per
  non-empty line), a JSONL file (``"text"`` field per line) or a Hugging Face ``datasets`` dataset
  saved with ``save_to_disk`` (``"text"`` column); a model's provider may fill it (the toy
  world gives its ``corpus.txt``). Nothing is ever downloaded;
- texts are streamed; every requested layer is accumulated in one pass over the corpus;
- each layer's result is cached under ``cache_dir("stats", key)`` where the key hashes the model's
  weights, the module name, the corpus content, the sample count, the maximum length and the dtype.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import torch

from ...errors import ConfigError
from ...paths import cache_dir
from .hooks import capture

STATS_VERSION = "1"


# --- hashes -----------------------------------------------------------------------------------
def model_weight_hash(model: torch.nn.Module, sample: int = 4096) -> str:
    """A fingerprint of the model's weights: names, shapes, dtypes and a strided sample of every tensor
    (plus each tensor's sum), cheap even for 7B models."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            stride = max(1, flat.numel() // sample)
            part = flat[::stride][:sample].float().cpu()
            h.update(f"{name}|{tuple(p.shape)}|{p.dtype}|{float(flat.float().sum()):.8e}".encode())
            h.update(part.numpy().tobytes())
    return h.hexdigest()[:20]


def corpus_hash(path: str | Path) -> str:
    """SHA-256 of the corpus content (a file, or every file of a dataset directory)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:20]


def _corpus_stamp(p: Path) -> str:
    """Size and modification time of a corpus file (or of every file of a dataset directory)."""
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return "|".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def stats_key(weight_hash: str, module_name: str, corpus_digest: str, n_samples: int, max_length: int,
              dtype: str) -> str:
    """The cache key of one layer's statistics."""
    raw = json.dumps([STATS_VERSION, weight_hash, module_name, corpus_digest, n_samples, max_length, dtype])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


# --- corpus -----------------------------------------------------------------------------------
HOW_TO_GIVE = ("name a local corpus in the method config, e.g. `stats_corpus: /data/wiki.txt` "
               "(a text file with one sample per line, a JSONL file with a 'text' field, or a `datasets` "
               "dataset saved with save_to_disk), or turn the statistics off with `mom2_adjustment: false` "
               "(ROME/MEMIT/PMET; AlphaEdit needs them). xke never downloads a corpus.")


def resolve_corpus(model: torch.nn.Module, stats_corpus: str | None) -> Path:
    """The corpus to use: ``stats_corpus``; a clear error when it is unset or missing."""
    if stats_corpus:
        p = Path(stats_corpus).expanduser()
        if not p.exists():
            raise ConfigError(f"stats_corpus {str(p)!r} does not exist; {HOW_TO_GIVE}")
        return p
    raise ConfigError(f"no corpus for the key statistics of this model; {HOW_TO_GIVE}")


def iter_corpus(path: str | Path) -> Iterator[str]:
    """Stream the texts of a corpus (see module docstring)."""
    p = Path(path)
    if p.is_dir():
        try:
            from datasets import load_from_disk
        except ImportError as e:  # pragma: no cover
            raise ConfigError(f"{p} is a directory but the `datasets` package is missing") from e
        try:
            ds = load_from_disk(str(p))
        except Exception as e:
            raise ConfigError(f"{p}: not a dataset saved with save_to_disk ({e})") from e
        if isinstance(getattr(ds, "column_names", None), dict):  # a DatasetDict: take train (or the first split)
            split = "train" if "train" in ds else list(ds.keys())[0]
            ds = ds[split]
        if "text" not in ds.column_names:
            raise ConfigError(f"{p}: dataset has no 'text' column (columns: {ds.column_names})")
        for row in ds:
            if row["text"]:
                yield row["text"]
        return
    jsonl = p.suffix in (".jsonl", ".json")
    with open(p, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if jsonl:
                try:
                    text = json.loads(line).get("text")
                except (json.JSONDecodeError, AttributeError) as e:
                    raise ConfigError(f"{p}, line {i}: not a JSON object with a 'text' field ({e})") from e
                if text:
                    yield text
            else:
                yield line


# --- computation ------------------------------------------------------------------------------
_DT = {"float32": torch.float32, "float64": torch.float64}


def second_moments(model: torch.nn.Module, tokenizer, module_names: list[str], *, corpus: str | Path,
                   n_samples: int, max_length: int = 256, batch_size: int = 16, dtype: str = "float32",
                   weight_hash: str | None = None, progress: bool = True,
                   memory: dict | None = None) -> dict[str, torch.Tensor]:
    """``E[k kᵀ]`` of the input of each module in ``module_names`` over up to ``n_samples`` corpus texts.

    Returns ``{module name: [d, d] float32 tensor on CPU}``. Layers already cached on disk (or in
    ``memory``, a per-method dict) are loaded; the others are computed together in one pass. ``memory``
    also remembers the corpus hash while the corpus file's size and modification time are unchanged, so
    repeated edits do not re-read a large corpus.
    """
    from safetensors.torch import load_file, save_file

    if dtype not in _DT:
        raise ConfigError(f"mom2_dtype must be one of {list(_DT)}, got {dtype!r}")
    corpus = Path(corpus)
    wh = weight_hash or model_weight_hash(model)
    stamp = f"corpus-hash|{_corpus_stamp(corpus)}"
    ch = memory.get(stamp) if memory is not None else None
    if ch is None:
        ch = corpus_hash(corpus)
        if memory is not None:
            memory[stamp] = ch
    keys = {n: stats_key(wh, n, ch, n_samples, max_length, dtype) for n in module_names}
    out: dict[str, torch.Tensor] = {}
    todo = []
    for n, k in keys.items():
        if memory is not None and k in memory:
            out[n] = memory[k]
            continue
        f = cache_dir("stats", k) / "mom2.safetensors"
        if f.exists():
            out[n] = load_file(str(f))["mom2"]
        else:
            todo.append(n)
    if todo:
        computed, count = _accumulate(model, tokenizer, todo, corpus, n_samples, max_length, batch_size,
                                      _DT[dtype], progress)
        for n in todo:
            d = cache_dir("stats", keys[n])
            save_file({"mom2": computed[n].contiguous()}, str(d / "mom2.safetensors"))
            (d / "meta.json").write_text(json.dumps({
                "module": n, "corpus": str(corpus), "corpus_hash": ch, "weight_hash": wh,
                "n_samples": n_samples, "max_length": max_length, "dtype": dtype, "tokens": count}))
            out[n] = computed[n]
    if memory is not None:
        for n in module_names:
            memory[keys[n]] = out[n]
    return out


def _accumulate(model, tokenizer, names, corpus, n_samples, max_length, batch_size, dt, progress):
    from tqdm.auto import tqdm

    dev = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    count = 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def run(batch_ids):
        nonlocal count
        L = max(len(x) for x in batch_ids)
        ids = torch.full((len(batch_ids), L), pad, dtype=torch.long)
        mask = torch.zeros((len(batch_ids), L), dtype=torch.long)
        for i, x in enumerate(batch_ids):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        flat_mask = mask.reshape(-1).bool()
        with torch.no_grad(), capture(model, names, inputs=True, outputs=False) as cap:
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        for n in names:
            k = cap[n].input
            k = k.reshape(-1, k.shape[-1])[flat_mask].to(dt)
            s = k.T @ k
            sums[n] = s if n not in sums else sums[n] + s
        count += int(flat_mask.sum())

    batch: list[list[int]] = []
    bar = tqdm(total=n_samples, desc=f"key statistics ({len(names)} layer(s), {corpus.name})", disable=not progress,
               leave=False)
    seen = 0
    for text in iter_corpus(corpus):
        if seen >= n_samples:
            break
        ids = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
        if not ids:
            continue
        batch.append(list(ids))
        seen += 1
        if len(batch) == batch_size:
            run(batch)
            bar.update(len(batch))
            batch = []
    if batch:
        run(batch)
        bar.update(len(batch))
    bar.close()
    if count == 0:
        raise ConfigError(f"corpus {corpus} yielded no text for the key statistics")
    return {n: (s / count).float().cpu() for n, s in sums.items()}, count
