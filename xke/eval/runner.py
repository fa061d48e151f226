"""The evaluation runner behind ``xke eval``: protocols, resume, metrics.json.

:func:`run_eval` takes an :class:`EvalSpec` and

1. loads the cases (``load_bench``; ``--split`` and ``--limit`` applied), the
   model (unless one is passed in) and the method;
2. computes the pre-edit answers of every locality question once, with the
   unedited model and the plain prompt, before any edit (they are the
   reference of locality), and stores them in ``cases.jsonl``;
3. runs a protocol:

   - ``single``: apply one case's request(s), evaluate its queries in every
     test language, restore;
   - ``batch``: apply the requests of ``batch_size`` cases together, evaluate
     them all, restore;
   - ``sequential``: apply the cases one group (``batch_size`` cases) after
     another without restoring, evaluate every case at the end (and with
     ``eval_after_each`` right after its own edit too); the edits are undone
     at the very end so a model passed in comes back unchanged;

   in batch and sequential runs a locality question that asks about a fact
   another edit in force changes (same subject and relation, or the same
   prompt) is not scored: its right answer is that edit's (``locality_skipped``
   in the record, ``n_locality_skipped`` in ``metrics.json``);

4. aggregates ``metrics.json`` (percent, two decimals) and writes
   ``report.md`` and ``heatmap.png`` (:mod:`xke.eval.report`).

``--edit-lang mix`` edits each case in zh and en at once (two requests per case).

Resume: every finished unit (a case for single, a batch for batch, a chunk of
final evaluations for sequential) is appended to ``cases.jsonl``, flushed and
fsync'd. Rerunning the same spec into the same ``out`` skips finished units;
for sequential the earlier edits are re-applied (without evaluation) first.
Units are fixed in advance and every edit is seeded by its unit index, so an
interrupted and resumed run ends with the same metrics as an uninterrupted one.
A different spec in an existing ``out`` is refused with the differing fields.

``spec.json`` also records what the spec only names (``resolved``): the
method's resolved configuration (preset + ``--config`` + overrides), a SHA-256
of every input file (``--data``, ``--config``, and the edit memory of
``memory_path`` without the run's own edits) and the run's id. A rerun whose
resolved inputs differ is refused, so a resumed run never mixes two
configurations or two data files.

Before any work (model loading, edits) ``run_eval`` checks the device, the
method (``--mode retrieve`` needs an in-context method), ``--out`` (a writable
folder, locked against a second concurrent run: ``OUT/.xke.lock``),
``--save-edited`` (refused when it is the model being read or an existing
non-empty folder, unless ``overwrite``; written to a temporary folder and
swapped in) and that every prompt fits the model's context. In retrieve mode
with a shared ``memory_path`` the run's edits are stored under batch
``xke-eval-<run id>``; a rerun first deletes what a killed run left there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Literal, Sequence

import torch

from ..config import from_dict
from ..errors import ConfigError, DataError, ModelError, XkeError

PROTOCOLS = ("single", "batch", "sequential")
SPLITS = ("train", "heldout", "all")
#: cases per chunk of pre-edit answers and of sequential final evaluation (fixed, so resume batches identically)
CHUNK = 16


class ResumableSpec:
    """What a spec needs for :func:`_check_spec` (resume into the same ``out``, refuse another spec there):
    a dataclass whose ``NON_IDENTITY`` fields may differ between a run and its resumption."""

    NON_IDENTITY: ClassVar[tuple[str, ...]] = ()

    def identity(self) -> dict[str, Any]:
        """The spec as it must match on resume."""
        d = self.to_dict()
        for k in self.NON_IDENTITY:
            d.pop(k, None)
        return d

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}


@dataclass
class EvalSpec(ResumableSpec):
    """Everything that defines one evaluation run (the options of ``xke eval``).

    ``out`` is where results go; ``save_edited``, ``device`` and ``progress``
    do not change results and may differ on resume. ``method_overrides`` are
    extra method options (merged after ``config``).
    """

    model: str
    out: str
    method: str = "none"
    bench: str = "jsonl"
    data: str = ""
    edit_lang: str = "en"
    test_langs: list[str] = field(default_factory=lambda: ["en"])
    protocol: Literal["single", "batch", "sequential"] = "single"
    batch_size: int = 1
    limit: int | None = None
    seed: int = 0
    config: str | None = None
    split: Literal["train", "heldout", "all"] = "all"
    mode: Literal["gold", "retrieve"] = "gold"
    save_deltas: bool = False
    save_edited: str | None = None
    eval_after_each: bool = False
    dtype: str = "auto"
    device: str = "auto"
    template: Literal["auto", "chat", "plain"] = "auto"
    #: chat templates with a reasoning switch (Qwen3): thinking mode on; off (enable_thinking=False) by default
    thinking: bool = False
    max_new_tokens: int = 16
    token_budget: int = 8192
    method_overrides: dict[str, Any] = field(default_factory=dict)
    #: let ``save_edited`` replace an existing model folder (even the model being read)
    overwrite: bool = False
    #: evaluation profile (xke, xkde-release, bizsre, easyedit): whose definitions the metrics follow
    profile: str = "xke"
    #: system message of chat prompts (default: the profile's, else the chat template's own)
    system_prompt: str | None = None

    #: fields that may change between a run and its resumption
    NON_IDENTITY: ClassVar[tuple[str, ...]] = ("out", "save_edited", "device", "overwrite")

    def validate(self) -> None:
        from ..data.languages import normalize_lang, parse_langs

        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; use one of {', '.join(PROTOCOLS)}")
        if self.split not in SPLITS:
            raise ConfigError(f"unknown split {self.split!r}; use one of {', '.join(SPLITS)}")
        if self.mode not in ("gold", "retrieve"):
            raise ConfigError(f"unknown mode {self.mode!r}; use gold or retrieve")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.out:
            raise ConfigError("no output directory given (--out DIR)")
        from .profiles import get_profile
        self.profile = get_profile(self.profile).name
        if self.protocol == "single" and self.batch_size != 1:
            raise ConfigError("--batch-size applies to the batch and sequential protocols; single edits one case")
        if self.save_edited and self.protocol == "single":
            raise ConfigError("--save-edited needs --protocol batch or sequential (single restores after every case)")
        if self.eval_after_each and self.protocol != "sequential":
            raise ConfigError("--eval-after-each applies to --protocol sequential only")
        if isinstance(self.test_langs, str):
            self.test_langs = parse_langs(self.test_langs)
        else:
            self.test_langs = parse_langs(list(self.test_langs))
        self.edit_lang = "mix" if str(self.edit_lang).strip().lower() == "mix" else normalize_lang(self.edit_lang)

    @property
    def edit_langs(self) -> list[str]:
        """Languages of the requests of one case (``["zh", "en"]`` for mix)."""
        return ["zh", "en"] if self.edit_lang == "mix" else [self.edit_lang]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "eval spec") -> "EvalSpec":
        """Build and validate a spec from a mapping (e.g. one entry of an experiment YAML)."""
        return from_dict(cls, data, source=source)


# ------------------------------------------------------------------------------- results file
class ResultsFile:
    """``cases.jsonl``: typed JSON lines appended with flush + fsync; a torn last line is dropped on open."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path.exists():
            raw = path.read_bytes()
            good = 0
            for line in raw.split(b"\n")[:-1]:  # the last piece is b"" or a torn line
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    break
                good += len(line) + 1
            if good != len(raw):  # torn or garbage tail from a killed run: cut it off
                with open(path, "r+b") as f:
                    f.truncate(good)
        self._fh = open(path, "a", encoding="utf-8")

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        self._fh.write(text)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records.extend(records)

    def of_type(self, t: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("type") == t]

    def close(self) -> None:
        self._fh.close()


