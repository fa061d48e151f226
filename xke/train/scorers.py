"""Alignment scorers for TL-PO: how well a sampled answer matches the target-language reference.

One interface, :class:`AlignmentScorer` ``.score(samples, reference, tgt_lang, src_lang=None) -> list[float]``
(higher is better):

- :class:`Seq2SeqScorer` — a local translation model (NLLB, M2M100, Marian):
  reward = 1 / mean cross-entropy of the reference given the sample (the
  sample is the encoder input, the reference the labels). Language codes are
  mapped from xke's codes for any pair (:func:`translation_code`), not
  hard-coded zh->en. The sample side is read as ``src_lang`` (default: the
  target language, i.e. "is this sample the reference in another wording").
- :class:`LightScorer` — for the toy world and tests: target-language
  script check times token F1 against the reference (characters for languages
  written without spaces, words otherwise).

:func:`form_errors` counts wrong-script / wrong-format answers (an English
name in a Chinese answer, a year without 年...), reported after XE-IT and TL-PO.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, Sequence

from ..data.languages import normalize_lang, uses_spaces
from ..errors import ConfigError
from ..eval.metrics import token_f1 as metrics_token_f1

#: xke code -> NLLB-200 code
NLLB_CODES = {
    "en": "eng_Latn", "zh": "zho_Hans", "cz": "ces_Latn", "de": "deu_Latn", "du": "nld_Latn", "es": "spa_Latn",
    "fr": "fra_Latn", "pt": "por_Latn", "ru": "rus_Cyrl", "th": "tha_Thai", "tr": "tur_Latn", "vi": "vie_Latn",
    "ja": "jpn_Jpan", "ko": "kor_Hang", "it": "ita_Latn", "ar": "arb_Arab", "pl": "pol_Latn", "sv": "swe_Latn",
    "fi": "fin_Latn", "uk": "ukr_Cyrl",
}
#: xke code -> M2M100 / ISO 639-1 code
ISO_CODES = {"en": "en", "zh": "zh", "cz": "cs", "de": "de", "du": "nl", "es": "es", "fr": "fr", "pt": "pt",
             "ru": "ru", "th": "th", "tr": "tr", "vi": "vi", "ja": "ja", "ko": "ko", "it": "it", "ar": "ar",
             "pl": "pl", "sv": "sv", "fi": "fi", "uk": "uk"}

#: the script each language is written in (for the script check)
LANG_SCRIPT = {"zh": "han", "ja": "japanese", "ko": "hangul", "th": "thai", "ru": "cyrillic", "uk": "cyrillic",
               "ar": "arabic"}


def translation_code(lang: str, family: str) -> str:
    """The language code a translation model ``family`` (``nllb``, ``m2m100``, ``marian``) uses for ``lang``."""
    lang = normalize_lang(lang)
    if family == "nllb":
        return NLLB_CODES[lang]
    if family in ("m2m100", "marian"):
        return ISO_CODES[lang]
    raise ConfigError(f"unknown translation model family {family!r}; use nllb, m2m100 or marian")


def model_family(config) -> str:
    mt = getattr(config, "model_type", "")
    name = str(getattr(config, "_name_or_path", "")).lower()
    if mt == "m2m_100" and "nllb" in name:
        return "nllb"
    if mt == "m2m_100":
        return "nllb" if getattr(config, "vocab_size", 0) > 200_000 else "m2m100"
    if mt == "marian":
        return "marian"
    return "generic"


class AlignmentScorer:
    """Scores samples against a target-language reference; higher is better."""

    name = "base"

    def score(self, samples: Sequence[str], reference: str, tgt_lang: str, src_lang: str | None = None
              ) -> list[float]:
        raise NotImplementedError


# ----------------------------------------------------------------------------- light scorer


def _char_script(ch: str) -> str | None:
    o = ord(ch)
    if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF:
        return "han"
    if 0x3040 <= o <= 0x30FF:
        return "kana"
    if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF:
        return "hangul"
    if 0x0E00 <= o <= 0x0E7F:
        return "thai"
    if 0x0400 <= o <= 0x04FF:
        return "cyrillic"
    if 0x0600 <= o <= 0x06FF:
        return "arabic"
    if ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN"):
        return "latin"
    return None


def script_share(text: str, lang: str) -> float:
    """Share of the letters of ``text`` written in ``lang``'s script (1.0 when there are no letters)."""
    want = LANG_SCRIPT.get(normalize_lang(lang), "latin")
    scripts = [s for s in (_char_script(c) for c in text) if s is not None]
    if not scripts:
        return 1.0
    ok = {"japanese": {"han", "kana"}}.get(want, {want})
    return sum(s in ok for s in scripts) / len(scripts)


def answer_tokens(text: str, lang: str) -> list[str]:
    """Words for spaced languages; characters (spaces dropped) for zh/ja/th."""
    t = unicodedata.normalize("NFKC", text).lower()
    if uses_spaces(lang):
        return re.findall(r"\w+", t)
    return [c for c in t if not c.isspace() and not unicodedata.category(c).startswith("P")]


def token_f1(pred: str, gold: str, lang: str) -> float:
    """Token F1 (:func:`xke.eval.metrics.token_f1`) over language-aware word/character tokens."""
    return metrics_token_f1(pred, gold, lambda t: answer_tokens(t, lang))


