"""Retrievers: BM25 (monolingual), a dense retriever trained here on a handful of pairs, thresholds."""

from __future__ import annotations

import pytest

from xke.memory.retrievers import BM25Retriever, DenseEncoder, DenseRetriever, bm25_tokens, make_retriever
from xke.memory.store import EditStore, MemoryEdit
from xke.errors import ConfigError

NAMES = [("Alice Kim", "金爱丽"), ("Boris Lund", "伦德博"), ("Carla Moro", "莫罗卡"), ("Dario Vent", "文达里"),
         ("Elena Sato", "佐藤伊"), ("Farid Osei", "奥塞法")]
REL = {  # relation -> (en forms, zh forms)
    "born": (["Where was {s} born?", "In which city was {s} born?"], ["{s}出生在哪里？", "{s}在哪个城市出生？"]),
    "work": (["Who employs {s}?", "Which company does {s} work for?"], ["{s}的雇主是谁？", "{s}在哪家公司工作？"]),
}


def _pairs():
    pairs = []
    for en, zh in NAMES:
        pairs.append((en, zh))
        for forms_en, forms_zh in REL.values():
            for a in forms_en:
                for b in forms_zh:
                    pairs.append((a.format(s=en), b.format(s=zh)))
            pairs.append((forms_en[0].format(s=en), forms_en[1].format(s=en)))
            pairs.append((forms_zh[0].format(s=zh), forms_zh[1].format(s=zh)))
    return pairs


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    from xke.memory.train_retriever import RetrieverTrainConfig, train_encoder
    out = tmp_path_factory.mktemp("retriever")
    cfg = RetrieverTrainConfig(dim=32, epochs=20, batch_size=8, lr=0.1, vocab_size=400)
    return train_encoder(_pairs(), cfg, out)


def _store_with_en_edits(tmp_path):
    s = EditStore(tmp_path / "m.sqlite")
    for en, _ in NAMES:
        s.add(MemoryEdit(lang="en", prompt=REL["born"][0][0].format(s=en), target_new="Paris", subject=en))
        s.add(MemoryEdit(lang="en", prompt=REL["work"][0][0].format(s=en), target_new="Acme", subject=en))
    return s


def test_bm25_tokens_split_cjk():
    assert bm25_tokens("Where was Alice born?") == ["where", "was", "alice", "born"]
    assert bm25_tokens("金爱丽出生在哪里？") == list("金爱丽出生在哪里")


def test_bm25_monolingual_and_threshold(tmp_path):
    with _store_with_en_edits(tmp_path) as s:
        r = make_retriever("bm25", s)
        hits = r.retrieve("Where was Carla Moro born?", k=2)
        assert hits[0].edit.prompt == "Where was Carla Moro born?"
        assert r.retrieve("Which company does Dario Vent work for?", k=1)[0].edit.prompt == "Who employs Dario Vent?"
        assert r.retrieve("zzz qqq", k=3) == []          # nothing in common: no hit
        top = hits[0].score
        assert r.retrieve("Where was Carla Moro born?", k=1, threshold=top + 1) == []
        # the store is the source of truth: retired edits disappear from results
        s.retire([hits[0].edit.id])
        assert all(h.edit.id != hits[0].edit.id for h in r.retrieve("Where was Carla Moro born?", k=5))


def test_dense_cross_lingual_retrieval(tmp_path, tiny_encoder_dir):
    with _store_with_en_edits(tmp_path) as s:
        r = DenseRetriever(s, tiny_encoder_dir)
        correct = 0
        queries = [(zh, en, rel) for en, zh in NAMES for rel in REL]
        for zh, en, rel in queries:
            hit = r.retrieve(REL[rel][1][1].format(s=zh), k=1)[0]   # a zh form, memory holds en
            correct += hit.edit.prompt == REL[rel][0][0].format(s=en)
        assert correct / len(queries) >= 0.9
        # threshold: an unrelated query gets no edit at a threshold the related ones pass
        rel_scores = [r.retrieve(REL["born"][1][0].format(s=zh), k=1)[0].score for _, zh in NAMES]
        unrelated = r.retrieve("The weather is nice today.", k=1)[0].score
        thr = (min(rel_scores) + unrelated) / 2
        assert unrelated < min(rel_scores)
        assert r.retrieve("The weather is nice today.", k=1, threshold=thr) == []
        assert r.retrieve(REL["born"][1][0].format(s=NAMES[0][1]), k=1, threshold=thr)


def test_dense_index_syncs_with_store(tmp_path, tiny_encoder_dir):
    with _store_with_en_edits(tmp_path) as s:
        r = DenseRetriever(s, tiny_encoder_dir)
        q = "金爱丽出生在哪里？"
        first = r.retrieve(q, k=1)[0].edit
        s.retire([first.id])
        assert r.retrieve(q, k=1)[0].edit.id != first.id
        new = s.add(MemoryEdit(lang="en", prompt="Where was Alice Kim born?", target_new="Rome"))
        assert r.retrieve(q, k=1)[0].edit.id == new


def test_dense_needs_local_directory(tmp_path):
    with EditStore(tmp_path / "m.sqlite") as s:
        with pytest.raises(ConfigError, match="local directory"):
            make_retriever("dense", s, path="sentence-transformers/all-MiniLM-L6-v2")
        with pytest.raises(ConfigError, match="retriever_path"):
            make_retriever("dense", s)
        with pytest.raises(ConfigError, match="unknown retriever"):
            make_retriever("splade", s)


def test_encoder_is_cached(tiny_encoder_dir):
    assert DenseEncoder.cached(tiny_encoder_dir) is DenseEncoder.cached(tiny_encoder_dir)
    v = DenseEncoder.cached(tiny_encoder_dir).encode(["a", "b"])
    assert v.shape[0] == 2 and abs(float((v[0] ** 2).sum()) - 1) < 1e-4