def _read_spec(out: Path) -> dict[str, Any] | None:
    """The ``spec.json`` already in ``out`` (``None`` when there is none)."""
    p = out / "spec.json"
    if not p.exists():
        return None
    try:
        old = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not valid JSON ({e}); delete it or use another --out") from None
    if not isinstance(old, dict):
        raise ConfigError(f"{p} is not an xke spec (a JSON object); delete it or use another --out")
    return old


def _refuse(out: Path, parts: list[str]) -> None:
    raise ConfigError(f"{out} holds results of a different run ({'; '.join(parts)}); "
                      "use another --out, or delete the directory to start over")


def _check_spec(out: Path, spec: EvalSpec, inputs: dict[str, str | None] | None = None) -> None:
    """Refuse an ``out`` whose ``spec.json`` differs from ``spec`` (fields, or input file hashes)."""
    old = _read_spec(out)
    if old is None:
        return
    ident = spec.identity()
    # a field added after the run was written reads as its default
    defaults = {f.name: f.default for f in dataclasses.fields(spec) if f.default is not dataclasses.MISSING}
    old_ident = {k: v for k, v in {**{k: defaults.get(k) for k in ident if k not in old}, **old}.items()
                 if k not in spec.NON_IDENTITY and k != "resolved"}
    diff = sorted(k for k in set(old_ident) | set(ident) if old_ident.get(k) != ident.get(k))
    if diff:
        _refuse(out, [f"{k}: {old_ident.get(k)!r} -> {ident.get(k)!r}" for k in diff])
    old_inputs = (old.get("resolved") or {}).get("inputs") or {}
    changed = [k for k in (inputs or {}) if k in old_inputs and old_inputs[k] != inputs[k]]
    if changed:
        names = {"data": f"--data {spec.data}", "config": f"--config {spec.config}", "memory": "the edit memory"}
        _refuse(out, [f"{names.get(k, k)} changed since the run started (sha256 {str(old_inputs[k])[:12]} -> "
                      f"{str(inputs[k])[:12]})" for k in changed])


