"""Training a small dense cross-lingual retriever from scratch, for models with their own names and
languages (the toy world's retriever module builds its data and calls :func:`train_retriever`).

Real use takes a multilingual sentence-transformers model from a local path. Here:

1. a BPE tokenizer trained on the training sentences (lower-cased, CJK
   characters are tokens of their own);
2. a small encoder built from :class:`RetrieverTrainConfig` (random init: static
   token embeddings, or a tiny BERT with mean pooling), unit-normalised output;
3. trained with sentence-transformers' training API
   (``SentenceTransformerTrainer``, ``MultipleNegativesRankingLoss`` with
   in-batch negatives) on pairs (the same sentence in two languages) and
   triples (two question forms of one fact and a hard negative), so a question
   in one language finds the edit stored in another;
4. saved with ``save_pretrained`` (a normal sentence-transformers directory),
   plus ``report.json`` with cross-lingual recall@1 on the given edit cases and
   the threshold chosen on them.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

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
    #: hard-negative triples about invented people (built by the data's provider, e.g. the toy world): two
    #: question forms about one invented person and the same form about another; names the retriever has never
    #: seen must decide too (docs/tuning.md has the locality figures with and without them)
    invented_triples: int = 12000
    max_pairs: int | None = None
    seed: int = 0
    threads: int = 1
    #: similarity threshold recommended for this retriever (written to report.json)
    threshold: float = 0.5


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


def train_retriever(pairs: Sequence[tuple[str, str]], triples: Sequence[tuple[str, str, str]],
                    cfg: RetrieverTrainConfig, out: str | Path, langs: Sequence[str],
                    eval_cases: dict[str, Sequence[Any]],
                    distractors: dict[str, Sequence[str]] | None = None) -> Path:
    """Train an encoder on ``pairs`` and ``triples`` (:func:`train_encoder`) into ``out`` and write ``report.json``.

    The report holds recall@1 for every ordered language pair on each split of ``eval_cases`` (memory in one
    language, queries in the other), per split the threshold that best separates true hits from locality
    questions and the false-hit rate at it, ``threshold`` (the ``train`` split's choice, else the first
    split's; ``threshold: auto`` in the in-context methods uses it), with ``distractors`` (memory language ->
    edit prompts about other subjects) the ``heldout`` split's false-hit rate at it with them added to the
    memory (``with_999_distractors``), process CPU seconds and threads.
    """
    import numpy as np
    import torch

    from .retrievers import DenseEncoder

    langs = list(langs)
    if len(langs) < 2:
        raise XkeError("a cross-lingual retriever needs at least two languages")
    out = Path(out)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    t0, c0 = time.time(), time.process_time()
    try:
        train_encoder(pairs, cfg, out, triples)
        cpu = time.process_time() - c0
        enc = DenseEncoder(out)
        report: dict[str, Any] = {"config": asdict(cfg), "langs": langs, "n_pairs": len(pairs),
                                  "n_triples": len(triples), "cpu_seconds": round(cpu, 1),
                                  "wall_seconds": round(time.time() - t0, 1), "threads": cfg.threads}
        first = None
        for split, cases in eval_cases.items():
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
            if first is not None:   # later splits also at the first split's choice (the one in use)
                marks.add(report[first]["chosen_threshold"])
            for t in sorted(marks):
                block[f"at_{t}"] = {"false_hit_rate": round(false_hit_rate(neg, t), 4),
                                    "true_hit_rate": round(float(np.mean(np.asarray(pos) >= t)), 4),
                                    "n_unrelated": len(neg), "n_related": len(pos)}
            report[split] = block
            first = first or split
        # chosen on the train split's cases (the held-out ones are what evaluations test)
        report["threshold"] = report["train" if "train" in report else first]["chosen_threshold"]
        if distractors and "heldout" in eval_cases:
            report["heldout"]["with_999_distractors"] = {
                f"{a}->{b}": round(distractor_false_hits(enc, eval_cases["heldout"], distractors[a], a, b,
                                                         report["threshold"]), 4)
                for a in langs for b in langs}
        (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    finally:
        torch.set_num_threads(threads_before)
    return out
