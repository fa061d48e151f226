"""The X-KDE recipe: data -> XE-IT -> sampling -> scoring -> pairs -> TL-PO -> evaluation.

``xke train xkde --model MODEL --source SOURCE --langs en,zh --preset toy --out DIR``.
Each stage writes its output under ``DIR`` and a ``.done-<stage>.json``
marker holding a hash of everything the stage depends on; a rerun skips
stages whose marker matches (so an interrupted run resumes) and redoes a
stage, and the ones after it, when its inputs changed.

Layout of ``DIR``::

    data/        train.jsonl validation.jsonl stats.json     (Table 8)
    xeit/        the XE-IT model + xeit_metrics.json
    samples.jsonl scored.jsonl pairs/{train,validation}.jsonl
    model/       the final X-KDE model (after TL-PO) + README.md (model card)
    eval.json    measured metrics (held-out world edits, or held-out XE-IT rows)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import from_dict, load_preset, read_yaml
from ..data.languages import parse_langs
from ..errors import ConfigError, XkeError
from .llm import LLMConfig
from .sampling import SamplingConfig
from .scorers import ScorerConfig
from .tlpo import TlpoConfig
from .xeit import XeitConfig
from .xeit_data import DataConfig

STAGES = ("data", "xeit", "sample", "score", "pairs", "tlpo", "eval")


@dataclass
class EvalConfig:
    """Measured at the end of the recipe (held-out world edits when the source is a world)."""

    n_cases: int = 100
    #: world source: cases per person/company (``World.counterfactual_cases(per_subject=)``); None: the
    #: world's default. 5 gives a case for every held-out fact (115 on the default world, not 31).
    per_subject: int | None = None
    edit_langs: list[str] | None = None      # default: the data languages
    test_langs: list[str] | None = None
    max_new_tokens: int = 24
    batch_size: int = 32
    #: world source: also evaluate the final model in retrieve mode (``xke eval --method xkde --mode retrieve``,
    #: ``threshold: auto``), each case's edit stored among N edits about invented people, for each N here
    retrieve_distractors: list[int] = field(default_factory=list)
    #: also measure general ability (``xke general``: lm-eval tasks before and after N edits) of the final
    #: model with these methods (e.g. [xkde, memit]); empty = off
    general_methods: list[str] = field(default_factory=list)
    #: numbers of sequential edits for ``general_methods`` (several: a degradation curve)
    general_edits: list[int] = field(default_factory=lambda: [100])
    #: lm-eval tasks for ``general_methods`` (null: ``xke general``'s default, the toy-world group)
    general_tasks: list[str] | None = None

    def validate(self) -> None:
        if any(n < 0 for n in self.retrieve_distractors):
            raise ValueError("eval.retrieve_distractors: counts must be >= 0")
        if self.n_cases < 1:
            raise ValueError("eval.n_cases must be >= 1")
        if self.per_subject is not None and self.per_subject < 1:
            raise ValueError("eval.per_subject must be >= 1 (or null for the world's default)")
        if any(n < 1 for n in self.general_edits):
            raise ValueError("eval.general_edits: numbers of edits must be >= 1")


@dataclass
class RecipeConfig:
    data: DataConfig = field(default_factory=DataConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    xeit: XeitConfig = field(default_factory=XeitConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    scoring: ScorerConfig = field(default_factory=ScorerConfig)
    tlpo: TlpoConfig = field(default_factory=TlpoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    threads: int | None = None
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    #: system message put first in every training row, sampling prompt, pair and evaluation prompt (null: none)
    system_prompt: str | None = None
    #: options of provider-made sources, by their kind (e.g. ``world:`` for the toy world's XE-IT source:
    #: replay, invented, all_relations, edits_per_fact); xke.train passes each section to its source unread
    source_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        for s in self.stages:
            if s not in STAGES:
                raise ValueError(f"stages: {s!r} is not one of {list(STAGES)}")


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in (b or {}).items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_train_config(preset: str = "toy", config_path: str | Path | None = None,
                      overrides: dict[str, Any] | None = None) -> RecipeConfig:
    """Preset ``xke/configs/train/<preset>.yaml``, then the user's YAML, then ``overrides`` (deep-merged)."""
    data = load_preset("train", preset)
    source = f"train preset {preset!r}"
    if config_path:
        data = _deep_merge(data, read_yaml(config_path))
        source = f"{config_path} (over preset {preset!r})"
    data = _deep_merge(data, overrides or {})
    return from_dict(RecipeConfig, data, source=source)


