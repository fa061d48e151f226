"""General ability before and after editing, with lm-evaluation-harness (X-KDE Table 3; ``xke general``).

Does editing break the model? :func:`run_general` runs lm-evaluation-harness tasks (its Python API on
the model already in memory: :func:`make_lm` wraps it in lm-eval's ``HFLM``, nothing is reloaded) on

- the unedited model (``base``), then
- for each method and each N of ``n_edits``: the model with the first N edit cases applied -- a weight
  method's edits applied sequentially (``batch_size`` per step; ``protocol: batch`` applies all N at once),
  an in-context method's N edits stored in its memory (``mode: retrieve``; every prompt of every task gets
  the edits its question retrieves, rendered as the method renders them).

The edits go through the evaluation runner (:func:`xke.eval.runner.run_eval`, sequential protocol): it also
measures reliability and locality of those N edits in the same run, and calls back while every edit is in
force; that is where the tasks run. Results: ``general.json`` (per task scores, differences to base,
locality), ``general.md`` (Table-3 layout: one column per task, en then zh, avg; one row per model) and,
with more than one N, ``degradation.png`` (general ability and locality against the number of edits, log x).

Tasks (:func:`prepare_tasks`): lm-eval's own task names (their datasets must be on this machine already:
runs are offline, a missing dataset is a clear error naming it), task configs from ``include_paths``, the
configs xke ships for local copies of standard benchmarks (``xke/configs/lm_eval``: ``xke_mmlu``,
``xke_cmmlu``, ``xke_mc_en/zh``, ``xke_qa_en/zh``, data given as ``task_data``), and ``xke_world``: a task
group generated from a toy world (:func:`write_world_tasks`) -- multiple-choice and short-answer recall of
the facts no edit of the run changes, in en and zh, and the same questions in held-out forms.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from ..config import ConfigError, from_dict, list_presets, load_preset
from ..errors import DataError
from .runner import ResumableSpec

#: the packaged lm-eval task configs (templates whose data file xke fills in)
TEMPLATE_GROUP = "lm_eval"
WORLD_GROUP = "xke_world"
#: cases per person/company when generating world edit cases: every fact of every person and company
WORLD_PER_SUBJECT = 5
#: the world group's tasks: (kind of rows, packaged template per language)
WORLD_TASKS = (("mc", "xke_mc_{lang}"), ("qa", "xke_qa_{lang}"), ("heldout", "xke_qa_{lang}"))
WORLD_MC_CHOICES = 4


@dataclass
class GeneralSpec(ResumableSpec):
    """Options of ``xke general`` (see the module docstring). ``out``, ``device``, ``progress`` and
    ``lm_batch_size`` do not change results and may differ when a run is resumed."""

    model: str
    out: str
    methods: list[str] = field(default_factory=lambda: ["memit"])
    n_edits: list[int] = field(default_factory=lambda: [100])
    protocol: Literal["sequential", "batch"] = "sequential"
    batch_size: int = 1
    tasks: list[str] = field(default_factory=lambda: [WORLD_GROUP])
    task_data: dict[str, str] = field(default_factory=dict)
    include_paths: list[str] = field(default_factory=list)
    bench: str = "jsonl"
    data: str = ""
    #: the toy world of a world model (default: the world it was built in, or the one its config records)
    world_dir: str | None = None
    edit_lang: str = "en"
    test_langs: list[str] = field(default_factory=lambda: ["en", "zh"])
    limit: int | None = None
    num_fewshot: int | None = None
    seed: int = 0
    #: method options YAML per method name ("*": every method without its own)
    configs: dict[str, str] = field(default_factory=dict)
    #: extra method options per method name (merged after the YAML)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    template: Literal["auto", "chat", "raw"] = "auto"
    dtype: str = "auto"
    device: str = "auto"
    lm_batch_size: int = 32
    max_new_tokens: int = 16

    #: fields that may differ when a run is resumed or extended (each (method, N) point keeps its own key)
    NON_IDENTITY: ClassVar[tuple[str, ...]] = ("out", "device", "lm_batch_size", "methods", "n_edits", "configs",
                                               "method_overrides")

    def validate(self) -> None:
        from ..data.languages import parse_langs
        from ..methods.base import get_method_class

        if not self.out:
            raise ConfigError("no output directory given (--out DIR)")
        if not self.methods:
            raise ConfigError("no method given (--methods memit,xkde,...)")
        for m in self.methods:
            get_method_class(m)
        if not self.n_edits or any(int(n) < 1 for n in self.n_edits):
            raise ConfigError(f"--n-edits must be numbers >= 1, got {self.n_edits}")
        self.n_edits = sorted({int(n) for n in self.n_edits})
        if self.protocol not in ("sequential", "batch"):
            raise ConfigError(f"unknown protocol {self.protocol!r}; use sequential or batch")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.tasks:
            raise ConfigError("no task given (--tasks xke_world,xke_mmlu,...)")
        if self.template not in ("auto", "chat", "raw"):
            raise ConfigError(f"unknown template {self.template!r}; use auto, chat or raw")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.lm_batch_size < 1:
            raise ConfigError(f"--lm-batch-size must be >= 1, got {self.lm_batch_size}")
        for k in list(self.configs) + list(self.method_overrides):
            if k != "*" and k not in self.methods:
                raise ConfigError(f"method options for {k!r}, which --methods does not name")
        unknown = sorted(set(self.task_data) - set(self.tasks))
        if unknown:
            raise ConfigError(f"--task-data for {unknown}, which --tasks does not name")
        self.test_langs = parse_langs(list(self.test_langs))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "xke general") -> "GeneralSpec":
        """Build and validate a spec from a mapping."""
        return from_dict(cls, data, source=source)


# ------------------------------------------------------------------------------- lm-eval, offline
def require_lm_eval():
    """The ``lm_eval`` module, or a clear error saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise ConfigError("xke general needs lm-evaluation-harness: pip install 'xke[general]' "
                          "(or pip install 'lm-eval[hf]')") from None
    return lm_eval


