"""Building a toy world: generator → corpus → tokenizer → pretraining → report.

:func:`build_world` writes, into one directory::

    world.json    the generated world (entities, facts, splits)
    cases.jsonl   counterfactual edit cases, one EditCase.to_json() per line (meta.split marks held-out subjects)
    corpus.txt    a few thousand lines of world text (stats corpus for weight-editing methods)
    model/        Llama weights (safetensors), config ("xke_world": true) and tokenizer with chat template
    report.json   {"params", "cpu_seconds", "threads", "recall": {lang: {"train_templates", "heldout_templates"}},
                   "reading": {lang}, "seed", "preset", ...}   (percent, two decimals)

Builds are cached by a hash of the arguments (preset values, overrides,
seed, languages and the builder version): the same arguments reuse the
directory. Concurrent builders of the same world wait on a file lock and the
directory appears atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import from_dict, load_preset
from ..data.languages import parse_langs
from ..errors import XkeError
from ..paths import cache_dir

#: bump when the generator, corpus or training changes in a way that changes the output
BUILDER_VERSION = 3


@dataclass
class WorldConfig:
    """Options of a world build (presets in ``xke/configs/world/*.yaml``)."""

    langs: list[str] = field(default_factory=lambda: ["en", "zh"])
    # world size
    n_countries: int = 12
    cities_per_country: int = 3
    n_companies: int = 30
    n_people: int = 150
    latin_person: float = 0.2
    latin_company: float = 0.3
    heldout_fraction: float = 0.2
    cases_per_subject: int = 1
    # tokenizer and model
    vocab_size: int = 1024
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 384
    max_position: int = 512
    # training
    epochs: int = 30
    seq_len: int = 256
    batch_rows: int = 16
    lr: float = 3e-3
    warmup: float = 0.05
    weight_decay: float = 0.01
    # corpus mix per epoch
    qa_per_fact: int = 2
    statements: bool = True
    name_pairs: int = 40
    mixed: int = 40
    reading: int = 300
    reading_cross: float = 0.3
    reading_counterfactual: float = 0.25
    reading_follow_ups: int = 2
    two_hop: bool = False
    # evaluation and outputs
    reading_eval: int = 200
    corpus_lines: int = 5000

    def validate(self) -> None:
        parse_langs(self.langs)
        for k in ("n_countries", "cities_per_country", "n_companies", "n_people", "vocab_size", "d_model",
                  "n_layers", "n_heads", "d_ff", "epochs", "seq_len", "batch_rows", "qa_per_fact"):
            if getattr(self, k) <= 0:
                raise ValueError(f"{k} must be positive, got {getattr(self, k)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 1 <= self.qa_per_fact <= 6:
            raise ValueError("qa_per_fact must be between 1 and 6 (the number of training question forms)")
        for k in ("latin_person", "latin_company", "heldout_fraction", "reading_cross", "reading_counterfactual"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must be within [0, 1], got {getattr(self, k)}")
        if self.n_countries < 2 or self.n_people < 4 or self.n_companies < 2:
            raise ValueError("the world needs at least 2 countries, 2 companies and 4 people")


def load_world_config(preset: str = "tiny", overrides: dict[str, Any] | None = None) -> WorldConfig:
    """The preset's config with ``overrides`` applied, validated."""
    data = load_preset("world", preset)
    data.update(overrides or {})
    return from_dict(WorldConfig, data, source=f"world preset {preset!r}")


def build_key(cfg: WorldConfig, seed: int, preset: str) -> str:
    blob = json.dumps({"cfg": dataclasses.asdict(cfg), "seed": seed, "preset": preset, "v": BUILDER_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def world_model_dir(world_dir: str | Path) -> Path:
    """The model directory inside a built world directory (a clear error when it is not one)."""
    d = Path(world_dir).expanduser()
    if (d / "config.json").exists() and (d.parent / "world.json").exists():
        return d  # already the model dir
    m = d / "model"
    if not (m / "config.json").exists():
        raise XkeError(f"{d} is not a built world (no model/config.json); build one with `xke world build --out {d}`")
    return m


def _is_complete(d: Path, key: str) -> bool:
    try:
        return json.loads((d / "build.json").read_text())["key"] == key and (d / "report.json").exists()
    except (OSError, ValueError, KeyError):
        return False


def build_world(preset: str = "tiny", seed: int = 0, langs: str | list[str] | None = None,
                out: str | Path | None = None, *, threads: int | None = None, overrides: dict[str, Any] | None = None,
                force: bool = False, verbose: bool = False) -> Path:
    """Build (or reuse) a world and return its directory.

    ``langs`` overrides the preset's languages (``"en,zh,de,fr"``); ``threads``
    sets torch's CPU threads for the build (default 1: on shared machines one
    thread is usually fastest; the count is written into report.json).
    """
    ov = dict(overrides or {})
    if langs is not None:
        ov["langs"] = parse_langs(langs)
    cfg = load_world_config(preset, ov)
    key = build_key(cfg, seed, preset)
    if out is None:
        out = cache_dir("world") / f"{preset}-s{seed}-{'-'.join(cfg.langs)}-{key[:10]}"
    out = Path(out).expanduser()
    if not force and _is_complete(out, key):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not force and _is_complete(out, key):
                return out
            if out.exists() and any(out.iterdir()) and not (out / "build.json").exists():
                raise XkeError(f"{out} exists and is not a world directory; choose another --out")
            tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            try:
                _build_into(tmp, cfg, seed, preset, key, threads, verbose)
                if out.exists():
                    shutil.rmtree(out)
                os.replace(tmp, out)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


def _build_into(d: Path, cfg: WorldConfig, seed: int, preset: str, key: str, threads: int | None,
                verbose: bool) -> None:
    import random

    import numpy as np
    import torch

    from .corpus import CorpusMix, corpus_lines, epoch_examples, tokenizer_training_text
    from .pretrain import build_model, count_params, train
    from .tokenizer import train_tokenizer
    from .world import generate_world

    log = (lambda m: print(f"[world] {m}", file=sys.stderr, flush=True)) if verbose else None
    n_threads = threads or int(os.environ.get("XKE_THREADS", "0") or 0) or 1
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    cpu0 = time.process_time()
    wall0 = time.time()
    try:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        world = generate_world(seed, cfg.langs, n_countries=cfg.n_countries, cities_per_country=cfg.cities_per_country,
                               n_companies=cfg.n_companies, n_people=cfg.n_people, latin_person=cfg.latin_person,
                               latin_company=cfg.latin_company, heldout_fraction=cfg.heldout_fraction,
                               cases_per_subject=cfg.cases_per_subject)
        world.save(d / "world.json")
        cases = world.counterfactual_cases("all")
        with open(d / "cases.jsonl", "w", encoding="utf-8") as fh:
            for c in cases:
                fh.write(c.to_json() + "\n")
        (d / "corpus.txt").write_text("\n".join(corpus_lines(world, cfg.corpus_lines, seed)) + "\n", encoding="utf-8")
        tok = train_tokenizer(tokenizer_training_text(world, seed), cfg.vocab_size)
        model = build_model(tok, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_ff=cfg.d_ff,
                            max_len=cfg.max_position, seed=seed)
        mix = CorpusMix(qa_per_fact=cfg.qa_per_fact, statements=cfg.statements, name_pairs=cfg.name_pairs,
                        mixed=cfg.mixed, reading=cfg.reading, reading_cross=cfg.reading_cross,
                        reading_counterfactual=cfg.reading_counterfactual,
                        reading_follow_ups=cfg.reading_follow_ups, two_hop=cfg.two_hop)
        if log:
            log(f"{len(world.entities)} entities, {len(world.facts)} facts, {len(cases)} cases, "
                f"{count_params(model):,} params, langs {cfg.langs}, threads {n_threads}")
        stats = train(model, tok, lambda ep: epoch_examples(world, mix, ep, seed), epochs=cfg.epochs,
                      seq_len=cfg.seq_len, batch_rows=cfg.batch_rows, lr=cfg.lr, warmup=cfg.warmup,
                      weight_decay=cfg.weight_decay, seed=seed, log=log)
        train_cpu = time.process_time() - cpu0
        recall, reading = evaluate(model, tok, world, cfg, seed)
        cpu = time.process_time() - cpu0
        model_dir = d / "model"
        model.config.xke_world = True
        model.config.xke_world_preset = preset
        model.config.xke_world_seed = seed
        model.save_pretrained(model_dir, safe_serialization=True)
        tok.save_pretrained(model_dir)
        report = {"params": count_params(model), "cpu_seconds": round(cpu, 2), "threads": n_threads,
                  "recall": recall, "reading": reading, "seed": seed, "preset": preset,
                  "langs": cfg.langs, "train_cpu_seconds": round(train_cpu, 2),
                  "wall_seconds": round(time.time() - wall0, 2),
                  "entities": len(world.entities), "facts": len(world.facts), "cases": len(cases),
                  "heldout_cases": sum(c.meta["split"] == "heldout" for c in cases),
                  "train_steps": stats["steps"], "train_tokens": stats["tokens"], "final_loss": stats["loss"][-1]}
        (d / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        (d / "build.json").write_text(json.dumps({"key": key, "preset": preset, "seed": seed,
                                                  "config": dataclasses.asdict(cfg), "builder_version": BUILDER_VERSION},
                                                 indent=1) + "\n")
        if log:
            log(f"recall {recall} reading {reading} cpu {cpu:.1f}s")
    finally:
        torch.set_num_threads(prev_threads)


def evaluate(model, tok, world, cfg: WorldConfig, seed: int) -> tuple[dict, dict]:
    """Recall (greedy exact match) per language on training and held-out question forms, and reading."""
    from .corpus import chat_prompt, reading_eval_items
    from .pretrain import exact_match

    recall: dict[str, dict[str, float]] = {}
    reading: dict[str, float] = {}
    facts = world.all_facts()
    for lang in world.langs:
        row = {}
        for name, held in (("train_templates", False), ("heldout_templates", True)):
            items = [(chat_prompt(world.question(f.subject, f.relation, lang, i, heldout=held)),
                      world.answer(f.subject, f.relation, lang), lang) for i, f in enumerate(facts)]
            ok = exact_match(model, tok, items)
            row[name] = round(100.0 * sum(ok) / len(ok), 2)
        recall[lang] = row
        r_items = [(chat_prompt(u), a, lang) for u, a in reading_eval_items(world, lang, cfg.reading_eval, seed)]
        ok = exact_match(model, tok, r_items)
        reading[lang] = round(100.0 * sum(ok) / len(ok), 2)
    return recall, reading