# ----------------------------------------------------------------------------- resumable stages


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """Markers ``.done-<stage>.json`` with a hash chained through the stages."""

    def __init__(self, out: Path, log=print):
        self.out = out
        self.log = log
        self.prev = ""

    def run(self, name: str, deps: Any, fn, *, force: bool = False):
        h = _hash({"deps": deps, "prev": self.prev})
        self.prev = h
        marker = self.out / f".done-{name}.json"
        if not force and marker.exists():
            try:
                m = json.loads(marker.read_text())
                if m.get("hash") == h:
                    self.log(f"[{name}] complete, skipped ({marker.name})")
                    return m.get("result")
            except ValueError:
                pass
        self.log(f"[{name}] running (stage {STAGES.index(name) + 1} of {len(STAGES)})")
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        rec = {"hash": h, "result": result, "seconds": round(time.perf_counter() - t0, 2),
               "cpu_seconds": round(time.process_time() - c0, 2)}
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2, default=str))
        tmp.replace(marker)
        self.log(f"[{name}] done in {rec['seconds']} s ({rec['cpu_seconds']} CPU s)")
        return result


def stage_times(out: Path) -> dict[str, dict]:
    res = {}
    for s in STAGES:
        m = out / f".done-{s}.json"
        if m.exists():
            d = json.loads(m.read_text())
            res[s] = {"seconds": d.get("seconds"), "cpu_seconds": d.get("cpu_seconds")}
    return res


# ----------------------------------------------------------------------------- evaluation


