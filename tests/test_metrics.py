"""Every metric against hand-computed values, and CLM-Bench Table 1 arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from xke.eval.metrics import (argmax_agreement, clm_scores, exact_match, mean, safe_div, teacher_forced_accuracy,
                              to_percent, token_f1)


def test_teacher_forced_accuracy():
    assert teacher_forced_accuracy([5, 7, 9], [5, 7, 9]) == 1.0
    assert teacher_forced_accuracy([5, 0, 9, 0], [5, 7, 9, 1]) == 0.5  # partial credit per token
    assert teacher_forced_accuracy([1, 2, 3], [3, 2, 1]) == pytest.approx(1 / 3)
    assert teacher_forced_accuracy(torch.tensor([4, 4]), torch.tensor([4, 3])) == 0.5
    assert teacher_forced_accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        teacher_forced_accuracy([1, 2], [1])


def test_argmax_agreement():
    assert argmax_agreement([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert argmax_agreement([1, 2, 3, 4], [1, 9, 3, 9]) == 0.5
    assert argmax_agreement([7], [8]) == 0.0
    assert argmax_agreement(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 0])) == pytest.approx(2 / 3)
    assert argmax_agreement([], []) == 1.0
    with pytest.raises(ValueError):
        argmax_agreement([1], [1, 2])


def test_token_f1_hand_computed():
    # pred "a b c d", gold "a b e": overlap 2, P = 2/4, R = 2/3, F1 = 2*(1/2)(2/3)/(1/2+2/3) = 4/7
    assert token_f1("a b c d", "a b e") == pytest.approx(4 / 7)
    assert token_f1("Paris", "Paris") == 1.0
    assert token_f1("  Paris \n", "Paris") == 1.0  # surrounding whitespace does not count
    # multiset overlap: pred "a a a", gold "a b": overlap min(3,1)=1, P=1/3, R=1/2, F1=0.4
    assert token_f1("a a a", "a b") == pytest.approx(0.4)
    assert token_f1("", "") == 1.0
    assert token_f1("   ", "") == 1.0
    assert token_f1("", "x") == 0.0 and token_f1("x", "") == 0.0
    assert token_f1("x y", "z") == 0.0  # no overlap: 0, no division by zero


def test_token_f1_with_tokenizer_function():
    chars = list  # a character tokenizer, as for zh
    # pred 英国伦敦 vs gold 英国: overlap 2, P = 2/4, R = 1 -> F1 = 2/3
    assert token_f1("英国伦敦", "英国", chars) == pytest.approx(2 / 3)

    class FakeHF:  # something with encode(..., add_special_tokens=False) like a HF tokenizer
        def encode(self, text, add_special_tokens=True):
            ids = [ord(c) for c in text]
            return ([0] if add_special_tokens else []) + ids

        def convert_ids_to_tokens(self, ids):
            return [chr(i) for i in ids]

    # BOS must not count: "ab" vs "ac" -> overlap 1, P = R = 1/2
    assert token_f1("ab", "ac", FakeHF()) == pytest.approx(0.5)


def test_exact_match():
    assert exact_match(" Paris\n", "Paris") == 1.0
    assert exact_match("paris", "Paris") == 0.0  # case is not normalised
    assert exact_match("Paris.", "Paris") == 0.0
    assert exact_match("英国", "英国") == 1.0
    assert exact_match("", "") == 1.0


def test_mean_percent_safe_div():
    assert mean([1.0, None, 0.0, 0.5]) == 0.5
    assert mean([None, None]) is None and mean([]) is None
    assert mean([float("nan"), 1.0]) == 1.0
    assert to_percent(0.30929) == 30.93 and to_percent(1) == 100.0 and to_percent(None) is None
    assert to_percent(0.123456) == 12.35
    assert safe_div(1, 0) == 0.0 and safe_div(None, 2) == 0.0 and safe_div(1, 4) == 0.25


def test_clm_table1_arithmetic():
    """CLM-Bench Table 1 (Llama3-8B, MEMIT)."""
    zh_edit = clm_scores({"zh": {"reliability": 63.21, "generality": 56.74, "locality": 65.17},
                          "en": {"reliability": 19.55}}, "zh")
    assert to_percent(zh_edit["trans"]) == 30.93
    assert round(zh_edit["zh_score"], 2) == 61.71
    en_edit = clm_scores({"zh": {"reliability": 44.42}, "en": {"reliability": 75.47}}, "en")
    assert to_percent(en_edit["trans"]) == 58.86
    mix = clm_scores({"zh": {"reliability": 63.21}, "en": {"reliability": 72.73}}, "mix")
    assert to_percent(mix["trans"]) == 86.91
    mix2 = clm_scores({"zh": {"reliability": 72.73}, "en": {"reliability": 63.21}}, "mix")
    assert to_percent(mix2["trans"]) == 86.91
    # the same with fractions, and with per-metric dicts read at key
    frac = clm_scores({"zh": {"reliability": {"tf_acc": 0.6321, "f1": 0.1}, "generality": {"tf_acc": 0.5674},
                              "locality": {"tf_acc": 0.6517}},
                       "en": {"reliability": {"tf_acc": 0.1955}}}, "zh")
    assert to_percent(frac["zh_score"]) == 61.71 and to_percent(frac["trans"]) == 30.93
    assert to_percent(frac["en_score"]) == 19.55  # only reliability present for en
    f1 = clm_scores({"zh": {"reliability": {"tf_acc": 0.6321, "f1": 0.5}},
                     "en": {"reliability": {"tf_acc": 0.1955, "f1": 0.25}}}, "zh", key="f1")
    assert f1["trans"] == 0.5


def test_clm_scores_edge_cases():
    # zero reliability in the edited language: 0, no crash
    z = clm_scores({"zh": {"reliability": 0.0, "generality": 0.0, "locality": 0.0},
                    "en": {"reliability": 0.3, "generality": 0.0, "locality": 0.6}}, "zh")
    assert z["trans"] == 0.0 and z["zh_score"] == 0.0 and z["en_score"] == pytest.approx(0.3)
    assert clm_scores({"zh": {"reliability": 0.0}, "en": {"reliability": 0.0}}, "mix")["trans"] == 0.0
    # ISO/alias edit language is accepted
    assert clm_scores({"zh": {"reliability": 0.5}, "en": {"reliability": 0.25}}, "ZH")["trans"] == 0.5
    # a missing language: score None, trans None
    only_zh = clm_scores({"zh": {"reliability": 0.5, "generality": 0.5, "locality": 1.0}}, "zh")
    assert only_zh["en_score"] is None and only_zh["trans"] is None
    assert math.isclose(only_zh["zh_score"], 2 / 3)
    # edit language that is neither zh, en nor mix: no trans
    assert clm_scores({"zh": {"reliability": 0.5}, "en": {"reliability": 0.5}}, "de")["trans"] is None
