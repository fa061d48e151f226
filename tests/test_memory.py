"""The edit memory: SQLite store, reliability under concurrent writers and kill -9, JSONL, the vector index."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xke.memory.index import StoreIndex, VectorIndex
from xke.memory.store import EditStore, MemoryEdit

REPO = Path(__file__).resolve().parents[1]


def _edit(i: int, lang: str = "en", **kw) -> MemoryEdit:
    return MemoryEdit(lang=lang, prompt=f"Where was person {i} born?", target_new=f"City{i}", subject=f"person {i}",
                      **kw)


def test_add_list_retire_delete(tmp_path):
    with EditStore(tmp_path / "m.sqlite") as s:
        ids = s.add_many([_edit(i) for i in range(5)], batch="b1")
        assert ids == [1, 2, 3, 4, 5] and len(s) == 5
        g = s.generation()
        assert s.retire([2, 3]) == 2 and len(s) == 3 and s.generation() > g
        assert [e.id for e in s.list()] == [1, 4, 5]
        assert len(s.list(active=None)) == 5
        assert s.get(2).active is False and s.get(2).retired is not None
        assert s.delete([4]) == 1 and s.get(4) is None
        assert s.retire(batch="b1") == 2 and len(s) == 0
        e = s.get(1)
        assert (e.lang, e.prompt, e.target_new, e.subject, e.batch) == ("en", "Where was person 0 born?", "City0",
                                                                        "person 0", "b1")


def test_persistent_between_opens(tmp_path):
    p = tmp_path / "m.sqlite"
    with EditStore(p) as s:
        s.add(_edit(1, target_old="Old"))
    with EditStore(p) as s:
        assert s.get(1).target_old == "Old" and len(s) == 1


def test_rollback_to_point_in_time(tmp_path):
    with EditStore(tmp_path / "m.sqlite") as s:
        s.add_many([_edit(i, created=100.0 + i) for i in range(3)])  # created 100, 101, 102
        s.add_many([_edit(i, created=200.0 + i) for i in range(3, 5)])
        s.retire([1])                                                 # retired now (> 150)
        r = s.rollback(150.0)
        assert r == {"retired": 2, "reactivated": 1}
        assert [e.id for e in s.list()] == [1, 2, 3]


def test_import_rejects_malformed_lines_keeps_rest(tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [json.dumps(_edit(1).to_dict()), "{not json", json.dumps({"lang": "en", "prompt": "p"}),
             "", json.dumps({"lang": "xx", "prompt": "p", "target_new": "t"}),
             json.dumps({"lang": "zh", "prompt": "甲出生在哪里？", "target_new": "北京", "subject": "甲"})]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with EditStore(tmp_path / "m.sqlite") as s:
        r = s.import_jsonl(src)
        assert len(r.added) == 2 and len(s) == 2
        assert [ln for ln, _ in r.errors] == [2, 3, 5]
        assert "target_new" in r.errors[1][1] and "lang" in r.errors[2][1]
        out = tmp_path / "out.jsonl"
        assert s.export_jsonl(out) == 2
        with EditStore(tmp_path / "m2.sqlite") as s2:
            assert not s2.import_jsonl(out).errors
            assert [(e.prompt, e.target_new) for e in s2.list()] == [(e.prompt, e.target_new) for e in s.list()]


def test_memory_cli(tmp_path):
    from xke.cli import main
    db = str(tmp_path / "m.sqlite")
    assert main(["memory", "add", "--db", db, "--lang", "en", "--prompt", "Where was X born?",
                 "--target-new", "Paris", "--subject", "X"]) == 0
    out = tmp_path / "e.jsonl"
    assert main(["memory", "export", "--db", db, "--out", str(out)]) == 0
    out.write_text(out.read_text() + "{broken\n")
    assert main(["memory", "import", "--db", db, str(out)]) == 1  # one line rejected, the other kept
    with EditStore(db) as s:
        assert len(s) == 2
    assert main(["memory", "retire", "--db", db, "1"]) == 0
    assert main(["memory", "rollback", "--db", db, "--to", "0"]) == 0
    with EditStore(db) as s:
        assert len(s) == 0


# --- reliability --------------------------------------------------------------------------
def _writer(path: str, worker: int, n: int) -> None:
    s = EditStore(path)
    for i in range(n):
        s.add(MemoryEdit(lang="en", prompt=f"w{worker} q{i}", target_new="a", batch=f"w{worker}"))
    s.close()


def test_four_processes_write_at_once(tmp_path):
    path = str(tmp_path / "m.sqlite")
    EditStore(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 1000)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with EditStore(path) as s:
        assert s.count(active=None) == 4000
        for w in range(4):
            assert len(s.list(batch=f"w{w}")) == 1000
        assert len({e.prompt for e in s.list()}) == 4000


def test_threads_write_at_once(tmp_path):
    import threading
    with EditStore(tmp_path / "m.sqlite") as s:
        def work(w):
            for i in range(200):
                s.add(MemoryEdit(lang="en", prompt=f"t{w} {i}", target_new="a"))
        ts = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(s) == 800


WRITER = """
import sys
from xke.memory.store import EditStore, MemoryEdit
s = EditStore(sys.argv[1])
i = 0
while True:
    eid = s.add(MemoryEdit(lang="en", prompt=f"stream q{i}", target_new=f"a{i}"))
    print(eid, flush=True)   # printed only after the commit
    i += 1