def _check_resolved(out: Path, spec: EvalSpec, resolved: dict[str, Any]) -> None:
    """Compare the resolved method config and inputs with ``spec.json`` (refuse a difference), or write
    ``spec.json`` with them when the run is new."""
    old = _read_spec(out)
    if old is None or "resolved" not in old:
        if old is not None:  # written before xke recorded inputs: check the options, then record them from now on
            _check_spec(out, spec)
        p = out / "spec.json"
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({**(old or spec.to_dict()), "resolved": resolved}, indent=2, ensure_ascii=False),
                       encoding="utf-8")
        os.replace(tmp, p)
        return
    _check_spec(out, spec, resolved.get("inputs"))
    old_cfg = (old.get("resolved") or {}).get("method_config")
    new_cfg = resolved["method_config"]
    if old_cfg is not None and old_cfg != new_cfg:
        keys = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
        _refuse(out, [f"method option {k}: {old_cfg.get(k)!r} -> {new_cfg.get(k)!r}" for k in keys])


def _input_hashes(spec: EvalSpec) -> dict[str, str | None]:
    """SHA-256 of the data file (or folder) and of the ``--config`` YAML."""
    from ..fsutil import hash_path

    return {"data": hash_path(spec.data) if spec.data else None,
            "config": hash_path(spec.config) if spec.config else None}


def _run_id(out: Path) -> str:
    old = _read_spec(out)
    rid = ((old or {}).get("resolved") or {}).get("run_id")
    if isinstance(rid, str) and rid:
        return rid
    import uuid
    return uuid.uuid4().hex[:16]


#: batch id prefix of the edits an eval run stores in a shared memory (left out of the memory's hash)
EVAL_BATCH_PREFIX = "xke-eval-"


def _check_save_edited(spec: EvalSpec, loaded=None) -> None:
    """Refuse (before any work) a ``--save-edited`` folder that is the model being read or an existing
    non-empty folder, unless ``overwrite``; and one that is a file or cannot be written."""
    if not spec.save_edited:
        return
    from ..fsutil import prepare_out_dir
    from ..world.provider import model_path

    d = Path(spec.save_edited).expanduser()
    if d.exists() and not d.is_dir():
        raise ConfigError(f"--save-edited {d} is a file; give a folder")
    src = Path(loaded.path) if loaded is not None and getattr(loaded, "path", None) else model_path(spec.model)
    same = d.exists() and Path(src).exists() and os.path.samefile(d, src)
    if same and not spec.overwrite:
        raise ConfigError(f"--save-edited {d} is the model being evaluated ({spec.model}); writing there would "
                          "replace its original weights. Give another folder, or pass --overwrite")
    if d.exists() and any(d.iterdir()) and not spec.overwrite:
        raise ConfigError(f"--save-edited {d} already exists and is not empty; give a new folder, or pass "
                          "--overwrite to replace it")
    prepare_out_dir(d.parent if str(d.parent) else Path("."), what="--save-edited folder")


def check_prompt_lengths(cases: Sequence, langs: Sequence[str], tok, formatter, ctx: int | None,
                         max_new_tokens: int) -> None:
    """Refuse (before any edit) a query whose formatted prompt plus ``max_new_tokens`` is longer than the
    model's context ``ctx``: :class:`DataError` naming the file, record and field."""
    if not ctx:
        return
    from ..models.prompts import encode_prompt

    fields = {"reliability": "prompt", "locality": "locality_prompt", "portability": "portability_prompt"}
    for c in cases:
        for lang in langs:
            if lang not in c.views:
                continue
            for q in c.queries(lang):
                n = len(encode_prompt(tok, formatter.format(q.prompt, q.style)))
                if n + max_new_tokens > ctx:
                    fname = fields.get(q.kind, f"paraphrases[{q.index}]")
                    prov = c.provenance
                    raise DataError(f"case {c.case_id!r}: the {q.kind} prompt is {n} tokens; with max_new_tokens "
                                    f"{max_new_tokens} it does not fit the model's context of {ctx} tokens "
                                    "(xke never truncates prompts silently); shorten it or lower --max-new-tokens",
                                    path=prov.file if prov else None, row=prov.row if prov else None,
                                    field=f"views.{lang}.{fname}")


# ------------------------------------------------------------------------------- cases
def load_cases(spec: EvalSpec) -> list:
    """The cases of a spec: loaded with the languages needed, split-filtered, limited."""
    from ..data.loaders import load_bench

    need = list(dict.fromkeys(spec.edit_langs + list(spec.test_langs)))
    cases = list(load_bench(spec.bench, spec.data, langs=need,
                            limit=spec.limit if spec.split == "all" else None))
    if spec.split != "all":
        if not any(isinstance(c.meta, dict) and "split" in c.meta for c in cases):
            raise DataError(f"--split {spec.split}: the cases have no split marks (meta.split); use --split all",
                            path=spec.data)
        cases = [c for c in cases if c.meta.get("split") == spec.split]
        if spec.limit:
            cases = cases[:spec.limit]
    if not cases:
        raise DataError("no cases to evaluate" + (f" in split {spec.split!r}" if spec.split != "all" else ""),
                        path=spec.data)
    for c in cases:
        missing = [lang for lang in need if lang not in c.views]
        if missing:
            prov = f" (record {c.provenance.row})" if c.provenance else ""
            raise DataError(f"case {c.case_id!r}{prov} has no view in {missing}; it has {c.languages}",
                            path=spec.data)
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise DataError("case ids are not unique; results could not be matched to cases", path=spec.data)
    return cases


