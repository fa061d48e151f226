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
    eval/        ``xke eval --method xkde`` runs (:mod:`xke.eval.pairs`) on ``eval/heldout.jsonl``: held-out
                 world edits, or the validation facts as edit cases
    eval.json    their exact match per model, edit -> test pair and query kind

``xke train tlpo`` runs stages 3-6 alone (:func:`tlpo_stages`) with the same markers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import from_dict, load_preset, read_yaml
from ..data.languages import parse_langs
from ..errors import XkeError
from .llm import LLMConfig
from .sampling import SamplingConfig
from .scorers import ScorerConfig
from .tlpo import TlpoConfig
from .xeit import XeitConfig
from .xeit_data import DataConfig

STAGES = ("data", "xeit", "sample", "score", "pairs", "tlpo", "eval")
#: the TL-PO stages (``xke train tlpo`` runs these alone)
TLPO_STAGES = ("sample", "score", "pairs", "tlpo")


@dataclass
class EvalConfig:
    """Measured at the end of the recipe through ``xke eval --method xkde`` (:mod:`xke.eval.pairs`): held-out
    world edits when the source is a world, else the validation facts as edit cases."""

    n_cases: int = 100
    #: world source: cases per person/company (``World.counterfactual_cases(per_subject=)``); None: the
    #: world's default. 5 gives a case for every held-out fact (115 on the default world, not 31).
    per_subject: int | None = None
    edit_langs: list[str] | None = None      # default: the data languages
    test_langs: list[str] | None = None
    max_new_tokens: int = 24
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

    def __init__(self, out: Path, log=print, names: Sequence[str] = STAGES):
        self.out = out
        self.log = log
        self.prev = ""
        self.names = tuple(names)

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
        self.log(f"[{name}] running (stage {self.names.index(name) + 1} of {len(self.names)})")
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


def heldout_cases(sources: Sequence[Any], cfg: RecipeConfig, path: Path, langs: Sequence[str]) -> int:
    """Write the edit cases the recipe evaluates on to ``path`` (xke edit JSONL); returns how many.

    A source with held-out cases (:func:`heldout_source`; the toy world's: its held-out counterfactual cases,
    ``eval.per_subject``; held-out entities never enter the training data). Other sources: the facts the
    data stage put in ``validation.jsonl`` (``data.val_fraction``), as edit cases, those with a view in every
    language of ``langs``. The first ``eval.n_cases`` either way."""
    from ..data.loaders import write_jsonl

    held = heldout_source(sources)
    if held is not None:
        cases = held.heldout_cases(cfg.eval.per_subject)
        if not cases:
            raise XkeError(f"{held}: the world has no held-out cases")
    else:
        from .sources import xeit_inputs
        from .xeit_data import is_validation

        facts, _ = xeit_inputs(sources, cfg.data, options=cfg.source_options)
        cases = [_fact_case(f) for f in facts if is_validation(f.fact_id, cfg.data.val_fraction, cfg.data.seed)
                 and all(lang in f.views for lang in langs)]
    cases = cases[:cfg.eval.n_cases]
    write_jsonl(path, cases)
    return len(cases)


def _fact_case(fact):
    """A training :class:`~xke.train.sources.Fact` as an edit case: its edit, its other phrasings (generality),
    its first unrelated question (locality) and derived question (portability), per language."""
    from ..data.schema import EditCase, LangView

    views = {}
    for lang, v in fact.views.items():
        loc = v.unrelated[0] if v.unrelated else (None, None)
        port = v.portability[0] if v.portability else (None, None)
        views[lang] = LangView(subject=v.subject, prompt=v.prompt, target_new=v.target_new, target_old=v.target_old,
                               paraphrases=list(v.queries), locality_prompt=loc[0], locality_answer=loc[1],
                               portability_prompt=port[0], portability_answer=port[1], style=v.style)
    return EditCase(case_id=fact.fact_id, views=views, meta=dict(fact.meta))


def heldout_source(sources: Sequence[Any]) -> Any | None:
    """The first source that provides held-out edit cases for the evaluation (a provider-made source with
    ``heldout_cases``, ``distractor_edits`` and ``retriever``, e.g. the toy world's), else None."""
    return next((s for s in sources if callable(getattr(s, "heldout_cases", None))), None)


