"""Issue 13: never lose data, never mix runs, never answer bad input with a traceback.

One test (or a few) per item of the issue: the bad input gets a one-line message naming the file, record
and field (exit 2), nothing is written, and what was there before is intact. Item 8 (LLM steps) is
covered by the LLM client's own tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
import torch

from xke.cli import main
from xke.data.loaders import write_jsonl
from xke.errors import ConfigError, DataError, ModelError, XkeError
from xke.eval.runner import EvalSpec, run_eval
from xke.memory.store import EditStore, MemoryEdit, edit_from_dict
from xke.methods import base as B
from test_runner import make_cases  # noqa: E402  (also registers its fake-weight method)

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(err: str, *needles: str) -> None:
    """The CLI printed exactly one error line, containing every needle, and no traceback."""
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert lines and lines[-1].startswith("xke: error:"), err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


def digest(p: Path) -> str:
    """SHA-256 of a file, or of every file under a folder (names and bytes)."""
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(p)).encode() + f.read_bytes())
    else:
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def data(tmp_path):
    return str(write_jsonl(tmp_path / "cases.jsonl", make_cases(4, split=False)))


# --- methods: test_runner's fake weight method, and X-KDE prompts over bm25 -------------------------------
from xke.methods.xkde import XKDE  # noqa: E402


@B.register_method
class Recall(XKDE):
    """X-KDE prompts over a bm25 retriever (no trained retriever needed)."""
    name = "rel-recall"


@pytest.fixture(autouse=True)
def _methods(monkeypatch):
    monkeypatch.setitem(B.METHOD_MODULES, "fake-weight", "test_runner")
    monkeypatch.setitem(B.METHOD_MODULES, "rel-recall", __name__)


def spec(out, data, **kw) -> EvalSpec:
    d = dict(model="tiny-llama", out=str(out), bench="jsonl", data=data, edit_lang="en", test_langs=["en"],
             device="cpu", max_new_tokens=2, method="fake-weight")
    d.update(kw)
    return EvalSpec.from_dict(d)


# =========================================================================================== item 1
def test_save_edited_never_overwrites_the_model_being_read(tiny_model, data, tmp_path):
    src = Path(tiny_model.path)
    before = digest(src)
    s = spec(tmp_path / "o", data, protocol="batch", batch_size=2, save_edited=str(src))
    with pytest.raises(ConfigError, match="is the model being evaluated"):
        run_eval(s, loaded=tiny_model, progress=False)
    assert digest(src) == before and not (tmp_path / "o").exists()


def test_save_edited_into_an_existing_folder_needs_overwrite_and_is_atomic(tiny_model, data, tmp_path):
    dest = tmp_path / "edited"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    s = spec(tmp_path / "o", data, protocol="batch", batch_size=2, save_edited=str(dest))
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        run_eval(s, loaded=tiny_model, progress=False)
    assert (dest / "keep.txt").read_text() == "mine" and not (tmp_path / "o").exists()
    s = spec(tmp_path / "o", data, protocol="batch", batch_size=2, save_edited=str(dest), overwrite=True)
    run_eval(s, loaded=tiny_model, progress=False)
    assert (dest / "config.json").exists() and not (dest / "keep.txt").exists()
    assert not list(tmp_path.glob(".edited.*"))  # no temporary folder left behind


def test_replace_dir_keeps_the_old_folder_when_filling_fails_and_recovers_a_moved_one(tmp_path):
    from xke.fsutil import replace_dir

    d = tmp_path / "model"
    d.mkdir()
    (d / "w").write_text("old")

    def boom(tmp):
        (tmp / "w").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        replace_dir(d, boom)
    assert (d / "w").read_text() == "old" and not list(tmp_path.glob(".model.tmp-*"))
    # a crash between the two renames leaves the old folder moved aside: the next call puts it back first
    os.replace(d, tmp_path / ".model.old-x")
    replace_dir(d, lambda tmp: (tmp / "w").write_text("new"))
    assert (d / "w").read_text() == "new" and not list(tmp_path.glob(".model.*"))


# =========================================================================================== item 2
def test_memory_export_refuses_the_database_and_non_jsonl_files(tmp_path, capsys):
    db = tmp_path / "m.sqlite"
    assert run_cli(capsys, "memory", "add", "--db", db, "--lang", "en", "--prompt", "Q?", "--target-new", "A")[0] == 0
    before = digest(db)
    rc, _, err = run_cli(capsys, "memory", "export", "--db", db, "--out", db)
    assert rc == 2
    one_line_error(err, "is the edit memory itself")
    assert digest(db) == before
    assert run_cli(capsys, "memory", "list", "--db", db)[1].count("Q?") == 1
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not JSONL\n")
    rc, _, err = run_cli(capsys, "memory", "export", "--db", db, "--out", notes)
    assert rc == 2 and notes.read_text() == "my notes, not JSONL\n"
    one_line_error(err, "not a JSONL file")
    other = tmp_path / "other.sqlite"
    EditStore(other).close()
    assert run_cli(capsys, "memory", "export", "--db", db, "--out", other)[0] == 2
    out = tmp_path / "e.jsonl"
    assert run_cli(capsys, "memory", "export", "--db", db, "--out", out)[0] == 0
    assert run_cli(capsys, "memory", "export", "--db", db, "--out", out)[0] == 0  # an earlier export: replaced
    assert json.loads(out.read_text())["prompt"] == "Q?" and not list(tmp_path.glob(".e.jsonl.*"))


# =========================================================================================== item 3
def test_spec_records_resolved_config_and_refuses_changed_inputs(tiny_model, data, tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("method:\n  scale: 0.05\n")
    out = tmp_path / "o"
    run_eval(spec(out, data, config=str(cfg)), loaded=tiny_model, progress=False)
    sj = json.loads((out / "spec.json").read_text())
    assert sj["resolved"]["method_config"]["scale"] == 0.05
    assert sj["resolved"]["inputs"]["config"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    assert sj["resolved"]["inputs"]["data"] == hashlib.sha256(Path(data).read_bytes()).hexdigest()
    results = digest(out / "cases.jsonl")
    cfg.write_text("method:\n  scale: 0.5\n")   # same path, other content
    with pytest.raises(ConfigError, match=r"--config .* changed since the run started"):
        run_eval(spec(out, data, config=str(cfg)), loaded=tiny_model, progress=False)
    cfg.write_text("method:\n  scale: 0.05\n")
    Path(data).write_text(Path(data).read_text().replace("City1", "City9"))
    with pytest.raises(ConfigError, match=r"--data .* changed"):
        run_eval(spec(out, data, config=str(cfg)), loaded=tiny_model, progress=False)
    assert digest(out / "cases.jsonl") == results


def test_resolved_method_config_difference_is_refused(tiny_model, data, tmp_path):
    """A preset that changed between a run and its rerun (no --config file involved)."""
    out = tmp_path / "o"
    run_eval(spec(out, data, limit=2), loaded=tiny_model, progress=False)
    sj = json.loads((out / "spec.json").read_text())
    sj["resolved"]["method_config"]["scale"] = 0.9
    (out / "spec.json").write_text(json.dumps(sj))
    with pytest.raises(ConfigError, match=r"method option scale: 0.9 -> 0.05"):
        run_eval(spec(out, data, limit=2), loaded=tiny_model, progress=False)


# =========================================================================================== item 4
def test_retrieve_mode_rerun_removes_a_killed_units_edits_from_a_shared_memory(tiny_model, data, tmp_path):
    mem = tmp_path / "shared.sqlite"
    with EditStore(mem) as s:
        s.add(MemoryEdit(lang="en", prompt="Who wrote Hamlet?", target_new="Shakespeare"))
    before = EditStore(mem).content_hash()
    kw = dict(method="rel-recall", mode="retrieve", limit=2,
              method_overrides={"retriever": "bm25", "memory_path": str(mem), "threshold": None})
    out = tmp_path / "o"
    m1 = run_eval(spec(out, data, **kw), loaded=tiny_model, progress=False)
    sj = json.loads((out / "spec.json").read_text())
    batch = sj["resolved"]["memory_batch"]
    assert batch.startswith("xke-eval-") and sj["resolved"]["inputs"]["memory"]
    with EditStore(mem) as s:
        assert s.count() == 1 and s.content_hash() == before
        # what a run killed between apply and restore leaves behind: its unit's edits, active
        s.add(MemoryEdit(lang="en", prompt="Where was Person1 born?", target_new="City1", batch=batch))
    lines = (out / "cases.jsonl").read_text().splitlines()
    (out / "cases.jsonl").write_text("\n".join(lines[:-1]) + "\n")   # the last unit never finished
    (out / "metrics.json").unlink()
    m2 = run_eval(spec(out, data, **kw), loaded=tiny_model, progress=False)
    with EditStore(mem) as s:
        assert s.count(active=None) == 1 and s.content_hash() == before
    assert m2 == m1
    # another process changed the shared memory: the rerun is refused, nothing is removed
    with EditStore(mem) as s:
        s.add(MemoryEdit(lang="en", prompt="Who painted it?", target_new="Monet"))
    with pytest.raises(ConfigError, match="the edit memory changed"):
        run_eval(spec(out, data, **kw), loaded=tiny_model, progress=False)


# =========================================================================================== items 5-7
def test_memory_import_validates_every_field_and_keeps_good_lines(tmp_path, capsys):
    f = tmp_path / "in.jsonl"
    good = json.dumps({"lang": "en", "prompt": "ok?", "target_new": "yes"})
    f.write_bytes(b"\n".join([
        b'{"lang": "en", "prompt": "p", "target_new": "t", "created": NaN}',
        b'{"lang": "en", "prompt": "p", "target_new": "t", "created": 1e400}',
        b'{"lang": "en", "prompt": "p\xff", "target_new": "t"}',
        b'{"lang": "en", "prompt": "\\ud800", "target_new": "t"}',
        b'{"lang": "en", "prompt": "p", "target_new": "\\u200b "}',
        b'{"lang": "en", "prompt": "p", "target_new": "t", "created": -5}',
        b"[" * 50000,
        good.encode()]) + b"\n")
    db = tmp_path / "m.sqlite"
    rc, out, err = run_cli(capsys, "memory", "import", "--db", db, f)
    assert rc == 1 and "imported 1 edit(s); rejected 7 line(s)" in out and "Traceback" not in err
    for n, needle in [(1, "NaN"), (2, "field 'created'"), (3, "not UTF-8"), (4, "lone surrogate"),
                      (5, "empty target_new"), (6, "field 'created'"), (7, "nested too deeply")]:
        assert any(l.startswith(f"{f}: line {n}: rejected:") and needle in l for l in err.splitlines()), (n, err)
    rc, out, _ = run_cli(capsys, "memory", "list", "--db", db, "--all")
    assert rc == 0 and "ok?" in out
    with pytest.raises(DataError, match="field 'retired'"):
        edit_from_dict({"lang": "en", "prompt": "p", "target_new": "t", "retired": float("inf")})


@pytest.mark.parametrize("bad", ["=-1e20", "nan", "inf", "1e300", "=-inf", "yesterday"])
def test_rollback_checks_the_time_before_changing_anything(tmp_path, capsys, bad):
    db = tmp_path / "m.sqlite"
    with EditStore(db) as s:
        s.add_many([MemoryEdit(lang="en", prompt=f"q{i}?", target_new="a") for i in range(3)])
    before = EditStore(db).content_hash()
    argv = ["memory", "rollback", "--db", db] + ([f"--to{bad}"] if bad.startswith("=") else ["--to", bad])
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2
    one_line_error(err, "--to")
    with EditStore(db) as s:
        assert s.count() == 3 and s.content_hash() == before
    with pytest.raises(XkeError, match="rollback"):
        EditStore(db).rollback(float("nan"))


def test_damaged_missing_and_foreign_memory_files(tmp_path, capsys):
    db = tmp_path / "m.sqlite"
    with EditStore(db) as s:
        s.add_many([MemoryEdit(lang="en", prompt=f"question {i}?" * 20, target_new="a") for i in range(200)])
    raw = bytearray(db.read_bytes())
    raw[4096 * 2: 4096 * 3] = os.urandom(4096)   # a damaged page
    db.write_bytes(bytes(raw))
    before = digest(db)
    for cmd in (["add", "--lang", "en", "--prompt", "p", "--target-new", "t"], ["list"]):
        rc, _, err = run_cli(capsys, "memory", cmd[0], "--db", db, *cmd[1:])
        assert rc == 2
        one_line_error(err, str(db), "damaged")
    assert digest(db) == before
    # read commands never create a memory
    typo = tmp_path / "typo.sqlite"
    for cmd in (["list"], ["export", "--out", tmp_path / "x.jsonl"], ["retire", "1"], ["rollback", "--to", "0"]):
        rc, _, err = run_cli(capsys, "memory", cmd[0], "--db", typo, *cmd[1:])
        assert rc == 2
        one_line_error(err, "does not exist")
    assert not typo.exists() and not (tmp_path / "x.jsonl").exists()
    junk = tmp_path / "junk.sqlite"
    junk.write_text("hello")
    rc, _, err = run_cli(capsys, "memory", "add", "--db", junk, "--lang", "en", "--prompt", "p", "--target-new", "t")
    assert rc == 2 and junk.read_text() == "hello"
    one_line_error(err, "not an xke edit memory")
    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    rc, _, err = run_cli(capsys, "memory", "list", "--db", foreign)
    assert rc == 2
    one_line_error(err, "not an xke edit memory")


@pytest.mark.skipif(ROOT, reason="root ignores file permissions")
def test_read_only_memory(tmp_path, capsys):
    db = tmp_path / "ro" / "m.sqlite"
    with EditStore(db) as s:
        s.add(MemoryEdit(lang="en", prompt="q?", target_new="a"))
    os.chmod(db, 0o444)
    try:
        assert run_cli(capsys, "memory", "list", "--db", db)[0] == 0
        rc, _, err = run_cli(capsys, "memory", "add", "--db", db, "--lang", "en", "--prompt", "p", "--target-new", "t")
        assert rc == 2
        one_line_error(err, "read-only")
    finally:
        os.chmod(db, 0o644)


# =========================================================================================== item 9
@pytest.mark.parametrize("value,msg", [(".inf", "finite"), (".nan", "finite"), ("-0.5", "> 0"), ("0", "> 0")])
def test_numeric_config_fields_are_finite_and_in_range(tmp_path, value, msg):
    cfg = tmp_path / "rome.yaml"
    cfg.write_text(f"method:\n  v_lr: {value}\n")
    with pytest.raises(ConfigError, match=rf"{cfg}.*'v_lr'.*{msg}"):
        B.build_method_config("rome", config_path=cfg)


def test_every_packaged_preset_passes_the_range_rules():
    from xke.config import list_presets
    from xke.train.recipe import load_train_config
    from xke.world.build import load_world_config

    for name in B.METHOD_MODULES:
        if name in ("fake-weight", "rel-recall"):
            continue
        for fam in list_presets(name) or ["default"]:
            B.build_method_config(name, family=fam)
    for p in list_presets("train"):
        load_train_config(p)
    for p in list_presets("world"):
        load_world_config(p, {})


def test_config_ranges_by_kind():
    from xke.config import check_number_range as c

    c("seed", -3, "k")
    c("max_steps", -1, "k")
    c("layers", [-1, 2], "k")
    for key, v, msg in [("lr", 0.0, "> 0"), ("val_fraction", 1.5, "between 0 and 1"), ("weight_decay", -1, ">= 0"),
                        ("max_steps", -2, "-1"), ("threshold", float("inf"), "finite"),
                        ("retrieve_distractors", [1, -1], r"\[1\].*>= 0")]:
        with pytest.raises(ConfigError, match=msg):
            c(key, v, "k")


def test_cli_eval_with_infinite_config_exits_2_before_writing(tmp_path, data, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method:\n  v_lr: .inf\n")
    rc, _, err = run_cli(capsys, "eval", "--model", "tiny-llama", "--method", "rome", "--data", data, "--config", cfg,
                         "--device", "cpu", "--out", tmp_path / "o", "--quiet")
    assert rc == 2
    one_line_error(err, "v_lr", "finite")
    assert not (tmp_path / "o").exists()


# =========================================================================================== item 10
def _zsre_side(**kw):
    side = {"subject": "S", "src": "Q?", "alt": "A", "rephrase": "Q2?", "loc": "nq question: L?", "loc_ans": "LA",
            "portability": {"New Question": "P?", "New Answer": "PA"}}
    side.update(kw)
    return side


def _bizsre(tmp_path, recs, raw: str | None = None) -> Path:
    p = tmp_path / "test.json"
    p.write_text(raw if raw is not None else json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    return p


@pytest.mark.parametrize("case,needles", [
    ("surrogate", ["record 1", "field 'en.src'", "lone surrogate"]),
    ("empty", ["empty file"]),
    ("empty_list", ["no records"]),
    ("duplicate", ["record 1", "duplicate of record 0"]),
    ("no_en", ["record 1", "no 'en' side"]),
    ("nul", ["record 0", "field 'zh.alt'", "NUL"]),
    ("zero_width", ["record 0", "field 'en.alt'", "empty"]),
    ("deep", ["nested too deeply"]),
])
def test_data_check_refuses_what_eval_cannot_read(tmp_path, capsys, case, needles):
    ok = {"en": _zsre_side(), "zh": _zsre_side(src="问？", alt="答")}
    other = {"en": _zsre_side(src="Q3?"), "zh": _zsre_side(src="问3？", alt="答")}
    raw = None
    if case == "surrogate":
        raw = json.dumps([ok, other]).replace('"Q3?"', '"Q3\\ud800?"')
    recs = {"empty": [], "empty_list": [], "duplicate": [ok, ok], "no_en": [ok, {"zh": other["zh"]}],
            "nul": [{"en": _zsre_side(), "zh": _zsre_side(alt="答\x00")}],
            "zero_width": [{"en": _zsre_side(alt="\u200b\u200d "), "zh": _zsre_side()}]}.get(case, [])
    if case == "empty":
        raw = ""
    if case == "deep":
        raw = "[" * 100000
    p = _bizsre(tmp_path, recs, raw)
    rc, out, err = run_cli(capsys, "data", "check", "bizsre", p)
    assert rc == 2 and not out
    one_line_error(err, str(p), *needles)


def test_data_check_refuses_two_files_for_one_language_and_fifos(tmp_path, capsys):
    d = tmp_path / "mz"
    d.mkdir()
    rec = json.dumps([_zsre_side()])
    for name in ("en.json", "cs.json", "cz.json"):
        (d / name).write_text(rec)
    rc, _, err = run_cli(capsys, "data", "check", "mzsre", d)
    assert rc == 2
    one_line_error(err, "cs.json", "cz.json")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    rc, _, err = run_cli(capsys, "data", "check", "bizsre", fifo)   # returns at once, never blocks on open
    assert rc == 2
    one_line_error(err, "not a regular file")
    (d / "cs.json").unlink()
    os.mkfifo(d / "de.json")
    rc, _, err = run_cli(capsys, "data", "check", "mzsre", d)
    assert rc == 2
    one_line_error(err, "de.json", "not a regular file")


def test_data_check_passes_the_real_bizsre(shared_data, capsys):
    rc, out, _ = run_cli(capsys, "data", "check", "bizsre", shared_data / "bizsre" / "test.json")
    assert rc == 0 and "1037 cases" in out


# =========================================================================================== item 11
def test_experiment_names_cannot_leave_out(tmp_path):
    from xke.eval.experiment import load_experiment

    for body in ('name: "../../x"\ndefaults: {method: none}\n',
                 'name: ok\ndefaults: {method: none}\nruns:\n  - {name: "../../escape"}\n',
                 'name: ok\ndefaults: {method: none}\nruns:\n  - {name: "/abs"}\n',
                 'name: ok\ndefaults: {method: none}\ngrids:\n  - {name: "..", grid: {batch_size: [1]}}\n'):
        y = tmp_path / "e.yaml"
        y.write_text(body)
        with pytest.raises(ConfigError, match="not a plain relative folder name"):
            load_experiment(y)


# =========================================================================================== item 12
def test_device_and_threads_are_checked(tmp_path, data, capsys):
    base = ["eval", "--model", "tiny-llama", "--data", data, "--out", tmp_path / "o", "--quiet"]
    for dev, msg in [("tpu:7", "unknown device"), ("banana", "unknown device")] + (
            [] if torch.cuda.is_available() else [("cuda", "no CUDA GPU"), ("cuda:3", "no CUDA GPU")]):
        rc, _, err = run_cli(capsys, *base, "--device", dev)
        assert rc == 2
        one_line_error(err, msg)
    rc, _, err = run_cli(capsys, "--threads", "-3", *base)
    assert rc == 2
    one_line_error(err, "--threads")
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_fails_before_any_work(tmp_path, data, capsys, tiny_model):
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, err = run_cli(capsys, "eval", "--model", "tiny-llama", "--data", data, "--out", f, "--device", "cpu")
    assert rc == 2 and f.read_text() == "x"
    one_line_error(err, "is a file")
    rc, _, err = run_cli(capsys, "world", "build", "--preset", "tiny", "--out", f)
    assert rc == 2 and f.read_text() == "x"
    one_line_error(err, "is a file")
    run_eval(spec(tmp_path / "r", data, limit=1), loaded=tiny_model, progress=False)
    rc, _, err = run_cli(capsys, "report", tmp_path / "r", "--out", f)
    assert rc == 2 and f.read_text() == "x"
    one_line_error(err, "is a file")


@pytest.mark.skipif(ROOT, reason="root ignores file permissions")
def test_unwritable_out(tmp_path, data, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        rc, _, err = run_cli(capsys, "eval", "--model", "tiny-llama", "--data", data, "--out", ro / "o", "--device", "cpu")
        assert rc == 2
        one_line_error(err, "cannot create")
    finally:
        os.chmod(ro, 0o755)


def test_report_on_malformed_metrics_names_the_field(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for body, needles in [('{"method": "x", "edit_lang": "en", "by_test_lang": []}', ["by_test_lang"]),
                          ('{"method": "x", "edit_lang": "en", "by_test_lang": {"en": {"reliability": '
                           '{"tf_acc": "high"}}}}', ["by_test_lang.en.reliability.tf_acc"]),
                          ('{"method": "x"}', ["edit_lang"]), ("[1]", ["JSON object"]), ("{", ["invalid JSON"])]:
        (run / "metrics.json").write_text(body)
        rc, _, err = run_cli(capsys, "report", run)
        assert rc == 2
        one_line_error(err, str(run / "metrics.json"), *needles)


def test_train_tlpo_on_an_empty_data_folder(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    rc, _, err = run_cli(capsys, "train", "tlpo", "--model", "tiny-llama", "--data", tmp_path / "d",
                         "--out", tmp_path / "o")
    assert rc == 2
    one_line_error(err, "train.jsonl")
    (tmp_path / "d" / "train.jsonl").write_text("\n")
    rc, _, err = run_cli(capsys, "train", "tlpo", "--model", "tiny-llama", "--data", tmp_path / "d",
                         "--out", tmp_path / "o")
    assert rc == 2
    one_line_error(err, "empty file")


def test_pickle_only_checkpoints_are_refused_unless_asked(tmp_path, tiny_model, monkeypatch):
    from xke.models.loading import load_model

    d = tmp_path / "m"
    tiny_model.model.save_pretrained(d)
    tiny_model.tokenizer.save_pretrained(d)
    for f in d.glob("*.safetensors"):
        f.unlink()
    torch.save(tiny_model.model.state_dict(), d / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle"):
        load_model(str(d), device="cpu")
    monkeypatch.setenv("XKE_ALLOW_PICKLE", "1")
    assert load_model(str(d), device="cpu").model is not None


def test_prompt_longer_than_the_context_is_refused_before_any_edit(tiny_model, tmp_path):
    cases = make_cases(2, split=False)
    cases[1].views["en"].paraphrases = ["word " * 600]
    data = str(write_jsonl(tmp_path / "long.jsonl", cases))
    with pytest.raises(DataError, match=r"long.jsonl, record 2, field 'views.en.paraphrases\[0\]'.*context of 512"):
        run_eval(spec(tmp_path / "o", data), loaded=tiny_model, progress=False)
    assert not (tmp_path / "o" / "cases.jsonl").exists()


# =========================================================================================== item 13
def test_train_xkde_languages_must_be_the_worlds(world):
    from xke.world.xeit_source import world_facts

    with pytest.raises(DataError, match=r"not \['de'\]"):
        world_facts(world, ["en", "de"])


def test_retrieve_mode_needs_an_in_context_method(tiny_model, data, tmp_path):
    with pytest.raises(ConfigError, match="--mode retrieve applies to in-context methods"):
        run_eval(spec(tmp_path / "o", data, mode="retrieve"), loaded=tiny_model, progress=False)
    assert not (tmp_path / "o").exists()


def test_memory_list_accepts_iso_language_codes(tmp_path, capsys):
    db = tmp_path / "m.sqlite"
    run_cli(capsys, "memory", "add", "--db", db, "--lang", "cz", "--prompt", "Kdo?", "--target-new", "On")
    assert "Kdo?" in run_cli(capsys, "memory", "list", "--db", db, "--lang", "cs")[1]
    rc, _, err = run_cli(capsys, "memory", "list", "--db", db, "--lang", "xx")
    assert rc == 2
    one_line_error(err, "unknown language")


def test_report_refuses_a_run_given_twice_and_out_equal_to_a_run(tiny_model, data, tmp_path, capsys):
    run = tmp_path / "r"
    run_eval(spec(run, data, limit=1), loaded=tiny_model, progress=False)
    before = digest(run)
    rc, _, err = run_cli(capsys, "report", run, str(run) + "/")
    assert rc == 2
    one_line_error(err, "given twice")
    rc, _, err = run_cli(capsys, "report", run, "--out", run)
    assert rc == 2
    one_line_error(err, "is one of the runs")
    assert digest(run) == before


def test_two_runs_into_one_out_are_refused(tiny_model, data, tmp_path):
    from xke.fsutil import DirLock

    out = tmp_path / "o"
    out.mkdir()
    with DirLock(out, "another xke eval"):
        with pytest.raises(XkeError, match=rf"in use by another xke eval \(pid {os.getpid()}\)"):
            run_eval(spec(out, data, limit=1), loaded=tiny_model, progress=False)
    assert not (out / "spec.json").exists()
    run_eval(spec(out, data, limit=1), loaded=tiny_model, progress=False)   # the lock went with its holder


def test_demo_rejects_an_unknown_method_before_building_anything(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "demo", "--methods", "none,foo", "--preset", "tiny", "--out", tmp_path / "d")
    assert rc == 2
    one_line_error(err, "foo")
    assert not (tmp_path / "d").exists()


def test_an_old_spec_without_resolved_inputs_is_accepted_and_upgraded(tiny_model, data, tmp_path):
    out = tmp_path / "o"
    m1 = run_eval(spec(out, data, limit=2), loaded=tiny_model, progress=False)
    sj = json.loads((out / "spec.json").read_text())
    del sj["resolved"]
    (out / "spec.json").write_text(json.dumps(sj))
    assert run_eval(spec(out, data, limit=2), loaded=tiny_model, progress=False) == m1
    assert "inputs" in json.loads((out / "spec.json").read_text())["resolved"]
    with pytest.raises(ConfigError, match="limit: 2 -> 3"):
        run_eval(spec(out, data, limit=3), loaded=tiny_model, progress=False)


def test_jsonl_paraphrase_with_a_lone_surrogate_is_refused(tmp_path, capsys):
    p = tmp_path / "c.jsonl"
    line = make_cases(1, split=False)[0].to_json().replace("was born in which city?", "was born\\ud83d?")
    p.write_text(line + "\n")
    rc, _, err = run_cli(capsys, "data", "check", "jsonl", p)
    assert rc == 2
    one_line_error(err, str(p), "record 1", "views.en.paraphrases[0]", "lone surrogate")
