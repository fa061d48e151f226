"""A small dense cross-lingual retriever trained on the toy world's parallel sentences.

Real use takes a multilingual sentence-transformers model from a local path;
the toy world has its own names and languages, so it gets its own retriever:

1. a BPE tokenizer trained on the world's sentences (lower-cased, CJK
   characters are tokens of their own);
2. a tiny BERT encoder built from :class:`RetrieverTrainConfig` (random
   init), mean pooling, unit-normalised output;
3. trained with sentence-transformers' training API
   (``SentenceTransformerTrainer``, ``MultipleNegativesRankingLoss`` with
   in-batch negatives) on pairs of the same fact in two languages
   (``World.parallel_sentences``) and on pairs of different question forms of
   the same fact (within and across languages), so a question in one
   language finds the edit stored in another;
4. saved with ``save_pretrained`` into ``<world>/retriever`` (default), a
   normal sentence-transformers directory, plus ``report.json`` with
   cross-lingual recall@1 on the world's held-out edit cases.

``xke world retriever [--world DIR] [--out DIR]`` runs it.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import from_dict
from ..errors import XkeError


@dataclass
class RetrieverTrainConfig:
    """The tiny retriever's architecture and training options."""

    #: "static": token embeddings + mean pooling (StaticEmbedding; fast, robust); "bert": a tiny BERT encoder
    arch: str = "static"
    dim: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    max_seq_length: int = 48
    vocab_size: int = 3000
    epochs: int = 4
    batch_size: int = 64
    #: learning rate (static embeddings want a high one; a tiny BERT from scratch ~1e-4)
    lr: float = 0.1
    warmup_ratio: float = 0.05
    #: extra pairs of different question forms per fact (within and across languages)
    template_pairs_per_fact: int = 8
    #: triples about invented people (never world names): two question forms about one invented person and
    #: the same form about another, per person relation; names the retriever has never seen must decide too
    #: (docs/tuning.md has the locality figures with and without them)
    invented_triples: int = 12000
    max_pairs: int | None = None
    seed: int = 0
    threads: int = 1
    #: similarity threshold recommended for this retriever (written to report.json)
    threshold: float = 0.5


def build_pairs(world: Any, langs: Sequence[str], cfg: RetrieverTrainConfig
                ) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Training data from a world.

    - pairs ``(a, b)``: the same sentence in two languages (``World.parallel_sentences``);
    - triples ``(anchor, positive, hard negative)``: two question forms of the same fact (any
      languages) and the positive's form asked about another subject with the same relation, so
      that the subject's name, not only the relation words, decides the match;
    - ``invented_triples`` more of them about invented people (:func:`_invented_triples`).
    """
    from ..world import templates as T

    rng = random.Random(cfg.seed)
    langs = list(langs)
    pairs: list[tuple[str, str]] = []
    for tup in world.parallel_sentences(langs):
        a, b = rng.sample(range(len(tup)), 2) if len(tup) > 1 else (0, 0)
        if tup[a] != tup[b]:
            pairs.append((tup[a], tup[b]))
    n_forms = T.N_QUESTIONS - T.N_HELDOUT
    by_rel: dict[str, list[str]] = {}
    for (subj, rel) in world.facts:
        by_rel.setdefault(rel, []).append(subj)
    triples: list[tuple[str, str, str]] = []
    for (subj, rel) in list(world.facts):
        others = [o for o in by_rel[rel] if o != subj]
        for _ in range(cfg.template_pairs_per_fact):
            la, lb = rng.choice(langs), rng.choice(langs)
            ta, tb = rng.randrange(n_forms), rng.randrange(n_forms)
            qa, qb = world.question(subj, rel, la, ta), world.question(subj, rel, lb, tb)
            if qa == qb or not others:
                continue
            neg = world.question(rng.choice(others), rel, lb, tb)
            triples.append((qa, qb, neg))
    triples += _invented_triples(world, langs, cfg.invented_triples, rng)
    rng.shuffle(pairs)
    rng.shuffle(triples)
    if cfg.max_pairs is not None:
        pairs, triples = pairs[:cfg.max_pairs], triples[:cfg.max_pairs]
    return pairs, triples


def _invented_triples(world: Any, langs: Sequence[str], n: int, rng: random.Random
                      ) -> list[tuple[str, str, str]]:
    """``n`` (anchor, positive, hard negative) triples about invented people: two training question forms
    of one person's relation (any languages) and the positive's form about another invented person."""
    from ..world import templates as T
    from ..world.world import PERSON_RELATIONS

    if n <= 0:
        return []
    people = world.invented_people(2 * n, "retriever", langs)
    out = []
    for i in range(n):
        p, other = people[2 * i], people[2 * i + 1]
        rel = rng.choice(PERSON_RELATIONS)
        la, lb = rng.choice(langs), rng.choice(langs)
        fa, fb = rng.choice(T.TRAIN_FORMS), rng.choice(T.TRAIN_FORMS)
        qa, qb = T.QUESTIONS[rel][la][fa].format(s=p[la]), T.QUESTIONS[rel][lb][fb].format(s=p[lb])
        if qa != qb:
            out.append((qa, qb, T.QUESTIONS[rel][lb][fb].format(s=other[lb])))
    return out


def _train_tokenizer(texts: Sequence[str], out: Path, vocab_size: int):
    """A lower-cased BPE tokenizer (BERT normalisation and pre-tokenisation: CJK characters are tokens of
    their own) trained on ``texts``. BPE, not WordPiece: the ``tokenizers`` WordPiece trainer breaks ties
    differently from run to run, the BPE trainer does not, so a retriever is reproducible."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(list(texts), trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, show_progress=False,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return fast