def _distractors(source: Any, edit_langs: Sequence[str], n: int) -> dict[str, Any]:
    """The retrieve-mode inputs from ``source``: ``n`` edits about invented people per edit language
    (its ``distractor_edits``) and its retriever (trained first if missing: this evaluation retrieves)."""
    return {"distractors": {s: source.distractor_edits(n, s) for s in edit_langs}, "retriever": source.retriever()}


def general_spec(model_spec: str, world_dir: Path | None, ecfg: EvalConfig, out: Path, test_langs: Sequence[str]):
    """The ``xke general`` spec of the recipe's eval stage: the final model before and after
    ``ecfg.general_edits`` edits of each of ``ecfg.general_methods``."""
    from ..eval.general import GeneralSpec

    return GeneralSpec(model=str(model_spec), out=str(out), methods=list(ecfg.general_methods),
                       n_edits=list(ecfg.general_edits), test_langs=list(test_langs),
                       world_dir=str(world_dir) if world_dir is not None else None,
                       **({"tasks": list(ecfg.general_tasks)} if ecfg.general_tasks is not None else {}))


# ----------------------------------------------------------------------------- model card


def write_model_card(out: Path, *, model: str, sources: Sequence[str], cfg: RecipeConfig, results: dict[str, Any]
                     ) -> Path:
    from ..prompts import XKDE_TEMPLATE

    lines = ["# X-KDE model trained with xke", "",
             f"- base model: `{model}`", f"- sources: {', '.join(f'`{s}`' for s in sources)}",
             f"- languages: {', '.join(cfg.data.langs)}",
             f"- recipe: XE-IT (SFT, answer-only loss) then TL-PO ({cfg.tlpo.algo.upper()}, beta {cfg.tlpo.beta})",
             "", "Prompt (training and inference, `xke.prompts.xkde_prompt`):", "", "```",
             *XKDE_TEMPLATE.split("\n"), "```", "", "Use: `xke eval --model DIR --method xkde ...`.", ""]
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
        lines += ["## Measured (exact match of generated answers, %)", "",
                  "`xke eval --method xkde` runs (gold mode; retrieve mode with N edits in memory) in the recipe's "
                  "`eval/` folder, one per model and edit language.", ""]
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


def _mark_model(model_dir: Path, sources: Sequence[Any]) -> None:
    """Let provider-made sources mark the trained model (``mark_model``; the toy world records itself in the
    model's config, so its evaluation finds the world's presets and retriever from anywhere)."""
    for s in sources:
        mark = getattr(s, "mark_model", None)
        if callable(mark):
            mark(model_dir)