# ------------------------------------------------------------------------------- evaluation
class Evaluator:
    """Scores cases' queries with the current (edited) model through a method's prompts.

    ``profile`` (:mod:`xke.eval.profiles`) fixes the locality reference, the ``nq question: `` prefix,
    how a prompt and its answer are tokenized and whether greedy answers are generated."""

    def __init__(self, engine, method, formatter, tokenizer, test_langs: Sequence[str], profile=None):
        from .profiles import encoder_for, get_profile

        self.engine = engine
        self.method = method
        self.formatter = formatter
        self.tok = tokenizer
        self.test_langs = list(test_langs)
        #: (model context, max_new_tokens): a method prompt that does not fit is refused, never cut
        self.limits: tuple[int, int] | None = None
        self.profile = profile if profile is not None else get_profile("xke")
        self.encode = encoder_for(formatter)

    def _check_fits(self, prompt: list[int], case_id: str, q) -> None:
        if self.limits and len(prompt) + self.limits[1] > self.limits[0]:
            raise ModelError(f"case {case_id!r}: the {q.kind} prompt in {q.lang} with the method's context is "
                             f"{len(prompt)} tokens; with max_new_tokens {self.limits[1]} it does not fit the "
                             f"model's context of {self.limits[0]} tokens (lower top_k/k or --max-new-tokens)")

    def tokenize(self, s: str) -> list[int]:
        return list(self.tok(s, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=self.profile.skip_special,
                               clean_up_tokenization_spaces=False)

    def _query(self, q):
        """``q`` as the profile reads it (the ``nq question: `` prefix put back where the profile keeps it)."""
        if self.profile.keep_nq_prefix and q.prefix:
            return dataclasses.replace(q, prompt=q.prefix + q.prompt)
        return q

    @staticmethod
    def _pre_key(q) -> str:
        return q.lang if not q.index else f"{q.lang}#{q.index}"

    def _locality_queries(self, cases: Sequence) -> list[tuple[int, Any]]:
        return [(ci, self._query(q)) for ci, c in enumerate(cases) for lang in self.test_langs
                for q in c.queries(lang) if q.kind == "locality"]

    def pre_edit(self, cases: Sequence) -> list[dict[str, Any]]:
        """Pre-edit locality references (unedited model, plain prompt) of ``cases``: one record per case.

        Profile ``locality: own``: the model's greedy answer and the argmax while forcing it;
        ``dataset``: the argmax while forcing the dataset's answer."""
        from ..models.prompts import encode_prompt

        qs = self._locality_queries(cases)
        recs: list[dict[str, Any]] = [{"type": "pre", "case_id": c.case_id, "langs": {}} for c in cases]
        if self.profile.locality == "dataset":
            items = [self.encode(self.tok, self.formatter.format(q.prompt, q.style), q.target, q.lang)[:2]
                     for _, q in qs]
            argmax = self.engine.score(items)
            for (ci, q), (_, fed), am in zip(qs, items, argmax):
                recs[ci]["langs"][self._pre_key(q)] = {"text": self.decode(am), "answer_ids": list(fed),
                                                       "argmax": am, "reference": "dataset"}
            return recs
        prompts = [encode_prompt(self.tok, self.formatter.format(q.prompt, q.style)) for _, q in qs]
        gens = self.engine.generate(prompts)
        answers = []
        for (_, q), g in zip(qs, gens):
            ans = list(g.ids)
            if not ans:  # the model answered nothing: score agreement on the dataset's answer instead
                ptext = self.formatter.format(q.prompt, q.style)
                ans = self.encode(self.tok, ptext, q.target or "", q.lang)[1]
            answers.append(ans)
        argmax = self.engine.score([(p, a) for p, a in zip(prompts, answers)])
        for (ci, q), g, a, am in zip(qs, gens, answers, argmax):
            recs[ci]["langs"][self._pre_key(q)] = {"text": g.text, "answer_ids": a, "argmax": am}
        return recs

    def evaluate(self, cases: Sequence, pre: dict[str, dict[str, Any]],
                 edited: set[str] | None = None) -> list[dict[str, Any]]:
        """Post-edit results of ``cases``: one record per case with every query's metrics
        (names in :data:`xke.eval.profiles.METRIC_DEFINITIONS`).

        ``edited``: the :meth:`~xke.data.schema.EditCase.fact_keys` of every edit in force. A case whose
        locality question asks about one of those facts has no locality to measure (the right answer is
        now that edit's): its locality queries are left out and the record says ``locality_skipped``."""
        from ..models.prompts import encode_prompt
        from . import metrics as M

        prof = self.profile
        skipped = {ci for ci, c in enumerate(cases) if edited and c.locality_keys() & edited}
        qs = [(ci, self._query(q)) for ci, c in enumerate(cases) for lang in self.test_langs
              for q in c.queries(lang) if not (q.kind == "locality" and ci in skipped)]
        items, prompts, refs = [], [], []
        for ci, q in qs:
            ptext = self.method.prompt(q)
            if q.kind == "locality" and prof.locality == "own":
                p = encode_prompt(self.tok, ptext)
                ref = pre[cases[ci].case_id]["langs"][self._pre_key(q)]
                items.append((p, ref["answer_ids"]))
                refs.append(ref)
            elif q.kind == "locality":
                p, fed, _ = self.encode(self.tok, ptext, q.target, q.lang)
                items.append((p, fed))
                refs.append(pre[cases[ci].case_id]["langs"][self._pre_key(q)])
            else:
                p, fed, cmp = self.encode(self.tok, ptext, q.target, q.lang)
                items.append((p, fed))
                refs.append(cmp)
            self._check_fits(p, cases[ci].case_id, q)
            prompts.append(p)
        preds = self.engine.score(items)
        gens = self.engine.generate(prompts) if prof.generate else [None] * len(prompts)
        out: list[dict[str, Any]] = [{"case_id": c.case_id, "queries": []} for c in cases]
        for ci in skipped:
            out[ci]["locality_skipped"] = True
        for (ci, q), pred, g, ref in zip(qs, preds, gens, refs):
            rec: dict[str, Any] = {"lang": q.lang, "kind": q.kind, "index": q.index}
            if q.kind == "locality":
                if len(ref["argmax"]) != len(pred):  # the answer tokenized differently after another prompt
                    rec["length_mismatch"] = True
                agree = (M.argmax_agreement(ref["argmax"], pred)
                         if ref["argmax"] and len(ref["argmax"]) == len(pred) else None)
                pre_text, post_text = ref["text"] if prof.locality == "dataset" else self.decode(ref["argmax"]), \
                    self.decode(pred)
                names = ("loc_acc", "loc_f1", "loc_em") if prof.locality == "dataset" else ("tf_acc", "tf_f1", "tf_em")
                rec[names[0]] = None if agree is None else float(agree)
                rec[names[1]] = float(M.token_f1(post_text, pre_text, self.tok, strip=False))
                rec[names[2]] = float(M.exact_match(post_text, pre_text, strip=False))
                gold = ref["text"]
            else:
                tf = M.teacher_forced_accuracy(pred, ref) if ref else None
                pred_text, gold_text = self.decode(pred), self.decode(ref)
                rec["tf_acc"] = None if tf is None else float(tf)
                rec["tf_f1"] = float(M.token_f1(pred_text, gold_text, self.tok, strip=False))
                rec["tf_em"] = float(M.exact_match(pred_text, gold_text, strip=False))
                gold = q.target
            if g is not None:
                rec["f1"] = float(M.token_f1(g.text, gold, self.tokenize))
                rec["em"] = float(M.exact_match(g.text, gold))
                rec["pred"] = g.text
            else:
                rec["pred_tf"] = self.decode(pred)
            out[ci]["queries"].append(rec)
        return out


# ------------------------------------------------------------------------------- deltas
class DeltaAccumulator:
    """Sum over applied batches of (weights after the batch - weights before), per parameter."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.out = out
        self.sums: dict[str, torch.Tensor] = {}
        self.units: list[int] = []
        self.partial = out / "deltas.partial.safetensors"
        self.partial_meta = out / "deltas.partial.json"

    def add(self, handle) -> None:
        if not self.enabled:
            return
        for name, d in handle.deltas().items():
            d = d.detach().float().cpu()
            self.sums[name] = self.sums[name] + d if name in self.sums else d.clone()

    def load_partial(self) -> None:
        if not (self.enabled and self.partial.exists() and self.partial_meta.exists()):
            return
        from safetensors.torch import load_file

        self.sums = dict(load_file(str(self.partial)))
        self.units = list(json.loads(self.partial_meta.read_text())["units"])

    def checkpoint(self, unit: int) -> None:
        if not self.enabled:
            return
        from safetensors.torch import save_file

        self.units.append(unit)
        tmp = self.out / "deltas.partial.tmp"
        save_file({k: v.contiguous() for k, v in self.sums.items()}, str(tmp))
        os.replace(tmp, self.partial)
        tmpj = self.out / "deltas.partial.json.tmp"
        tmpj.write_text(json.dumps({"units": self.units}))
        os.replace(tmpj, self.partial_meta)

    def finish(self, meta: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.sums.items()}, str(self.out / "deltas.safetensors"))
        meta = dict(meta, params={k: list(v.shape) for k, v in self.sums.items()})
        (self.out / "deltas.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        for p in (self.partial, self.partial_meta):
            if p.exists():
                p.unlink()


# ------------------------------------------------------------------------------- the run
def _seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % (2 ** 32))
    except ImportError:  # pragma: no cover
        pass


def _unit_seed(spec: EvalSpec, unit: int) -> int:
    return spec.seed * 1_000_003 + unit


def _chunks(seq: Sequence, n: int) -> list[list]:
    return [list(seq[i:i + n]) for i in range(0, len(seq), n)]


def _bar(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="unit", dynamic_ncols=True, leave=False)


def run_eval(spec: EvalSpec, *, loaded=None, progress: bool = True,
             on_unit: Callable[[int], None] | None = None,
             after_edits: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the evaluation ``spec``; returns the metrics dict also written to ``out/metrics.json``.

    ``loaded`` (a :class:`xke.models.loading.LoadedModel`) reuses a model already in memory; its weights
    are left as they were. ``on_unit`` is called with the number of units finished so far (for tests).
    ``after_edits`` (sequential protocol only) is called once with the method while every edit of the run
    is in force, after the final evaluation and before the edits are undone (``xke general`` measures the
    edited model there); a resumed run re-applies the edits for it.
    """
    from ..fsutil import DirLock, prepare_out_dir
    from ..methods.base import get_method_class
    from ..models.loading import pick_device, pick_dtype

    # checks before any work: options, method, device, --save-edited, --out (then locked)
    spec.validate()
    if after_edits is not None and spec.protocol != "sequential":
        raise ConfigError("after_edits needs the sequential protocol (batch and single restore after each unit)")
    cls = get_method_class(spec.method)  # unknown method: fail before loading the model
    if spec.mode == "retrieve" and cls.kind != "context":
        raise ConfigError(f"--mode retrieve applies to in-context methods (ike, lte, xkde); {spec.method} "
                          "edits weights")
    if loaded is None:
        pick_dtype(spec.dtype, pick_device(spec.device))
    _check_save_edited(spec, loaded)
    fresh = not Path(spec.out).expanduser().exists()
    out = prepare_out_dir(spec.out)
    lock = DirLock(out, "another xke eval").acquire()
    try:
        return _run_locked(spec, out, cls, loaded, progress, on_unit, after_edits)
    finally:
        lock.release()
        if fresh and not (out / "spec.json").exists():  # refused before any result: leave no empty --out
            _remove_if_only_lock(out)


def _remove_if_only_lock(out: Path) -> None:
    try:
        if {p.name for p in out.iterdir()} <= {".xke.lock"}:
            (out / ".xke.lock").unlink(missing_ok=True)
            out.rmdir()
    except OSError:
        pass


def _run_locked(spec: EvalSpec, out: Path, cls, loaded, progress: bool, on_unit, after_edits=None) -> dict[str, Any]:
    """:func:`run_eval` once ``out`` is checked and locked."""
    from ..methods.base import build_method
    from ..models.loading import context_length, load_model
    from ..world.provider import model_path, provide_dir
    from .engine import Engine
    from .profiles import get_profile, make_formatter
    from .report import aggregate, write_run_report

    inputs = _input_hashes(spec)
    _check_spec(out, spec, inputs)
    cases = load_cases(spec)

    lm = loaded if loaded is not None else load_model(str(model_path(spec.model)), dtype=spec.dtype, device=spec.device)
    model, tok = lm.model, lm.tokenizer
    # the model's provider: preset family and method options it fills (the toy world: corpus, pool, retriever)
    provided = provide_dir(getattr(lm, "path", None) or model_path(spec.model),
                           retrieve=cls.kind == "context" and spec.mode == "retrieve")
    _seed_all(spec.seed)
    profile = get_profile(spec.profile)
    formatter = make_formatter(profile, tok, template=spec.template, system_prompt=spec.system_prompt,
                               model_name=f"{spec.model} {getattr(lm, 'path', '')}", thinking=spec.thinking)
    ctx = context_length(model, tok)
    check_prompt_lengths(cases, list(dict.fromkeys(spec.edit_langs + list(spec.test_langs))), tok, formatter, ctx,
                         spec.max_new_tokens)
    overrides = dict(spec.method_overrides or {})
    if cls.kind == "context":
        overrides["mode"] = spec.mode
    if not profile.strip and "verbatim_descriptors" in {f.name for f in dataclasses.fields(cls.config_class)}:
        overrides.setdefault("verbatim_descriptors", True)
    method = build_method(spec.method, model, tok, formatter, config_path=spec.config, overrides=overrides,
                          family=provided.family, defaults=provided.method_defaults)
    policy = getattr(method.config, "subject_not_found", "fail")
    try:
        cases, skipped = _skip_cases_without_subject(spec, cases, method)
        resolved = {"run_id": _run_id(out),
                    "method_config": json.loads(json.dumps(dataclasses.asdict(method.config), default=str)),
                    "inputs": dict(inputs)}
        if cls.kind == "context" and spec.mode == "retrieve" and getattr(method.config, "memory_path", None):
            # the run's edits go to their own batch; a killed run's leftovers are deleted before anything else
            batch = EVAL_BATCH_PREFIX + resolved["run_id"]
            method._stream = batch
            method.memory.delete_batch(batch)
            resolved["memory_batch"] = batch
            resolved["inputs"]["memory"] = method.memory.content_hash(exclude_prefix=EVAL_BATCH_PREFIX)
        _check_resolved(out, spec, resolved)
    except BaseException:
        method.close()
        raise
    engine = Engine(model, tok, max_new_tokens=spec.max_new_tokens, token_budget=spec.token_budget)
    ev = Evaluator(engine, method, formatter, tok, spec.test_langs, profile=profile)
    ev.limits = (ctx, spec.max_new_tokens) if ctx else None
    results = ResultsFile(out / "cases.jsonl")
    deltas = DeltaAccumulator(out, spec.save_deltas)
    try:
        # 1. pre-edit answers, in fixed chunks, before any edit
        pre = {r["case_id"]: r for r in results.of_type("pre")}
        pre_chunks = _chunks(cases, CHUNK)
        todo = [ch for ch in pre_chunks if any(c.case_id not in pre for c in ch)]
        for ch in _bar(todo, len(todo), "pre-edit answers", progress and len(todo) > 1):
            recs = ev.pre_edit(ch)
            results.append(recs)
            pre.update({r["case_id"]: r for r in recs})

        # 2. protocol
        from ..methods.weight.subject import subject_not_found_policy

        with subject_not_found_policy(policy if policy in ("skip", "last", "fail") else "fail"):
            if spec.protocol in ("single", "batch"):
                _run_restoring(spec, cases, method, ev, pre, results, deltas, lm, progress, on_unit)
            else:
                _run_sequential(spec, cases, method, ev, pre, results, deltas, lm, progress, on_unit, after_edits)

        # 3. metrics
        order = {c.case_id: i for i, c in enumerate(cases)}
        final = _final_records(spec, results)
        recs = [final[cid] for cid in sorted(final, key=order.__getitem__) if cid in order]
        metrics = aggregate(recs, spec)
        if skipped:
            metrics["skipped"] = {"subject_not_found": len(skipped), "policy": "skip",
                                  "case_ids": skipped[:50]}
        if spec.protocol == "sequential" and spec.eval_after_each:
            after = {}
            for r in results.of_type("after_each"):
                for cr in r["results"]:
                    after[cr["case_id"]] = cr
            arecs = [after[cid] for cid in sorted(after, key=order.__getitem__) if cid in order]
            am = aggregate(arecs, spec)
            metrics["after_each"] = {"by_test_lang": am["by_test_lang"], "avg": am["avg"]}
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, out / "metrics.json")
        write_run_report(out, metrics)
        return metrics
    finally:
        results.close()
        method.close()