def quiet_lm_eval() -> None:
    """No progress bars or info/warning lines from lm-eval and datasets (``--quiet``)."""
    import logging

    for name in ("lm_eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets
        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def go_offline() -> None:
    """No downloads at run time: Hugging Face hub and datasets offline (already-imported modules too)."""
    for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[k] = "1"
    try:
        import datasets.config as dc
        dc.HF_HUB_OFFLINE = True
        dc.HF_DATASETS_OFFLINE = True
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    try:
        import huggingface_hub.constants as hc
        hc.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):  # pragma: no cover
        pass


# ------------------------------------------------------------------------------- task configs
def task_templates() -> list[str]:
    """Names of the task configs xke ships (``xke/configs/lm_eval/*.yaml``)."""
    return list_presets(TEMPLATE_GROUP)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a task data file: a JSON list of objects or JSON lines; clear errors naming file and record."""
    from ..data.loaders import _read_json, _records

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError("task data file not found", path=str(p))
    if p.suffix == ".jsonl":
        recs = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON ({e.msg})", path=str(p), row=f"at line {i + 1}") from None
    else:
        recs = _records(_read_json(p), p)
    if not recs:
        raise DataError("no records", path=str(p))
    return recs


def check_task_data(path: str | Path, fields: Sequence[str], task: str) -> int:
    """Check that every record of ``path`` has the ``fields`` task ``task`` reads, with usable values
    (``question`` a string, ``choices`` a list of strings, ``answer`` a choice index or letter for
    multiple choice, a string or list of strings for short answers); returns the record count."""
    recs = read_records(path)
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            raise DataError(f"expected an object, got {type(r).__name__} (task {task})", path=str(path), row=i)
        for f in fields:
            if f not in r or r[f] is None:
                raise DataError(f"missing (task {task} reads {', '.join(fields)})", path=str(path), row=i, field=f)
        if "question" in fields and not (isinstance(r["question"], str) and r["question"].strip()):
            raise DataError("must be a non-empty string", path=str(path), row=i, field="question")
        if "choices" in fields:
            ch = r["choices"]
            if not (isinstance(ch, list) and len(ch) >= 2 and all(isinstance(c, str) for c in ch)):
                raise DataError("must be a list of at least 2 strings", path=str(path), row=i, field="choices")
            a = r["answer"]
            letters = [chr(ord("A") + k) for k in range(len(ch))]
            ok = (isinstance(a, int) and not isinstance(a, bool) and 0 <= a < len(ch)) or \
                (isinstance(a, str) and (a.strip() in letters or (a.strip().isdigit() and int(a) < len(ch))))
            if not ok:
                raise DataError(f"must be a choice index 0..{len(ch) - 1} or a letter {letters[0]}..{letters[-1]}, "
                                f"got {a!r}", path=str(path), row=i, field="answer")
        elif "answer" in fields:
            a = r["answer"]
            if not (isinstance(a, str) or (isinstance(a, list) and a and all(isinstance(x, str) for x in a))):
                raise DataError(f"must be a string or a list of strings, got {type(a).__name__}",
                                path=str(path), row=i, field="answer")
    return len(recs)


def task_config(template: str, data_path: str | Path, name: str | None = None) -> dict[str, Any]:
    """The packaged task config ``template`` reading ``data_path`` (checked), renamed ``name``."""
    cfg = load_preset(TEMPLATE_GROUP, template)
    fields = (cfg.get("metadata") or {}).get("fields") or []
    name = name or template
    check_task_data(data_path, fields, name)
    cfg = dict(cfg, task=name)
    cfg["dataset_kwargs"] = {"data_files": {"test": str(Path(data_path).expanduser().resolve())}}
    return cfg


def write_task(cfg: dict[str, Any], out_dir: Path) -> Path:
    """Write a task (or group) config as lm-eval YAML into ``out_dir``."""
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    name = cfg.get("task") if isinstance(cfg.get("task"), str) else cfg["group"]
    p = out_dir / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return p


# ------------------------------------------------------------------------------- the toy-world task group
def world_task_rows(world, lang: str, exclude: set[str], seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Rows of the world tasks in ``lang`` over every fact not in ``exclude`` (``fact:<subject>/<relation>``
    keys, :meth:`~xke.data.schema.EditCase.fact_keys`): ``mc`` (question, the true object among
    :data:`WORLD_MC_CHOICES` objects of its type, its index), ``qa`` (a training question form, the answer)
    and ``heldout`` (a held-out question form, the answer). Deterministic for ``seed``."""
    from ..world.world import RELATIONS, YEAR_RANGE

    rng = random.Random(f"general-{world.seed}-{seed}-{lang}")
    rows: dict[str, list[dict[str, Any]]] = {"mc": [], "qa": [], "heldout": []}
    for i, f in enumerate(world.all_facts()):
        if f"fact:{f.subject}/{f.relation}" in exclude:
            continue
        answer = world.answer(f.subject, f.relation, lang)
        otype = RELATIONS[f.relation].object_type
        if otype == "year":
            lo, hi = YEAR_RANGE[f.relation]
            pool = [y for y in range(lo, hi + 1) if y != f.object]
        else:
            pool = [e.id for e in world.entities_of(otype) if e.id != f.object]
        others = rng.sample(pool, min(WORLD_MC_CHOICES - 1, len(pool)))
        choices = [world.value_text(o, lang) for o in others]
        k = rng.randrange(len(choices) + 1)
        choices.insert(k, answer)
        rows["mc"].append({"question": world.question(f.subject, f.relation, lang, i), "choices": choices,
                           "answer": k, "fact": f"{f.subject}/{f.relation}"})
        rows["qa"].append({"question": world.question(f.subject, f.relation, lang, i), "answer": answer,
                           "fact": f"{f.subject}/{f.relation}"})
        rows["heldout"].append({"question": world.question(f.subject, f.relation, lang, i, heldout=True),
                                "answer": answer, "fact": f"{f.subject}/{f.relation}"})
    return rows