def tlpo_stages(st: Stages, policy: str, rows: Callable[[], list[dict]], out: Path, cfg: RecipeConfig, *,
                force: Sequence[str] = (), pairs: str | Path | None = None,
                extra_deps: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stages 3-6 of the recipe, also ``xke train tlpo``: sample ``policy``'s answers to the prompts of
    ``rows()`` (``OUT/samples.jsonl``), score them (``OUT/scored.jsonl``), build preference pairs
    (``OUT/pairs/``), preference-optimise ``policy`` on them into ``OUT/model``. With ``pairs`` (existing
    pairs: an xke pairs folder or the release's JSON) only the last stage runs, on those. ``extra_deps``:
    what else the first stage run depends on (``xke train tlpo``: the model's files, the prompts' file; in
    the recipe the earlier stages' chained hash covers them)."""
    from .sampling import sample_for_rows, select_prompts
    from .scorers import build_scorer, score_records
    from .tlpo import make_pairs_dir, read_jsonl_rows, train_tlpo, write_jsonl

    sp = cfg.system_prompt
    sp_dep = {"system_prompt": sp} if sp is not None else {}   # stage hashes of runs without one are unchanged
    res: dict[str, Any] = {}
    tlpo_deps = {"tlpo": asdict(cfg.tlpo), "policy": policy}   # the system prompt: in the chained sample hash
    if pairs is None:
        def do_sample():
            recs = sample_for_rows(policy, select_prompts(rows(), cfg.sampling), cfg.sampling, out / "samples.jsonl",
                                   system_prompt=sp)
            return {"prompts": len(recs), "kept_samples": sum(len(r["samples"]) for r in recs),
                    "raw_samples": sum(r["n_raw"] for r in recs),
                    "prompts_all_correct": sum(1 for r in recs if not r["samples"])}

        res["sample"] = st.run("sample", {"policy": policy, "sampling": asdict(cfg.sampling), **sp_dep,
                                          **(extra_deps or {})}, do_sample, force="sample" in force)

        def do_score():
            recs = read_jsonl_rows(out / "samples.jsonl")
            score_records(recs, build_scorer(cfg.scoring), cfg.scoring.sample_lang)
            write_jsonl(recs, out / "scored.jsonl")
            return {"records": len(recs)}

        st.run("score", {"scoring": asdict(cfg.scoring)}, do_score, force="score" in force)
        pair_deps = {k: v for k, v in asdict(cfg.tlpo).items()
                     if k in ("flaw_threshold", "min_gap", "max_rejected_per_prompt", "max_sample_pairs_per_prompt",
                              "val_fraction", "seed")}
        res["pairs"] = st.run("pairs", pair_deps,
                              lambda: make_pairs_dir(read_jsonl_rows(out / "scored.jsonl"), out / "pairs", cfg.tlpo),
                              force="pairs" in force)
        pairs = out / "pairs"
    else:
        from ..fsutil import hash_path

        tlpo_deps.update(sp_dep, **(extra_deps or {}), pairs={"path": str(pairs), "sha256": hash_path(pairs)})
    res["tlpo"] = st.run("tlpo", tlpo_deps,
                         lambda: train_tlpo(policy, pairs, out / "model", cfg.tlpo, system_prompt=sp),
                         force="tlpo" in force)
    return res


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
        def rows():
            from .xeit_data import read_rows

            return read_rows(out / "data" / "train.jsonl")

        results.update(tlpo_stages(st, policy, rows, out, cfg, force=force))
        final = str(out / "model")
    elif run_xeit:
        from ..fsutil import replace_dir

        done = out / "model" / ".xke-copied"   # written last: a copy cut short by a kill is redone
        if not done.exists():
            replace_dir(out / "model", lambda tmp: (shutil.copytree(out / "xeit", tmp, dirs_exist_ok=True),
                                                    (tmp / ".xke-copied").write_text("xeit\n")))
        final = str(out / "model")
    # 7. evaluation: xke eval --method xkde (gold; retrieve with a world's distractors) on held-out cases. The
    # trained models first get their sources' marks: the toy world's runs find its presets and retriever by them
    for trained in {str(out / "xeit"), final}:
        if Path(trained).is_dir() and Path(trained).resolve().is_relative_to(out.resolve()):
            _mark_model(Path(trained), sources)
    if "eval" in cfg.stages:
        def do_eval():
            from ..eval.general import general_brief
            from ..eval.pairs import gold_pairs, retrieve_pairs
            from ..models.loading import load_model
            from .scorers import form_error_counts

            held = heldout_source(sources)
            e_langs = parse_langs(cfg.eval.edit_langs) if cfg.eval.edit_langs else langs
            t_langs = parse_langs(cfg.eval.test_langs) if cfg.eval.test_langs else langs
            ev_dir = out / "eval"
            if ev_dir.exists():   # the stage reruns when its inputs changed: no earlier run may be resumed
                shutil.rmtree(ev_dir)
            data = ev_dir / "heldout.jsonl"
            if not heldout_cases(sources, cfg, data, list(dict.fromkeys([*e_langs, *t_langs]))):
                log("[eval] no held-out cases (no fact fell in data.val_fraction's validation share)")
                return {}
            ev = {}
            models = {"base": model}
            if run_xeit:
                models["xeit"] = str(out / "xeit")
            if final not in models.values():
                models["final"] = final
            for name, m in models.items():
                lm = load_model(str(m))
                ev[name] = gold_pairs(m, data, e_langs, t_langs, ev_dir / name, loaded=lm,
                                      max_new_tokens=cfg.eval.max_new_tokens, system_prompt=sp,
                                      check=form_error_counts)
                if held is not None and (name == "final" or (name == "xeit" and "final" not in models)):
                    for n in cfg.eval.retrieve_distractors:
                        ev[f"{name}, retrieve, {n + 1} edits in memory"] = retrieve_pairs(
                            m, data, e_langs, t_langs, ev_dir / f"{name}-retrieve", loaded=lm,
                            max_new_tokens=cfg.eval.max_new_tokens, system_prompt=sp,
                            **_distractors(held, e_langs, n))
                del lm
            if cfg.eval.general_methods:
                ev["general"] = general_brief(general_spec(final, getattr(held, "world_dir", None), cfg.eval,
                                                           ev_dir / "general", t_langs))
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