class LightScorer(AlignmentScorer):
    """Script check x token F1 against the reference (no model needed)."""

    name = "light"

    def score(self, samples, reference, tgt_lang, src_lang=None):
        ref_share = script_share(reference, tgt_lang)
        out = []
        for s in samples:
            share = script_share(s, tgt_lang)
            # a reference that itself mixes scripts (a Latin name in zh) does not penalise the same mix
            script_ok = min(1.0, share / ref_share) if ref_share > 0 else 1.0
            out.append(round(script_ok * token_f1(s, reference, tgt_lang), 6))
        return out


# ----------------------------------------------------------------------------- seq2seq scorer


class Seq2SeqScorer(AlignmentScorer):
    """Reward = 1 / mean cross-entropy of the reference given the sample, under a local translation model."""

    name = "seq2seq"

    def __init__(self, path: str, *, device: str = "auto", batch_size: int = 16, family: str | None = None):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from ..models.loading import pick_device

        self.device = pick_device(device)
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(path).to(self.device).eval()
        self.family = family or model_family(self.model.config)
        self.batch_size = batch_size
        self._torch = torch

    def _set_langs(self, src: str, tgt: str) -> None:
        if self.family in ("nllb", "m2m100"):
            self.tok.src_lang = translation_code(src, self.family)
            self.tok.tgt_lang = translation_code(tgt, self.family)

    def score(self, samples, reference, tgt_lang, src_lang=None):
        torch = self._torch
        if not samples:
            return []
        self._set_langs(src_lang or tgt_lang, tgt_lang)
        out: list[float] = []
        for i in range(0, len(samples), self.batch_size):
            chunk = list(samples[i:i + self.batch_size])
            enc = self.tok(chunk, text_target=[reference] * len(chunk), return_tensors="pt", padding=True,
                           truncation=True, max_length=256).to(self.device)
            labels = enc.pop("labels")
            pad = self.tok.pad_token_id
            labels = labels.masked_fill(labels == pad, -100)
            with torch.inference_mode():
                logits = self.model(**enc, labels=labels).logits
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels, reduction="none",
                                                   ignore_index=-100)
            mask = (labels != -100).float()
            mean_ce = (ce * mask).sum(1) / mask.sum(1).clamp(min=1)
            out += [float(1.0 / max(v, 1e-6)) for v in mean_ce.tolist()]
        return out


@dataclass
class ScorerConfig:
    kind: Literal["light", "seq2seq"] = "light"
    path: str | None = None          # local translation model for kind seq2seq
    batch_size: int = 16
    device: str = "auto"
    sample_lang: Literal["target", "source"] = "target"  # language the sample side is read as

    def validate(self) -> None:
        if self.kind == "seq2seq" and not self.path:
            raise ValueError("scoring.path (a local NLLB/M2M100/Marian directory) is required for kind seq2seq")


def build_scorer(cfg: ScorerConfig) -> AlignmentScorer:
    if cfg.kind == "light":
        return LightScorer()
    return Seq2SeqScorer(cfg.path, device=cfg.device, batch_size=cfg.batch_size)


def score_records(records: list[dict], scorer: AlignmentScorer, sample_lang: str = "target") -> list[dict]:
    """Add ``scores`` (per sample) and ``reference_score`` to sampling records, in place."""
    from tqdm.auto import tqdm

    for rec in tqdm(records, desc=f"scoring ({scorer.name})", leave=False):
        src = rec["src_lang"] if sample_lang == "source" else rec["tgt_lang"]
        allv = scorer.score(list(rec["samples"]) + [rec["reference"]], rec["reference"], rec["tgt_lang"], src)
        rec["scores"], rec["reference_score"] = allv[:-1], allv[-1]
    return records


# ----------------------------------------------------------------------------- form errors


_YEAR = re.compile(r"(?<!\d)(1\d{3}|20\d{2})(?!\d)")


def form_errors(answer: str, reference: str, lang: str) -> list[str]:
    """Why ``answer`` is in the wrong script or format for ``lang`` (empty list: fine).

    - ``wrong_script``: letters outside ``lang``'s script that the reference does
      not have (an English name in a Chinese answer; CJK in an English one);
    - ``year_format``: the reference writes a year as ``1987年`` and the answer
      writes the bare number (or the other way round).
    """
    errs = []
    if script_share(answer, lang) + 1e-9 < script_share(reference, lang) - 0.2:
        errs.append("wrong_script")
    ref_years = _YEAR.findall(reference)
    if ref_years:
        ref_has = "年" in reference
        for y in _YEAR.findall(answer):
            tail = answer[answer.find(y) + len(y): answer.find(y) + len(y) + 1]
            if ref_has and tail != "年":
                errs.append("year_format")
                break
            if not ref_has and tail == "年":
                errs.append("year_format")
                break
    return errs


def form_error_counts(answers: Sequence[tuple[str, str]], lang: str) -> dict[str, int]:
    """How many ``(answer, reference)`` pairs in ``lang`` have each :func:`form_errors` reason, and ``any``."""
    counts = {"wrong_script": 0, "year_format": 0, "any": 0}
    for answer, reference in answers:
        errs = form_errors(answer, reference, lang)
        for e in errs:
            counts[e] += 1
        counts["any"] += bool(errs)
    return counts