def _skip_cases_without_subject(spec: EvalSpec, cases: list, method) -> tuple[list, list[str]]:
    """With a locate-and-edit method whose ``subject_not_found`` is ``skip``: the cases whose edit subject
    occurs in every rewrite prompt, and the ids of those left out (warned about; counted in metrics.json)."""
    cfg = method.config
    if getattr(cfg, "subject_not_found", None) != "skip" or not hasattr(cfg, "context_prefixes"):
        return cases, []
    from ..methods.weight.subject import requests_without_subject

    keep, skipped = [], []
    for c in cases:
        missing = requests_without_subject(method.formatter, _requests(spec, [c]), cfg.context_prefixes)
        (skipped if missing else keep).append(c)
    if skipped and not keep:
        raise DataError(f"every one of the {len(cases)} cases has an edit subject that does not occur in its "
                        f"prompt ({spec.edit_lang}); {spec.method} edits at the subject's token. Use "
                        "'subject_not_found: last' in the method's --config YAML to edit at the prompt's last token instead")
    if skipped:
        warnings.warn(f"{len(skipped)} of {len(cases)} cases skipped: the edit subject does not occur in the "
                      f"prompt (subject_not_found: skip; counted in metrics.json 'skipped')", stacklevel=2)
    return keep, [c.case_id for c in skipped]