def write_world_tasks(world, out_dir: str | Path, exclude: set[str], seed: int = 0) -> list[str]:
    """Generate the ``xke_world`` task group of ``world`` into ``out_dir``: data (JSONL), one lm-eval task
    config per kind and language (from the packaged ``xke_mc_<lang>`` / ``xke_qa_<lang>`` configs), and the
    group config. Returns the task names."""
    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    langs = [lg for lg in ("en", "zh") if lg in world.langs]
    if not langs:
        raise ConfigError(f"the world's languages {world.langs} include neither en nor zh; xke_world has "
                          "task configs for en and zh")
    names = []
    for lang in langs:
        rows = world_task_rows(world, lang, exclude, seed)
        if not rows["qa"]:
            raise ConfigError("every fact of the world is edited by the run: no unedited fact left for xke_world; "
                              "use fewer --n-edits")
        for kind, template in WORLD_TASKS:
            name = f"{WORLD_GROUP}_{kind}_{lang}"
            path = data_dir / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[kind]), encoding="utf-8")
            write_task(task_config(template.format(lang=lang), path, name), out_dir)
            names.append(name)
    write_task({"group": WORLD_GROUP, "task": names, "metadata": {"version": 1.0}}, out_dir)
    return names


def prepare_tasks(spec: GeneralSpec, out: Path, world=None, exclude: set[str] | None = None) -> tuple[list[str], Path]:
    """Write every task config the run needs into ``out/tasks`` (packaged templates with their data, the
    world group); returns the task names to pass to lm-eval and the folder."""
    tdir = out / "tasks"
    templates = set(task_templates())
    names: list[str] = []
    for t in spec.tasks:
        if t == WORLD_GROUP:
            if world is None:
                raise ConfigError(f"task {WORLD_GROUP!r} needs a toy-world model (--model world or world:DIR)")
            names.append(t)
            write_world_tasks(world, tdir, exclude or set(), spec.seed)
        elif t in templates:
            if t not in spec.task_data:
                raise ConfigError(f"task {t!r} reads a local copy of its data: give it with --task-data {t}=PATH "
                                  "(JSON list or JSONL; docs/general.md has the record format)")
            write_task(task_config(t, spec.task_data[t]), tdir)
            names.append(t)
        else:
            names.append(t)
    return names, tdir