def greedy_answers(model, tok, user_texts: Sequence[str], *, max_new_tokens: int = 24, batch_size: int = 32,
                   system_prompt: str | None = None, thinking: bool = False) -> list[str]:
    """Greedy answers to user messages rendered with the model's chat template (stops at end of turn;
    reasoning mode off unless ``thinking``)."""
    from .importers import with_system

    import torch

    from .sampling import end_token_ids

    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    stops = end_token_ids(tok)
    dev = next(model.parameters()).device
    model.eval()
    from ..models.prompts import chat_kwargs

    texts = [tok.apply_chat_template(with_system([{"role": "user", "content": u}], system_prompt), tokenize=False,
                                     add_generation_prompt=True, **chat_kwargs(thinking)) for u in user_texts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [""] * len(texts)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(dev)
        with torch.inference_mode():
            res = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stops,
                                 pad_token_id=tok.pad_token_id)
        dec = tok.batch_decode(res[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, d in zip(idx, dec):
            out[i] = d.split("\n")[0].strip()
    return out


def world_heldout_eval(model_spec: str, source: Any, edit_langs: Sequence[str],
                       test_langs: Sequence[str], *, n_cases: int = 100, per_subject: int | None = None,
                       max_new_tokens: int = 24, batch_size: int = 32) -> dict[str, Any]:
    """Gold-mode X-KDE on held-out world edits: exact match of generated answers.

    For each edit language s and test language t: reliability (edit question
    in t), generality (held-out question forms in t), portability (two-hop
    through the new value), locality (an unrelated question with the edit in
    context must keep the model's own answer without it). Also counts
    wrong-script / wrong-format reliability answers (:func:`form_errors`).
    ``source`` is the XE-IT source that has held-out cases (:func:`heldout_source`); ``per_subject`` is passed
    to its ``heldout_cases`` (None: the world's default).
    """
    from ..methods.xkde import xkde_prompt
    from ..models.loading import load_model
    from .scorers import form_errors

    lm = load_model(str(model_spec), device="auto")
    model, tok = lm.model, lm.tokenizer
    cases = source.heldout_cases(per_subject)[:n_cases]
    if not cases:
        raise XkeError(f"{source}: the world has no held-out cases")
    res: dict[str, Any] = {"n_cases": len(cases), "per_subject": per_subject, "pairs": {}}
    # pre-edit answers to locality questions (no descriptor), once per test language
    pre = {}
    for t in test_langs:
        pre[t] = greedy_answers(model, tok, [c.view(t).locality_prompt for c in cases],
                                max_new_tokens=max_new_tokens, batch_size=batch_size)
    for s in edit_langs:
        for t in test_langs:
            jobs: list[tuple[str, int, str, str]] = []  # kind, case index, user text, reference
            for i, c in enumerate(cases):
                vs, vt = c.view(s), c.view(t)
                d = [(vs.prompt, vs.target_new)]
                jobs.append(("reliability", i, xkde_prompt(d, vt.prompt, t), vt.target_new))
                for p in vt.paraphrases[:2]:
                    jobs.append(("generality", i, xkde_prompt(d, p, t), vt.target_new))
                if vt.portability_prompt and vt.portability_answer:
                    jobs.append(("portability", i, xkde_prompt(d, vt.portability_prompt, t), vt.portability_answer))
                jobs.append(("locality", i, xkde_prompt(d, vt.locality_prompt, t), pre[t][i]))
            answers = greedy_answers(model, tok, [j[2] for j in jobs], max_new_tokens=max_new_tokens,
                                     batch_size=batch_size)
            agg: dict[str, list[float]] = {}
            form = {"wrong_script": 0, "year_format": 0, "any": 0}
            examples = []
            for (kind, i, _, ref), a in zip(jobs, answers):
                agg.setdefault(kind, []).append(float(a.strip() == ref.strip()))
                if kind == "reliability":
                    errs = form_errors(a, ref, t)
                    for e in errs:
                        form[e] += 1
                    form["any"] += bool(errs)
                    if len(examples) < 3:
                        examples.append({"ref": ref, "answer": a})
            block = {k: round(100 * sum(v) / len(v), 2) for k, v in agg.items()}
            block["form_errors"] = form
            block["examples"] = examples
            res["pairs"][f"{s}->{t}"] = block
    return res


def world_retrieve_eval(model_spec: str, source: Any, edit_langs: Sequence[str],
                        test_langs: Sequence[str], out: str | Path, *, n_distractors: int, n_cases: int = 100,
                        per_subject: int | None = None, max_new_tokens: int = 24) -> dict[str, Any]:
    """Retrieve-mode X-KDE on held-out world edits through the evaluation runner (single protocol): each
    case's edit is stored in a memory that already holds ``n_distractors`` edits about invented people
    (the source's ``distractor_edits``), the source's retriever picks what goes in context (``threshold: auto``).
    Returns exact match per edit -> test language and query kind, in :func:`world_heldout_eval`'s shape."""
    from ..data.loaders import write_jsonl
    from ..eval.runner import run_eval
    from ..models.loading import load_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    retriever = source.retriever()   # trained when missing: this evaluation retrieves
    w = source
    cases = source.heldout_cases(per_subject)[:n_cases]
    data = write_jsonl(out / "heldout.jsonl", cases)
    res: dict[str, Any] = {"n_cases": len(cases), "n_edits_in_memory": n_distractors + 1, "pairs": {}}
    lm = load_model(str(model_spec))   # once for every edit language
    for s in edit_langs:
        spec = distractor_memory_spec(str(model_spec), w, retriever, data, out, s, test_langs, n_distractors,
                                      max_new_tokens=max_new_tokens)
        m = run_eval(spec, loaded=lm, progress=False)
        for t in test_langs:
            res["pairs"][f"{s}->{t}"] = {k: v["em"] for k, v in m["by_test_lang"][t].items()}
    return res


def distractor_memory_spec(model_spec: str, world, retriever: str | Path, data: str | Path, out: str | Path,
                           edit_lang: str, test_langs: Sequence[str], n_distractors: int, *,
                           max_new_tokens: int = 24, method: str = "xkde"):
    """The ``xke eval`` spec of retrieve-mode ``method`` over a fresh edit memory ``OUT/memory-L-N.sqlite``
    holding ``n_distractors`` edits about invented people in ``edit_lang`` (``World.distractor_edits``): each
    case's own edit joins them while it is evaluated (so the memory holds N + 1), ``threshold: auto``.
    Results go to ``OUT/L-N``."""
    from ..eval.runner import EvalSpec
    from ..memory.store import EditStore, edit_from_dict

    out = Path(out)
    mem = out / f"memory-{edit_lang}-{n_distractors}.sqlite"
    for old in out.glob(mem.name + "*"):   # rebuilt every time: a crash mid-case can leave that case's edit
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    store = EditStore(mem)
    store.add_many([edit_from_dict(d) for d in world.distractor_edits(n_distractors, edit_lang)])
    store.close()
    return EvalSpec(model=str(model_spec), out=str(out / f"{edit_lang}-{n_distractors}"), method=method,
                    data=str(data), edit_lang=edit_lang, test_langs=list(test_langs), mode="retrieve",
                    max_new_tokens=max_new_tokens, method_overrides={"memory_path": str(mem), "threshold": "auto",
                                                                     "retriever_path": str(retriever)})


def general_eval(model_spec: str, world_dir: Path | None, ecfg: EvalConfig, out: Path,
                 test_langs: Sequence[str]) -> dict[str, Any]:
    """General ability of the final model (``xke general``) before and after ``ecfg.general_edits`` edits of
    each of ``ecfg.general_methods``: the task average and its change, and the edits' locality, per run."""
    from ..eval.general import GeneralSpec, run_general

    spec = GeneralSpec(model=str(model_spec), out=str(out), methods=list(ecfg.general_methods),
                       n_edits=list(ecfg.general_edits), test_langs=list(test_langs),
                       world_dir=str(world_dir) if world_dir is not None else None,
                       **({"tasks": list(ecfg.general_tasks)} if ecfg.general_tasks is not None else {}))
    g = run_general(spec, progress=False)
    return {"base_avg": g["base"]["avg"], "out": str(out),
            "runs": [{"method": r["method"], "n_edits": r["n_edits"], "avg": r["avg"], "delta_avg": r["delta_avg"],
                      "locality": r["edits"]["locality"]} for r in g["runs"]]}


def rows_eval(model_spec: str, rows: list[dict], *, max_new_tokens: int = 24, batch_size: int = 32,
              limit: int = 400, system_prompt: str | None = None) -> dict[str, Any]:
    """Exact match on held-out XE-IT rows, per section x scope x descriptor (non-world sources)."""
    from ..models.loading import load_model
    from .scorers import form_errors

    lm = load_model(str(model_spec), device="auto")
    rows = [r for r in rows if r["kind"] != "long"][:limit]
    answers = greedy_answers(lm.model, lm.tokenizer, [r["messages"][0]["content"] for r in rows],
                             max_new_tokens=max_new_tokens, batch_size=batch_size, system_prompt=system_prompt)
    agg: dict[str, list[float]] = {}
    form = 0
    for r, a in zip(rows, answers):
        key = f"{r['section']}/{r['scope']}/{'with' if r['with_edit'] else 'without'}"
        agg.setdefault(key, []).append(float(a.strip() == r["reference"].strip()))
        form += bool(form_errors(a, r["reference"], r["tgt_lang"]))
    return {"rows": len(rows), "em": {k: round(100 * sum(v) / len(v), 2) for k, v in agg.items()},
            "form_errors": form}


# ----------------------------------------------------------------------------- model card


def write_model_card(out: Path, *, model: str, sources: Sequence[str], cfg: RecipeConfig, results: dict[str, Any]
                     ) -> Path:
    lines = [f"# X-KDE model trained with xke", "",
             f"- base model: `{model}`", f"- sources: {', '.join(f'`{s}`' for s in sources)}",
             f"- languages: {', '.join(cfg.data.langs)}",
             f"- recipe: XE-IT (SFT, answer-only loss) then TL-PO ({cfg.tlpo.algo.upper()}, beta {cfg.tlpo.beta})",
             "", "Prompt (training and inference, `xke.methods.xkde.xkde_prompt`):", "", "```",
             "Please acknowledge the updated information provided below and respond to the subsequent query in "
             "{Language}.", "", "[Updated Information]:", "{source question} {source new answer}", "",
             "[Query]:", "{question}", "```", "", "Use: `xke eval --model DIR --method xkde ...`.", ""]
    data = results.get("data") or {}
    if data.get("table8"):
        from .xeit_data import format_table8

        lines += ["## Data (Table 8 layout)", "", "```", format_table8(data["table8"]), "```", ""]
    for key, title in (("xeit", "XE-IT"), ("tlpo", "TL-PO")):
        m = results.get(key)
        if m:
            show = {k: v for k, v in m.items() if k != "config"}
            lines += [f"## {title}", "", "```json", json.dumps(show, indent=2, ensure_ascii=False), "```", ""]
    if results.get("pairs"):
        lines += ["## Preference pairs", "", "```json", json.dumps(results["pairs"], indent=2), "```", ""]
    if results.get("eval"):
        lines += ["## Measured (exact match of generated answers, %)", ""]
        ev = results["eval"]
        for stage, block in ev.items():
            if not isinstance(block, dict) or "pairs" not in block:
                continue
            lines += [f"### {stage}", "", "| edit -> test | reliability | generality | locality | portability | "
                      "wrong form (rel.) |", "|---|---|---|---|---|---|"]
            for pair, b in block["pairs"].items():
                lines.append(f"| {pair} | {b.get('reliability', '')} | {b.get('generality', '')} | "
                             f"{b.get('locality', '')} | {b.get('portability', '')} | "
                             f"{b.get('form_errors', {}).get('any', '')} / {block['n_cases']} |")
            lines.append("")
    if results.get("times"):
        lines += ["## Stage times", "", "```json", json.dumps(results["times"], indent=2), "```", ""]
    lines += ["## Config", "", "```json", json.dumps(asdict(cfg), indent=2, default=str), "```", ""]
    p = out / "README.md"
    p.write_text("\n".join(lines), encoding="utf-8")
    return p


# ----------------------------------------------------------------------------- the recipe


def heldout_source(sources: Sequence[Any]) -> Any | None:
    """The first source that provides held-out edit cases for the evaluation (a provider-made source with
    ``heldout_cases``, e.g. the toy world's), else None."""
    return next((s for s in sources if callable(getattr(s, "heldout_cases", None))), None)


def _mark_model(model_dir: Path, sources: Sequence[Any]) -> None:
    """Let provider-made sources mark the trained model (``mark_model``; the toy world records itself in the
    model's config, so retrieve mode finds the world's retriever from anywhere)."""
    for s in sources:
        mark = getattr(s, "mark_model", None)
        if callable(mark):
            mark(model_dir)


def run_recipe(model: str, sources: Sequence[Any], out_dir: str | Path, cfg: RecipeConfig, *,
               force: Sequence[str] = (), log=print) -> dict[str, Any]:
    """Run (or resume) the full X-KDE recipe; returns the results written into the model card. ``model`` is a
    model directory or tiny config; ``sources`` are source specs or provider-made sources
    (:class:`~xke.train.sources.ProvidedSource`, e.g. the toy world's, with ``cfg.source_options``)."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if any(s in cfg.stages for s in ("xeit", "tlpo", "eval")):  # before the (long) data stage
        from transformers import AutoTokenizer

        from ..models.loading import resolve_model_path
        from .xeit import require_chat_template

        require_chat_template(AutoTokenizer.from_pretrained(resolve_model_path(model)), "the X-KDE recipe")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    langs = parse_langs(cfg.data.langs)
    st = Stages(out, log)
    results: dict[str, Any] = {}
    t_all, c_all = time.perf_counter(), time.process_time()
    sp = cfg.system_prompt
    sp_dep = {"system_prompt": sp} if sp is not None else {}   # stage hashes of runs without one are unchanged

    # 1. data
    def do_data():
        from .llm import make_steps
        from .sources import xeit_inputs
        from .xeit_data import build_xeit_dataset

        facts, extra = xeit_inputs(sources, cfg.data, options=cfg.source_options)
        return build_xeit_dataset(facts, cfg.data, out / "data", steps=make_steps(cfg.llm, seed=cfg.data.seed),
                                  extra_rows=extra)

    results["data"] = st.run("data", {"sources": [str(s) for s in sources], "data": asdict(cfg.data),
                                      "source_options": cfg.source_options, "llm": asdict(cfg.llm)},
                             do_data, force="data" in force)
    # 2. XE-IT
    run_xeit = "xeit" in cfg.stages
    if run_xeit:
        from .xeit import train_xeit

        results["xeit"] = st.run("xeit", {"model": model, "xeit": asdict(cfg.xeit), **sp_dep},
                                 lambda: train_xeit(model, out / "data", out / "xeit", cfg.xeit, system_prompt=sp),
                                 force="xeit" in force)
    policy = str(out / "xeit") if run_xeit else model
    final = policy
    # 3-6. TL-PO
    if "tlpo" in cfg.stages:
        from .sampling import sample_for_rows, select_prompts
        from .scorers import build_scorer, score_records
        from .tlpo import make_pairs_dir, read_jsonl_rows, train_tlpo, write_jsonl
        from .xeit_data import read_rows

        def do_sample():
            rows = select_prompts(read_rows(out / "data" / "train.jsonl"), cfg.sampling)
            recs = sample_for_rows(policy, rows, cfg.sampling, out / "samples.jsonl", system_prompt=sp)
            return {"prompts": len(recs), "kept_samples": sum(len(r["samples"]) for r in recs),
                    "raw_samples": sum(r["n_raw"] for r in recs),
                    "prompts_all_correct": sum(1 for r in recs if not r["samples"])}

        results["sample"] = st.run("sample", {"policy": policy, "sampling": asdict(cfg.sampling), **sp_dep}, do_sample,
                                   force="sample" in force)

        def do_score():
            recs = read_jsonl_rows(out / "samples.jsonl")
            score_records(recs, build_scorer(cfg.scoring), cfg.scoring.sample_lang)
            write_jsonl(recs, out / "scored.jsonl")
            return {"records": len(recs)}

        st.run("score", {"scoring": asdict(cfg.scoring)}, do_score, force="score" in force)
        pair_deps = {k: v for k, v in asdict(cfg.tlpo).items()
                     if k in ("flaw_threshold", "min_gap", "max_rejected_per_prompt", "max_sample_pairs_per_prompt",
                              "val_fraction", "seed")}
        results["pairs"] = st.run("pairs", pair_deps,
                                  lambda: make_pairs_dir(read_jsonl_rows(out / "scored.jsonl"), out / "pairs",
                                                         cfg.tlpo), force="pairs" in force)
        results["tlpo"] = st.run("tlpo", {"tlpo": asdict(cfg.tlpo), "policy": policy},
                                 lambda: train_tlpo(policy, out / "pairs", out / "model", cfg.tlpo),
                                 force="tlpo" in force)
        final = str(out / "model")
    elif run_xeit:
        from ..fsutil import replace_dir

        done = out / "model" / ".xke-copied"   # written last: a copy cut short by a kill is redone
        if not done.exists():
            replace_dir(out / "model", lambda tmp: (shutil.copytree(out / "xeit", tmp, dirs_exist_ok=True),
                                                    (tmp / ".xke-copied").write_text("xeit\n")))
        final = str(out / "model")
    # 7. evaluation (the trained models first learn their sources' marks: the toy world's evaluation finds the
    # world's presets and retriever through them)
    for trained in {str(out / "xeit"), final}:
        if Path(trained).is_dir() and Path(trained).resolve().is_relative_to(out.resolve()):
            _mark_model(Path(trained), sources)
    if "eval" in cfg.stages:
        def do_eval():
            held = heldout_source(sources)
            e_langs = parse_langs(cfg.eval.edit_langs) if cfg.eval.edit_langs else langs
            t_langs = parse_langs(cfg.eval.test_langs) if cfg.eval.test_langs else langs
            ev = {}
            models = {"base": model}
            if run_xeit:
                models["xeit"] = str(out / "xeit")
            if final not in models.values():
                models["final"] = final
            for name, m in models.items():
                if held is not None:
                    ev[name] = world_heldout_eval(m, held, e_langs, t_langs, n_cases=cfg.eval.n_cases,
                                                  per_subject=cfg.eval.per_subject,
                                                  max_new_tokens=cfg.eval.max_new_tokens,
                                                  batch_size=cfg.eval.batch_size)
                    if name == "final" or (name == "xeit" and "final" not in models):
                        for n in cfg.eval.retrieve_distractors:
                            ev[f"{name}, retrieve, {n + 1} edits in memory"] = world_retrieve_eval(
                                m, held, e_langs, t_langs, out / "eval" / f"{name}-retrieve", n_distractors=n,
                                n_cases=cfg.eval.n_cases, per_subject=cfg.eval.per_subject,
                                max_new_tokens=cfg.eval.max_new_tokens)
                elif (out / "data" / "validation.jsonl").exists():
                    from .xeit_data import read_rows

                    ev[name] = rows_eval(m, read_rows(out / "data" / "validation.jsonl"),
                                         max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
                                         system_prompt=sp)
            if cfg.eval.general_methods:
                ev["general"] = general_eval(final, getattr(held, "world_dir", None), cfg.eval,
                                             out / "eval" / "general", t_langs)
            return ev

        results["eval"] = st.run("eval", {"eval": asdict(cfg.eval), "final": final, **sp_dep}, do_eval,
                                 force="eval" in force)
        (out / "eval.json").write_text(json.dumps(results["eval"], indent=2, ensure_ascii=False))
    results["times"] = stage_times(out)
    results["times"]["this_run"] = {"seconds": round(time.perf_counter() - t_all, 2),
                                    "cpu_seconds": round(time.process_time() - c_all, 2)}
    if Path(final).is_dir() and Path(final).resolve().is_relative_to(out.resolve()):
        write_model_card(Path(final), model=model, sources=sources, cfg=cfg, results=results)
        _mark_model(Path(final), sources)
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    return results
