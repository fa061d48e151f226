"""``xke demo``: every available editing method on the toy world, in one table.

Builds (or reuses, cached) the toy world of ``preset``, takes ``n`` of its
held-out edit cases, and for every method whose module is available evaluates
single edits in English tested in English and Chinese. Each method's run goes
to ``OUT/runs/<world>/<method>`` (rerunning resumes / reuses them); the merged
report is written to ``OUT/report.md`` and ``OUT/heatmap.png`` and printed.

When the toy world cannot be built (its module missing), the demo falls back
to the random ``tiny-llama`` and a few generated cases, and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, XkeError


def _fallback_cases(path: Path, n: int) -> Path:
    from .data.loaders import write_jsonl
    from .data.schema import EditCase, LangView

    cases = []
    for i in range(n):
        en = LangView(subject=f"Person {i}", prompt=f"Where was Person {i} born?", target_new=f"City {i}",
                      paraphrases=[f"In which city was Person {i} born?"],
                      locality_prompt=f"What is the capital of Country {i}?", locality_answer=f"Capital {i}")
        zh = LangView(subject=f"人物{i}", prompt=f"人物{i}出生在哪里？", target_new=f"城市{i}",
                      paraphrases=[f"人物{i}出生在哪个城市？"], locality_prompt=f"国家{i}的首都是哪里？",
                      locality_answer=f"首都{i}")
        cases.append(EditCase(f"demo-{i}", {"en": en, "zh": zh}, meta={"split": "heldout"}))
    return write_jsonl(path, cases)


def available_methods(names: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Methods whose module imports (in registry order), and why the others were skipped."""
    from .methods.base import METHOD_MODULES, get_method_class

    ok, skipped = [], {}
    for name in (names or list(METHOD_MODULES)):
        try:
            get_method_class(name)
            ok.append(name)
        except ConfigError as e:
            skipped[name] = str(e)
        except ImportError as e:  # an optional dependency of that method is missing
            skipped[name] = f"needs {e.name or e}"
    return ok, skipped


def run_demo(out: str | Path | None = None, n: int = 40, preset: str = "default",
             methods: Sequence[str] | None = None, progress: bool = True, system_prompt: str | None = None) -> str:
    """Run the demo; returns the merged report's markdown (also printed). ``system_prompt``: as ``xke eval``'s."""
    from .eval.report import merge_runs
    from .eval.runner import EvalSpec, run_eval
    from .models.loading import load_model

    from .fsutil import prepare_out_dir
    from .methods.base import METHOD_MODULES

    unknown = [m for m in (methods or []) if m.lower() not in METHOD_MODULES]
    if unknown:  # before building anything
        raise ConfigError(f"--methods: unknown method(s) {unknown}; available: {', '.join(METHOD_MODULES)}")
    out = prepare_out_dir(out or "runs/demo")
    try:
        from .world.build import build_world
    except ImportError:
        build_world = None
    if build_world is not None:
        print(f"xke demo: building or reusing the '{preset}' toy world (cached after the first time) ...",
              file=sys.stderr)
        wdir = Path(build_world(preset=preset))
        model_spec, data, split, tag = f"world:{wdir}", str(wdir / "cases.jsonl"), "heldout", wdir.name
    else:
        print("xke demo: the toy world is not available; using the random tiny-llama and generated cases",
              file=sys.stderr)
        model_spec, split, tag = "tiny-llama", "all", "tiny-llama"
        data = str(_fallback_cases(out / "fallback_cases.jsonl", n))
    names, skipped = available_methods(methods)
    for name, why in skipped.items():
        print(f"xke demo: skipping {name}: {why}", file=sys.stderr)
    lm = load_model(model_spec)
    dirs = []
    for name in names:
        spec = EvalSpec(model=model_spec, out=str(out / "runs" / tag / name), method=name, bench="jsonl", data=data,
                        edit_lang="en", test_langs=["en", "zh"], protocol="single", limit=n, split=split,
                        system_prompt=system_prompt)
        print(f"xke demo: {name} ...", file=sys.stderr)
        try:
            run_eval(spec, loaded=lm, progress=progress)
            dirs.append(spec.out)
        except XkeError as e:
            print(f"xke demo: {name} could not run here: {e}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - one broken method must not hide the others' results
            print(f"xke demo: {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
    if not dirs:
        raise XkeError("no method could be evaluated")
    md, written = merge_runs(dirs, out)
    print(md)
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    return md