def task_manager(spec: GeneralSpec, tdir: Path, names: Sequence[str] = ()):
    """lm-eval's TaskManager over ``out/tasks`` and the user's include paths, and lm-eval's own tasks when
    ``names`` needs one of them (indexing those takes seconds)."""
    from lm_eval.tasks import TaskManager

    for p in spec.include_paths:
        if not Path(p).expanduser().is_dir():
            raise ConfigError(f"--include-path {p}: not a directory of lm-eval task configs")
    paths = [str(tdir)] + [str(Path(p).expanduser()) for p in spec.include_paths]
    tm = TaskManager(include_path=paths, include_defaults=False)
    if any(n not in tm.all_tasks and not Path(n).is_file() for n in names):
        tm = TaskManager(include_path=paths)
    return tm


def load_tasks(tm, names: Sequence[str]) -> dict[str, Any]:
    """Load each task (or group) by name, turning lm-eval's errors into clear ones: an unknown name, or a
    dataset that is not on this machine (runs are offline, nothing is downloaded). Returns
    ``{task name: config dict}`` of the leaf tasks."""
    configs: dict[str, Any] = {}
    for n in names:
        if n not in tm.all_tasks and not Path(n).is_file():
            raise ConfigError(f"unknown task {n!r}: not an lm-eval task, group or tag, nor in --include-path "
                              f"(xke's own: {', '.join([WORLD_GROUP] + task_templates())})")
        try:
            loaded = tm.load([n])
        except Exception as e:  # lm-eval/datasets raise many types for a missing dataset
            raise DataError(f"task {n!r}: {_dataset_of(tm, n)} could not be loaded from this machine "
                            f"(runs are offline; put the data in the Hugging Face datasets cache, or use a local "
                            f"copy with xke's task configs: --task-data): {type(e).__name__}: {str(e)[:300]}") from None
        for tname, task in loaded["tasks"].items():
            configs[tname] = task.config.to_dict() if hasattr(task.config, "to_dict") else dict(task.config)
    return configs


