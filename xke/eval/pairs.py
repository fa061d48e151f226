"""X-KDE on held-out edits, per edit → test language pair, through the evaluation runner.

What the X-KDE recipe's eval stage and ``xke demo`` measure, as ``xke eval --method xkde`` runs
(:func:`xke.eval.runner.run_eval`, one run per edit language, every test language):

- :func:`gold_pairs` — gold mode: each case's edit put in context with X-KDE's prompt;
- :func:`retrieve_pairs` — retrieve mode: each case's edit stored in an edit memory that already
  holds other edits (:func:`distractor_memory_spec`), the retriever picks what goes in context.

Both return ``{"n_cases", "pairs": {"s->t": {query kind: exact match %}}}``: the ``em`` figures of each
run's ``metrics.json`` (exact match of the greedy answer with the new answer; locality: with the
unedited model's own answer, :mod:`xke.eval.profiles`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

#: ``check(answers, lang) -> dict``: a summary of the reliability answers of one pair, given as
#: ``[(answer, reference)]`` (the recipe passes :func:`xke.train.scorers.form_error_counts`)
AnswerCheck = Callable[[list[tuple[str, str]], str], dict[str, Any]]


def run_pairs(specs: Sequence[Any], lm, data: str | Path, *, check: AnswerCheck | None = None) -> dict[str, Any]:
    """Run each :class:`~xke.eval.runner.EvalSpec` (one per edit language) with the loaded model ``lm``;
    the exact match (%) per ``edit->test`` pair and query kind. With ``check``, each pair also gets
    ``form_errors`` (``check`` of its reliability answers) and three ``examples`` of them."""
    from ..data.loaders import read_jsonl
    from .runner import final_records, run_eval

    refs = {c.case_id: c for c in read_jsonl(data)} if check else {}
    pairs: dict[str, Any] = {}
    for spec in specs:
        m = run_eval(spec, loaded=lm, progress=False)
        recs = final_records(spec.out) if check else {}
        for t in spec.test_langs:
            block: dict[str, Any] = {k: v["em"] for k, v in m["by_test_lang"][t].items()}
            if check:
                rel = [(q["pred"], refs[cid].view(t).target_new) for cid, r in recs.items() for q in r["queries"]
                       if q["lang"] == t and q["kind"] == "reliability"]
                block["form_errors"] = check(rel, t)
                block["examples"] = [{"ref": ref, "answer": a} for a, ref in rel[:3]]
            pairs[f"{spec.edit_lang}->{t}"] = block
    return pairs


def count_cases(data: str | Path) -> int:
    """Number of cases (non-empty lines) of an xke edit JSONL."""
    return sum(1 for line in Path(data).read_text(encoding="utf-8").splitlines() if line.strip())


def gold_pairs(model_spec: str, data: str | Path, edit_langs: Sequence[str], test_langs: Sequence[str],
               out: str | Path, *, loaded=None, max_new_tokens: int = 24, system_prompt: str | None = None,
               check: AnswerCheck | None = None) -> dict[str, Any]:
    """Gold-mode X-KDE on the cases of ``data``: one ``xke eval --method xkde --mode gold`` run per edit
    language in ``OUT/<lang>``. Reliability (edit question), generality (other phrasings), portability
    (two-hop through the new value), locality (an unrelated question keeps the model's own answer)."""
    from ..models.loading import load_model
    from ..world.provider import model_path
    from .runner import EvalSpec

    lm = loaded if loaded is not None else load_model(str(model_path(model_spec)))
    specs = [EvalSpec(model=str(model_spec), out=str(Path(out) / s), method="xkde", data=str(data), edit_lang=s,
                      test_langs=list(test_langs), mode="gold", max_new_tokens=max_new_tokens,
                      system_prompt=system_prompt) for s in edit_langs]
    return {"n_cases": count_cases(data), "pairs": run_pairs(specs, lm, data, check=check)}


def retrieve_pairs(model_spec: str, data: str | Path, edit_langs: Sequence[str], test_langs: Sequence[str],
                   out: str | Path, *, distractors: Mapping[str, Sequence[dict]], retriever: str | Path,
                   loaded=None, max_new_tokens: int = 24, system_prompt: str | None = None) -> dict[str, Any]:
    """Retrieve-mode X-KDE on the cases of ``data``: for each edit language, each case's edit joins the
    edits ``distractors[lang]`` (dicts of :func:`xke.memory.store.edit_from_dict`) in a fresh memory, the
    ``retriever`` picks what goes in context (``threshold: auto``)."""
    from ..models.loading import load_model
    from ..world.provider import model_path

    lm = loaded if loaded is not None else load_model(str(model_path(model_spec)))
    specs = []
    for s in edit_langs:
        spec = distractor_memory_spec(str(model_spec), distractors[s], retriever, data, out, s, test_langs,
                                      max_new_tokens=max_new_tokens)
        spec.system_prompt = system_prompt
        specs.append(spec)
    n = {len(distractors[s]) for s in edit_langs}
    return {"n_cases": count_cases(data), "n_edits_in_memory": max(n) + 1 if n else 1,
            "pairs": run_pairs(specs, lm, data)}


def distractor_memory_spec(model_spec: str, distractors: Sequence[dict], retriever: str | Path, data: str | Path,
                           out: str | Path, edit_lang: str, test_langs: Sequence[str], *,
                           max_new_tokens: int = 24, method: str = "xkde"):
    """The ``xke eval`` spec of retrieve-mode ``method`` over a fresh edit memory ``OUT/memory-L-N.sqlite``
    holding the N ``distractors`` (edits in ``edit_lang``): each case's own edit joins them while it is
    evaluated (so the memory holds N + 1), ``threshold: auto``. Results go to ``OUT/L-N``."""
    from ..memory.store import EditStore, edit_from_dict
    from .runner import EvalSpec

    out = Path(out)
    n = len(distractors)
    mem = out / f"memory-{edit_lang}-{n}.sqlite"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(mem.name + "*"):   # rebuilt every time: a crash mid-case can leave that case's edit
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    store = EditStore(mem)
    store.add_many([edit_from_dict(d) for d in distractors])
    store.close()
    return EvalSpec(model=str(model_spec), out=str(out / f"{edit_lang}-{n}"), method=method,
                    data=str(data), edit_lang=edit_lang, test_langs=list(test_langs), mode="retrieve",
                    max_new_tokens=max_new_tokens, method_overrides={"memory_path": str(mem), "threshold": "auto",
                                                                     "retriever_path": str(retriever)})