def build_model(texts: Sequence[str], cfg: RetrieverTrainConfig, workdir: Path):
    """An untrained sentence encoder (``cfg.arch``) whose tokenizer is trained on ``texts``."""
    import torch
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, StaticEmbedding, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize, Pooling, StaticEmbedding, Transformer
    from transformers import BertConfig, BertModel

    tdir = workdir / "transformer"
    tok = _train_tokenizer(texts, tdir, cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    if cfg.arch == "static":
        emb = StaticEmbedding(tok.backend_tokenizer, embedding_dim=cfg.dim)
        return SentenceTransformer(modules=[emb, Normalize()], device="cpu")
    if cfg.arch != "bert":
        raise XkeError(f"retriever arch must be 'static' or 'bert', not {cfg.arch!r}")
    bcfg = BertConfig(vocab_size=len(tok), hidden_size=cfg.dim, num_hidden_layers=cfg.layers,
                      num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate,
                      max_position_embeddings=max(64, cfg.max_seq_length + 2), pad_token_id=tok.pad_token_id)
    BertModel(bcfg).save_pretrained(tdir)
    tok.save_pretrained(tdir)
    word = Transformer(str(tdir), max_seq_length=cfg.max_seq_length)
    pool = Pooling(word.get_embedding_dimension() if hasattr(word, "get_embedding_dimension")
                   else word.get_word_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[word, pool, Normalize()], device="cpu")


def train_encoder(pairs: Sequence[tuple[str, str]], cfg: RetrieverTrainConfig, out: str | Path,
                  triples: Sequence[tuple[str, str, str]] = ()) -> Path:
    """Train a tiny sentence encoder on (anchor, positive) pairs and (anchor, positive, hard negative)
    triples (MultipleNegativesRankingLoss, in-batch negatives) and save it to ``out``."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    if not pairs:
        raise XkeError("no training pairs for the retriever")
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="xke-retriever-") as tmp:
        from datasets import DatasetDict

        texts = [t for p in pairs for t in p] + [t for p in triples for t in p]
        model = build_model(texts, cfg, Path(tmp))
        ds = DatasetDict({"parallel": Dataset.from_dict({"anchor": [a for a, _ in pairs],
                                                        "positive": [b for _, b in pairs]})})
        if triples:
            ds["questions"] = Dataset.from_dict({"anchor": [t[0] for t in triples],
                                                 "positive": [t[1] for t in triples],
                                                 "negative": [t[2] for t in triples]})
        args = SentenceTransformerTrainingArguments(
            output_dir=str(Path(tmp) / "trainer"), num_train_epochs=cfg.epochs,
            per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr, warmup_steps=cfg.warmup_ratio,
            batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", report_to="none", logging_strategy="no",
            seed=cfg.seed, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                             loss=MultipleNegativesRankingLoss(model))
        trainer.train()
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out))
    return out


def recall_at_1(encoder, cases: Sequence[Any], mem_lang: str, query_lang: str, *,
                kinds: Sequence[str] = ("reliability", "generality")) -> dict[str, float]:
    """Recall@1 of queries in ``query_lang`` against a memory of the cases' edits in ``mem_lang``.

    Memory: every case's ``mem_lang`` prompt. Queries: each case's ``query_lang``
    prompt (reliability) and paraphrases (generality). Also the best score on
    each case's locality question (a fact about another subject: it should
    not match), for choosing a threshold.
    """
    import numpy as np

    cases = [c for c in cases if mem_lang in c.views and query_lang in c.views]
    mem = encoder.encode([c.views[mem_lang].prompt for c in cases])
    out: dict[str, float] = {"n_memory": len(cases)}
    for kind in kinds:
        qs, gold = [], []
        for i, c in enumerate(cases):
            v = c.views[query_lang]
            texts = [v.prompt] if kind == "reliability" else list(v.paraphrases)
            qs += texts
            gold += [i] * len(texts)
        if not qs:
            continue
        sims = encoder.encode(qs) @ mem.T
        top = sims.argmax(axis=1)
        out[f"{kind}_recall@1"] = float(np.mean(top == np.asarray(gold)))
        out[f"{kind}_score_mean"] = float(np.mean(sims[np.arange(len(qs)), gold]))
        out[f"{kind}_n"] = len(qs)
        out.setdefault("gold_scores", []).extend(float(x) for x in sims[np.arange(len(qs)), gold])
    loc = unedited_locality_prompts(cases, query_lang)
    if loc:
        best = (encoder.encode(loc) @ mem.T).max(axis=1)
        out["locality_best_scores"] = [float(x) for x in best]
    return out


def unedited_locality_prompts(cases: Sequence[Any], query_lang: str) -> list[str]:
    """The cases' ``query_lang`` locality questions, less those asking about a subject whose edit of the
    same relation is among ``cases`` (for a memory of all the cases' edits that is a true hit)."""
    edited = {(c.views[query_lang].subject, c.meta.get("relation")) for c in cases}
    return [c.views[query_lang].locality_prompt for c in cases if c.views[query_lang].locality_prompt
            and not any(s and s in c.views[query_lang].locality_prompt and r == c.meta.get("relation")
                        for s, r in edited)]


def distractor_false_hits(encoder, cases: Sequence[Any], distractors: Sequence[str], mem_lang: str,
                          query_lang: str, threshold: float) -> float:
    """Share of the cases' ``query_lang`` locality questions that reach ``threshold`` against a memory of
    the cases' ``mem_lang`` edit prompts plus ``distractors`` (edits about other, invented subjects)."""
    import numpy as np

    cases = [c for c in cases if mem_lang in c.views and query_lang in c.views and c.views[query_lang].locality_prompt]
    loc = unedited_locality_prompts(cases, query_lang)
    if not loc:
        return 0.0
    mem = encoder.encode([c.views[mem_lang].prompt for c in cases] + list(distractors))
    best = (encoder.encode(loc) @ mem.T).max(axis=1)
    return float(np.mean(best >= threshold))


def false_hit_rate(best_scores: Sequence[float], threshold: float) -> float:
    """Share of unrelated queries whose best score reaches ``threshold`` (an edit would go in context)."""
    return float(sum(s >= threshold for s in best_scores) / max(len(best_scores), 1))


def choose_threshold(pos_scores: Sequence[float], neg_scores: Sequence[float]) -> float:
    """The threshold maximising (true hits kept) − (false hits let in), midpoint between the two scores."""
    import numpy as np

    pos, neg = np.sort(np.asarray(pos_scores)), np.sort(np.asarray(neg_scores))
    cands = np.unique(np.concatenate([pos, neg]))
    best, best_t = -1e9, 0.5
    for t in cands:
        gain = np.mean(pos >= t) - np.mean(neg >= t)
        if gain > best + 1e-12:
            best, best_t = gain, t
    below = neg[neg < best_t]
    return float((best_t + below.max()) / 2) if len(below) else float(best_t)


def train_world_retriever(world_dir: str | Path, out: str | Path | None = None,
                          config: RetrieverTrainConfig | dict | None = None,
                          langs: Sequence[str] | None = None) -> Path:
    """Train the retriever of a built world (``world.json`` in ``world_dir``); returns its directory.

    Writes ``report.json`` beside the model: recall@1 for every ordered
    language pair on the train and on the held-out edit cases (memory in one
    language, queries in the other), per split the threshold that best
    separates true hits from locality questions and the false-hit rate at it,
    ``threshold`` (the train split's choice; ``threshold: auto`` in the
    in-context methods uses it), the held-out false-hit rate at it with 999
    invented-person edits added to the memory (``with_999_distractors``, per
    memory -> query language), process CPU seconds and threads.
    """
    import numpy as np
    import torch

    from ..world.world import load_world
    from .retrievers import DenseEncoder

    cfg = config if isinstance(config, RetrieverTrainConfig) else from_dict(RetrieverTrainConfig, config or {},
                                                                             source="retriever config")
    wd = Path(world_dir)
    world = load_world(wd)
    langs = list(langs or world.langs)
    if len(langs) < 2:
        raise XkeError("a cross-lingual retriever needs at least two languages")
    out = Path(out) if out else wd / "retriever"
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    t0, c0 = time.time(), time.process_time()
    try:
        pairs, triples = build_pairs(world, langs, cfg)
        train_encoder(pairs, cfg, out, triples)
        cpu = time.process_time() - c0
        enc = DenseEncoder(out)
        report: dict[str, Any] = {"config": asdict(cfg), "langs": langs, "n_pairs": len(pairs), "n_triples": len(triples),
                                  "cpu_seconds": round(cpu, 1), "wall_seconds": round(time.time() - t0, 1),
                                  "threads": cfg.threads}
        for split in ("train", "heldout"):
            cases = world.counterfactual_cases(split, langs)
            block: dict[str, Any] = {"recall": {}}
            pos, neg = [], []
            for a in langs:
                for b in langs:
                    if a == b:
                        continue
                    r = recall_at_1(enc, cases, a, b)
                    neg += r.pop("locality_best_scores", [])
                    pos += r.pop("gold_scores", [])
                    block["recall"][f"{a}->{b}"] = {k: (round(v, 4) if isinstance(v, float) else v)
                                                    for k, v in r.items()}
            thr = choose_threshold(pos, neg) if pos and neg else cfg.threshold
            block["chosen_threshold"] = round(thr, 4)
            marks = {round(thr, 4), cfg.threshold}
            if "train" in report:   # the held-out split also at the train split's choice (the one in use)
                marks.add(report["train"]["chosen_threshold"])
            for t in sorted(marks):
                block[f"at_{t}"] = {"false_hit_rate": round(false_hit_rate(neg, t), 4),
                                    "true_hit_rate": round(float(np.mean(np.asarray(pos) >= t)), 4),
                                    "n_unrelated": len(neg), "n_related": len(pos)}
            report[split] = block
        # chosen on the train split's cases (the held-out ones are what evaluations test)
        report["threshold"] = report["train"]["chosen_threshold"]
        # held-out locality questions against the held-out edits plus 999 invented-person edits per language
        held = world.counterfactual_cases("heldout", langs)
        dis = {a: [d["prompt"] for d in world.distractor_edits(999, a)] for a in langs}
        report["heldout"]["with_999_distractors"] = {
            f"{a}->{b}": round(distractor_false_hits(enc, held, dis[a], a, b, report["threshold"]), 4)
            for a in langs for b in langs}
        (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    finally:
        torch.set_num_threads(threads_before)
    return out