def _dataset_of(tm, name: str) -> str:
    """``dataset <path>[/<name>]`` of a task, as far as its YAML says."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml

        entry = tm._index.get(name)
        cfg = load_yaml(entry.yaml_path, resolve_func=False) if entry is not None and entry.yaml_path else {}
        ds = cfg.get("dataset_path")
        if ds:
            sub = cfg.get("dataset_name")
            files = (cfg.get("dataset_kwargs") or {}).get("data_files")
            return f"dataset {ds}{'/' + sub if sub else ''}" + (f" (data_files {files})" if files else "")
    except Exception:  # noqa: BLE001 - best effort; the caller's message stands without it
        pass
    return "its dataset"


# ------------------------------------------------------------------------------- the model for lm-eval
def _prompt_formatter(tok, template: str):
    """chat: the tokenizer's chat template; raw: the task's text as is; auto: chat when there is one."""
    from ..models.prompts import PromptFormatter

    if template == "raw" or (template == "auto" and not getattr(tok, "chat_template", None)):
        return PromptFormatter(tok, mode="plain", plain_template="{question}")
    return PromptFormatter(tok, mode="chat")


def make_lm(model, tokenizer, *, formatter, method=None, task_langs: dict[str, str] | None = None,
            batch_size: int = 32, quiet: bool = False):
    """lm-eval's ``HFLM`` on ``model`` (in memory, as edited now) whose prompts are xke's: each request's
    text (the task's ``doc_to_text``) is rendered with ``formatter`` (the chat template, or as is); with an
    in-context ``method`` the edits its retriever finds for that text go in first, rendered by the method
    (:meth:`xke.methods.context.ContextMethod.render`). ``task_langs`` (task -> language) tells the method
    the answer language; tasks without one are ``zh`` when their text has CJK characters, else ``en``."""
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    from ..data.loaders import _has_cjk
    from ..data.schema import Query

    langs = dict(task_langs or {})

    class XkeLM(HFLM):
        #: distinct request texts seen, and those an in-context method put edits in front of
        seen: set[str]
        with_edits: set[str]

        def render(self, text: str, task: str | None) -> str:
            """The prompt the model reads for a task's request text ``text``."""
            lang = langs.get(task or "") or ("zh" if _has_cjk(text) else "en")
            self.seen.add(text)
            if method is not None and getattr(method, "kind", None) == "context":
                q = Query(case_id="", lang=lang, kind="general", prompt=text, target="")
                edits = method.descriptors_for(q)
                if edits:
                    self.with_edits.add(text)
                    text = method.render(edits, q)
            return formatter.format(text)

        def _rendered(self, requests):
            for r in requests:
                args = r.args
                r.arguments = (self.render(args[0], r.task_name),) + tuple(args[1:])
            return requests

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(self._rendered(requests), disable_tqdm or quiet)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(self._rendered(requests), disable_tqdm or quiet)

    device = str(next(model.parameters()).device)
    h = XkeLM(pretrained=model, tokenizer=tokenizer, device=device, batch_size=batch_size)
    h.seen, h.with_edits = set(), set()
    return h


def primary_score(results: dict[str, Any], cfg: dict[str, Any]) -> tuple[str, float | None]:
    """(metric name, value in percent) of a task's first metric in lm-eval's results."""
    metrics = cfg.get("metric_list") or []
    want = metrics[0]["metric"] if metrics and isinstance(metrics[0], dict) else None
    keys = [k for k in results if "," in k and "_stderr" not in k]
    key = next((k for k in keys if want and k.split(",")[0] == want), keys[0] if keys else None)
    if key is None:
        return str(want), None
    v = results[key]
    try:
        return key.split(",")[0], round(100.0 * float(v), 2)
    except (TypeError, ValueError):
        return key.split(",")[0], None


def evaluate_tasks(hflm, tm, names: Sequence[str], configs: dict[str, Any], *, limit: int | None = None,
                   num_fewshot: int | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Run the tasks with lm-eval; per leaf task ``{"lang", "metric", "score" (%), "n"}``."""
    from lm_eval import simple_evaluate

    res = simple_evaluate(model=hflm, tasks=list(names), task_manager=tm, limit=limit, num_fewshot=num_fewshot,
                          log_samples=False, bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed,
                          torch_random_seed=seed, fewshot_random_seed=seed)
    out: dict[str, dict[str, Any]] = {}
    for t, cfg in configs.items():
        r = res["results"].get(t)
        if r is None:
            continue
        metric, score = primary_score(r, cfg)
        out[t] = {"lang": task_lang(t, cfg), "metric": metric, "score": score,
                  "n": (res.get("n-samples") or {}).get(t, {}).get("effective")}
    return out


def task_lang(name: str, cfg: dict[str, Any]) -> str:
    """A task's language: its config's ``metadata.lang``, else ``zh`` for Chinese benchmarks by name, else en."""
    lang = (cfg.get("metadata") or {}).get("lang")
    if lang:
        return str(lang)
    low = name.lower()
    return "zh" if any(s in low for s in ("cmmlu", "ceval", "_zh", "zh_", "chinese")) else "en"


# ------------------------------------------------------------------------------- edit cases
def world_edit_cases(world, seed: int = 0) -> list:
    """Every counterfactual edit case the world has (one per fact of each person and company, one per city
    and country), shuffled by ``seed``: the first N are the run's N edits."""
    cases = world.counterfactual_cases("all", per_subject=WORLD_PER_SUBJECT)
    random.Random(f"general-edits-{seed}").shuffle(cases)
    return cases


# ------------------------------------------------------------------------------- the run
def _mean(xs) -> float | None:
    from .metrics import mean

    m = mean(xs)
    return None if m is None else round(float(m), 2)


def _locality(m: dict[str, Any]) -> dict[str, Any]:
    """Reliability and locality (tf_acc, %, mean over test languages) of a runner metrics dict."""
    out = {}
    for kind in ("reliability", "generality", "locality"):
        out[kind] = _mean(b.get(kind, {}).get("tf_acc") for b in m["by_test_lang"].values())
    out["n_locality_skipped"] = m.get("n_locality_skipped")
    return out


def _summary(scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"avg": _mean(s["score"] for s in scores.values()),
            "avg_by_lang": {lg: _mean(s["score"] for s in scores.values() if s["lang"] == lg)
                            for lg in sorted({s["lang"] for s in scores.values()})}}


def _read_json_file(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None
    except json.JSONDecodeError:
        return None


def _key(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_key(rec: dict[str, Any] | None, key: str, path: Path) -> None:
    """Refuse to reuse a result computed under other options (tasks, protocol, method options)."""
    if rec is not None and rec.get("key", rec.get("tasks_key")) != key:
        raise ConfigError(f"{path} was computed with other tasks or options (more --n-edits change the world "
                          f"tasks' unedited facts); use another --out, or delete {path.parent} to recompute")


def _write_json(p: Path, obj: Any) -> None:
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, p)


def run_general(spec: GeneralSpec, *, loaded=None, progress: bool = True, log=print) -> dict[str, Any]:
    """Run (or resume) ``spec``; returns the ``general.json`` dict (also written with ``general.md`` and,
    for several N, ``degradation.png``). ``loaded`` reuses a model in memory (left as it was)."""
    from ..methods.base import get_method_class
    from ..models.loading import load_model
    from .runner import EvalSpec, _check_spec, edited_facts, load_cases, run_eval

    spec.validate()
    require_lm_eval()
    go_offline()
    if not progress:
        quiet_lm_eval()
    out = Path(spec.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    _check_spec(out, spec)
    from ..world.provider import model_path, world_dir_of

    lm = loaded if loaded is not None else load_model(str(model_path(spec.model)), dtype=spec.dtype, device=spec.device)

    # edit cases: the benchmark given, else every edit the toy world has
    wdir = Path(spec.world_dir).expanduser() if spec.world_dir else world_dir_of(getattr(lm, "path", None) or spec.model)
    world = None
    if wdir is not None and (wdir / "world.json").exists():
        from ..world.world import load_world
        world = load_world(wdir)
    if spec.data:
        bench, data = spec.bench, spec.data
    elif world is not None:
        from ..data.loaders import write_jsonl
        bench, data = "jsonl", str(write_jsonl(out / "edit_cases.jsonl", world_edit_cases(world, spec.seed)))
    else:
        raise ConfigError("no edit cases: give --data (and --bench), or use a toy-world model")
    probe = EvalSpec(model=spec.model, out=str(out), bench=bench, data=data, edit_lang=spec.edit_lang,
                     test_langs=list(spec.test_langs))
    probe.validate()
    cases = load_cases(probe)
    points = [n for n in spec.n_edits if n <= len(cases)]
    skipped = [n for n in spec.n_edits if n > len(cases)]
    if skipped:
        log(f"xke general: only {len(cases)} edit cases; leaving out n_edits {skipped}")
    if not points:
        raise ConfigError(f"--n-edits {spec.n_edits}: there are only {len(cases)} edit cases")
    exclude = {k for k in edited_facts(cases[:max(points)]) if k.startswith("fact:")}

    names, tdir = prepare_tasks(spec, out, world, exclude)
    tm = task_manager(spec, tdir, names)
    configs = load_tasks(tm, names)
    langs = {t: task_lang(t, c) for t, c in configs.items()}
    formatter = _prompt_formatter(lm.tokenizer, spec.template)

    # what the task scores depend on: a base or point computed for other tasks is not reused
    tasks_key = _key({"tasks": names, "exclude": sorted(exclude) if WORLD_GROUP in names else [],
                      "limit": spec.limit, "fewshot": spec.num_fewshot})

    retrieved: dict[str, Any] = {}

    def run_tasks(method=None) -> dict[str, dict[str, Any]]:
        h = make_lm(lm.model, lm.tokenizer, formatter=formatter, method=method, task_langs=langs,
                    batch_size=spec.lm_batch_size, quiet=not progress)
        old = os.environ.get("TQDM_DISABLE")
        if not progress:   # lm-eval's own bars (building requests) have no switch but tqdm's environment
            os.environ["TQDM_DISABLE"] = "1"
        try:
            scores = evaluate_tasks(h, tm, names, configs, limit=spec.limit, num_fewshot=spec.num_fewshot,
                                    seed=spec.seed)
        finally:
            if old is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = old
        retrieved.update(prompts=len(h.seen), with_edits=len(h.with_edits))
        return scores

    # base: the unedited model
    base_p = out / "base.json"
    base = _read_json_file(base_p)
    _check_key(base, tasks_key, base_p)
    if base is None:
        log("xke general: tasks on the unedited model")
        base = {"tasks_key": tasks_key, "scores": run_tasks()}
        base.update(_summary(base["scores"]))
        _write_json(base_p, base)

    runs = []
    for method_name in spec.methods:
        for n in points:
            pdir = out / method_name / f"n{n}"
            res_p = pdir / "general.json"
            rec = _read_json_file(res_p)
            point_key = _key({"tasks": tasks_key, "protocol": spec.protocol, "batch_size": spec.batch_size,
                              "config": spec.configs.get(method_name, spec.configs.get("*")),
                              "overrides": [spec.method_overrides.get("*"), spec.method_overrides.get(method_name)]})
            _check_key(rec, point_key, res_p)
            if rec is None:
                log(f"xke general: {method_name}, {n} edits ({spec.protocol})")
                got: dict[str, Any] = {}
                overrides = dict(spec.method_overrides.get("*", {}), **spec.method_overrides.get(method_name, {}))
                if spec.world_dir and get_method_class(method_name).kind == "context":
                    from ..world.retriever import ensure_world_retriever
                    overrides.setdefault("retriever_path", str(ensure_world_retriever(Path(spec.world_dir))))
                es = EvalSpec(model=spec.model, out=str(pdir / "eval"), method=method_name, bench=bench, data=data,
                              edit_lang=spec.edit_lang, test_langs=list(spec.test_langs), protocol="sequential",
                              batch_size=n if spec.protocol == "batch" else min(spec.batch_size, n), limit=n,
                              seed=spec.seed, config=spec.configs.get(method_name, spec.configs.get("*")),
                              mode="retrieve" if get_method_class(method_name).kind == "context" else "gold",
                              dtype=spec.dtype,
                              device=spec.device, template="auto", max_new_tokens=spec.max_new_tokens,
                              method_overrides=overrides)
                m = run_eval(es, loaded=lm, progress=progress, after_edits=lambda meth: got.update(run_tasks(meth)))
                rec = {"key": point_key, "method": method_name, "n_edits": n, "protocol": spec.protocol,
                       "batch_size": es.batch_size, "scores": got, **_summary(got), "edits": _locality(m)}
                if get_method_class(method_name).kind == "context":
                    # how many distinct task prompts the retriever put edits in front of
                    rec["prompts_with_edits"] = dict(retrieved)
                rec["delta"] = {t: (None if s["score"] is None or base["scores"].get(t, {}).get("score") is None
                                    else round(s["score"] - base["scores"][t]["score"], 2))
                                for t, s in got.items()}
                rec["delta_avg"] = None if rec["avg"] is None or base["avg"] is None else round(rec["avg"] - base["avg"], 2)
                _write_json(res_p, rec)
            runs.append(rec)

    result = {"model": spec.model, "tasks": {t: {"lang": langs[t], "metric": base["scores"].get(t, {}).get("metric")}
                                             for t in configs},
              "base": base, "runs": runs, "n_edits_left_out": skipped, "n_edit_cases": len(cases)}
    _write_json(out / "general.json", result)
    md = render_table(result)
    (out / "general.md").write_text(md + "\n", encoding="utf-8")
    if len({r["n_edits"] for r in runs}) > 1:
        plot_degradation(result, out / "degradation.png")
    return result


# ------------------------------------------------------------------------------- report
def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _edits(n: int) -> str:
    return f"{n} edit" + ("" if n == 1 else "s")


def render_table(result: dict[str, Any]) -> str:
    """Markdown in the layout of X-KDE's Table 3: columns = tasks (en, then zh, then others) and avg, rows =
    the unedited model and each method after N edits, each followed by its difference to the unedited model;
    then reliability/locality of the edits."""
    order = {"en": 0, "zh": 1}
    tasks = sorted(result["tasks"], key=lambda t: (order.get(result["tasks"][t]["lang"], 2), t))
    head = ["Model"] + [f"{t} ({result['tasks'][t]['lang']})" for t in tasks] + ["avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    base = result["base"]
    lines.append("| base (no edits) | " + " | ".join(_fmt(base["scores"].get(t, {}).get("score")) for t in tasks)
                 + f" | {_fmt(base['avg'])} |")
    for r in result["runs"]:
        name = f"{r['method']}, {_edits(r['n_edits'])} ({r['protocol']})"
        lines.append(f"| {name} | " + " | ".join(_fmt(r["scores"].get(t, {}).get("score")) for t in tasks)
                     + f" | {_fmt(r['avg'])} |")
        lines.append("| Δ | " + " | ".join(_fmt(r["delta"].get(t)) for t in tasks) + f" | {_fmt(r['delta_avg'])} |")
    metric = ", ".join(sorted({v["metric"] or "?" for v in result["tasks"].values()}))
    out = [f"### General ability (lm-evaluation-harness; {metric}, %)", "", *lines, "",
           "### The edits (tf_acc, %, mean over test languages)", "",
           "| Run | Reliability | Generality | Locality | locality skipped |", "|---|---:|---:|---:|---:|"]
    for r in result["runs"]:
        e = r["edits"]
        out.append(f"| {r['method']}, {_edits(r['n_edits'])} | {_fmt(e['reliability'])} | {_fmt(e['generality'])} | "
                   f"{_fmt(e['locality'])} | {e.get('n_locality_skipped')} |")
    return "\n".join(out)


def plot_degradation(result: dict[str, Any], path: str | Path) -> Path:
    """General ability (task average) and locality against the number of edits (log x), one line per method;
    the unedited model's average as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    fig.suptitle(f"{result.get('model', '')}: general ability and locality after sequential edits", fontsize=10)
    methods = list(dict.fromkeys(r["method"] for r in result["runs"]))
    for i, m in enumerate(methods):
        rs = sorted((r for r in result["runs"] if r["method"] == m), key=lambda r: r["n_edits"])
        xs = [r["n_edits"] for r in rs]
        color = f"C{i}"
        axes[0].plot(xs, [r["avg"] for r in rs], marker="o", color=color, label=m)
        axes[1].plot(xs, [r["edits"]["locality"] for r in rs], marker="o", color=color, label=m)
    if result["base"].get("avg") is not None:
        axes[0].axhline(result["base"]["avg"], color="gray", linestyle=":", label="no edits")
    axes[0].set_title("general ability (task average, %)")
    axes[1].set_title("locality of the edits (tf_acc, %)")
    from matplotlib.ticker import FuncFormatter

    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}"))
        ax.set_xlabel("sequential edits" if all(r["protocol"] == "sequential" for r in result["runs"]) else "edits")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def general_brief(spec: GeneralSpec, **kw) -> dict[str, Any]:
    """:func:`run_general` in brief (the X-KDE recipe's eval stage): the base task average and, per run
    (method, N edits), the task average, its change and the edits' locality."""
    g = run_general(spec, progress=False, **kw)
    return {"base_avg": g["base"]["avg"], "out": str(spec.out),
            "runs": [{"method": r["method"], "n_edits": r["n_edits"], "avg": r["avg"], "delta_avg": r["delta_avg"],
                      "locality": r["edits"]["locality"]} for r in g["runs"]]}