def _requests(spec: EvalSpec, cases: Sequence) -> list:
    return [c.request(lang) for c in cases for lang in spec.edit_langs]


def _final_records(spec: EvalSpec, results: ResultsFile) -> dict[str, dict[str, Any]]:
    return _final_of(spec.protocol, results.records)


def _final_of(protocol: str, records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    final: dict[str, dict[str, Any]] = {}
    kind = "unit" if protocol in ("single", "batch") else "final"
    for r in records:
        if r.get("type") == kind:
            for cr in r["results"]:
                final[cr["case_id"]] = cr
    return final


def final_records(out: str | Path) -> dict[str, dict[str, Any]]:
    """The per-case result records (``{"case_id", "queries": [{lang, kind, pred, em, ...}]}``) of the run in
    ``out``, by case id, as its ``metrics.json`` aggregates them (read-only)."""
    out = Path(out)
    spec = _read_spec(out) or {}
    f = out / "cases.jsonl"
    if not f.exists():
        raise XkeError(f"{out}: no cases.jsonl (is it an xke eval output directory?)")
    lines = f.read_text(encoding="utf-8").splitlines()
    return _final_of(str(spec.get("protocol", "single")), (json.loads(x) for x in lines if x.strip()))


def _save_edited(spec: EvalSpec, lm) -> None:
    """Save the edited model into ``--save-edited`` through a temporary folder swapped in at the end."""
    from ..fsutil import replace_dir

    def fill(tmp: Path) -> None:
        lm.model.save_pretrained(tmp, safe_serialization=True)
        lm.tokenizer.save_pretrained(tmp)

    replace_dir(Path(spec.save_edited).expanduser(), fill)


def _deltas_meta(spec: EvalSpec, n_cases: int, n_batches: int) -> dict[str, Any]:
    return {"protocol": spec.protocol, "batch_size": spec.batch_size, "n": n_cases, "n_batches": n_batches,
            "edit_lang": spec.edit_lang, "method": spec.method, "model": spec.model, "bench": spec.bench,
            "definition": "per edited parameter: sum over applied batches of (weights after - weights before)"
                          + ("; equals final - original" if spec.protocol == "sequential" else "")}


def edited_facts(cases: Iterable) -> set[str]:
    """The union of the cases' :meth:`~xke.data.schema.EditCase.fact_keys`: the facts their edits change."""
    return {k for c in cases for k in c.fact_keys()}


def _run_restoring(spec, cases, method, ev, pre, results, deltas, lm, progress, on_unit) -> None:
    """single and batch: apply a unit's requests, evaluate its cases, restore."""
    bs = 1 if spec.protocol == "single" else spec.batch_size
    units = _chunks(cases, bs)
    done = {r["unit"] for r in results.of_type("unit")}
    deltas.load_partial()
    if deltas.enabled:  # units finished before a kill but missing from the partial deltas: redo their deltas
        for u in sorted(done - set(deltas.units)):
            _seed_all(_unit_seed(spec, u))
            handle = method.apply(_requests(spec, units[u]))
            deltas.add(handle)
            handle.restore()
            deltas.checkpoint(u)
    todo = [u for u in range(len(units)) if u not in done]
    n_done = len(done)
    for u in _bar(todo, len(units), f"{spec.protocol} edits", progress):
        _seed_all(_unit_seed(spec, u))
        handle = method.apply(_requests(spec, units[u]))
        try:
            recs = ev.evaluate(units[u], pre, edited_facts(units[u]))
            deltas.add(handle)
            if spec.save_edited and u == len(units) - 1:
                _save_edited(spec, lm)
        finally:
            handle.restore()
        results.append([{"type": "unit", "unit": u, "case_ids": [c.case_id for c in units[u]], "results": recs}])
        deltas.checkpoint(u)
        n_done += 1
        if on_unit:
            on_unit(n_done)
    deltas.finish(_deltas_meta(spec, len(cases), len(units)))


def _run_sequential(spec, cases, method, ev, pre, results, deltas, lm, progress, on_unit, after_edits=None) -> None:
    """sequential: apply groups one after another, evaluate all cases at the end (then ``after_edits(method)``);
    undo everything last."""
    groups = _chunks(cases, spec.batch_size)
    final_chunks = _chunks(cases, CHUNK)
    final_done = {r["case_id"] for r in results.of_type("final")}
    todo_final = [j for j, ch in enumerate(final_chunks) if any(c.case_id not in final_done for c in ch)]
    after_done = {r["unit"] for r in results.of_type("after_each")}
    need_edits = (bool(todo_final) or (spec.save_deltas and not (Path(spec.out) / "deltas.safetensors").exists())
                  or bool(spec.save_edited) or (spec.eval_after_each and len(after_done) < len(groups))
                  or after_edits is not None)
    if not need_edits:
        return
    handles = []
    n_done = 0
    in_force: set[str] = set()   # fact keys of the groups applied so far
    try:
        for g in _bar(range(len(groups)), len(groups), "sequential edits", progress):
            _seed_all(_unit_seed(spec, g))
            handle = method.apply(_requests(spec, groups[g]))
            handles.append(handle)
            deltas.add(handle)  # right after the apply: the sum telescopes to final - original
            in_force |= edited_facts(groups[g])
            if spec.eval_after_each and g not in after_done:
                recs = ev.evaluate(groups[g], pre, in_force)
                results.append([{"type": "after_each", "unit": g, "case_ids": [c.case_id for c in groups[g]],
                                 "results": recs}])
                n_done += 1
                if on_unit:
                    on_unit(n_done)
        for j in _bar(todo_final, len(final_chunks), "final evaluation", progress):
            recs = ev.evaluate(final_chunks[j], pre, in_force)
            results.append([{"type": "final", "chunk": j, "case_id": r["case_id"], "results": [r]} for r in recs])
            n_done += 1
            if on_unit:
                on_unit(n_done)
        if after_edits is not None:
            after_edits(method)
        if spec.save_edited:
            _save_edited(spec, lm)
        deltas.finish(_deltas_meta(spec, len(cases), len(groups)))
    finally:
        for h in reversed(handles):
            h.restore()


def spec_from_args(args) -> EvalSpec:
    """An :class:`EvalSpec` from parsed ``xke eval`` arguments."""
    d = {k: getattr(args, k) for k in ("model", "out", "method", "bench", "data", "edit_lang", "test_langs",
                                       "protocol", "batch_size", "limit", "seed", "config", "split", "mode",
                                       "save_deltas", "save_edited", "eval_after_each", "dtype", "device",
                                       "template", "thinking", "max_new_tokens", "overwrite", "profile",
                                       "system_prompt")
         if getattr(args, k, None) is not None}
    if isinstance(d.get("test_langs"), str):
        d["test_langs"] = [s for s in d["test_langs"].split(",") if s.strip()]
    if "batch_size" not in d and d.get("protocol") == "single":
        d["batch_size"] = 1
    try:
        return EvalSpec.from_dict(d, source="xke eval")
    except XkeError:
        raise