"""


def test_kill_9_loses_no_committed_edit(tmp_path):
    path = str(tmp_path / "m.sqlite")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True, env=env)
    committed = []
    try:
        for line in proc.stdout:
            committed.append(int(line))
            if len(committed) >= 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    with EditStore(path) as s:
        stored = set(s.active_ids())
        assert set(committed) <= stored
        assert all(s.get(i).prompt == f"stream q{i - 1}" for i in committed)


# --- vector index ----------------------------------------------------------------------------
def test_vector_index_exact_and_faiss_agree():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(600, 16)).astype(np.float32)
    q = vecs[:20] + 0.01 * rng.normal(size=(20, 16)).astype(np.float32)
    exact = VectorIndex(16, faiss_min=10**9)
    approx = VectorIndex(16, faiss_min=100)
    for idx in (exact, approx):
        idx.add(list(range(1000, 1600)), vecs)
    assert approx.uses_faiss and not exact.uses_faiss
    e, a = exact.search(q, 3), approx.search(q, 3)
    assert [r[0][0] for r in e] == list(range(1000, 1020)) == [r[0][0] for r in a]
    for idx in (exact, approx):
        idx.remove([1000, 1001])
        res = idx.search(q[:2], 1)
        assert res[0][0][0] != 1000 and res[1][0][0] != 1001
        assert len(idx) == 598


def test_store_index_follows_store(tmp_path):
    def encode(texts):  # a deterministic toy encoder: bag of characters
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t:
                out[i, ord(ch) % 64] += 1
        return out

    with EditStore(tmp_path / "m.sqlite") as s:
        ids = s.add_many([MemoryEdit(lang="en", prompt=p, target_new="x") for p in ["aaaa", "bbbb", "cccc"]])
        si = StoreIndex(s, encode, 64, key="toy")
        assert si.search(encode(["bbbb"]), 1)[0][0][0] == ids[1]
        s.retire([ids[1]])
        assert si.search(encode(["bbbb"]), 1)[0][0][0] != ids[1]
        # reopened: vectors come from the cache beside the store, nothing re-encoded
        calls = []
        si2 = StoreIndex(s, lambda t: calls.append(t) or encode(t), 64, key="toy")
        assert si2.sync()["added"] == 0 and not calls
        assert (tmp_path / "m.sqlite.index").is_dir()


def test_one_edit_schema_family_converts_explicitly(tmp_path):
    """A case's request, its stored form and the request read back from the store are the same edit; the
    training data's FactView and the case's LangView share the EditText base."""
    from xke.data.schema import EditCase, EditRequest, EditText, LangView
    from xke.train.sources import FactView, facts_from_cases

    case = EditCase("c7", {"en": LangView("Ann Lee", "Where was Ann Lee born?", "Oslo", target_old="Rome")})
    req = case.request("en")
    assert req == EditRequest("c7", "en", "Where was Ann Lee born?", "Oslo", "Ann Lee", target_old="Rome")
    with EditStore(tmp_path / "m.sqlite") as s:
        (eid,) = s.add_many([MemoryEdit.from_request(req, batch="b")])
        back = s.get(eid)
    assert (back.case_id, back.batch, back.subject) == ("c7", "b", "Ann Lee")
    assert back.to_request() == req
    assert MemoryEdit(lang="en", prompt="q?", target_new="a").to_request().case_id == ""
    fv = facts_from_cases([case], "t")[0].views["en"]
    assert isinstance(fv, FactView) and isinstance(fv, EditText) and isinstance(case.view("en"), EditText)
    assert EditRequest.of(fv, case_id="c7", lang="en") == req
