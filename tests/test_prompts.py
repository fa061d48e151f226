"""xke.prompts: the X-KDE, LTE and IKE user messages, pinned byte for byte to their literal text."""

from __future__ import annotations

from xke.prompts import XKDE_TEMPLATE, ike_demonstration, ike_fact, ike_prompt, lte_prompt, xkde_prompt

ACK = "Please acknowledge the updated information provided below and respond to the subsequent "


def test_xkde_prompt_is_the_literal_text():
    assert xkde_prompt([("Where was A born? ", " Paris")], "Where is A from?", "en") == (
        ACK + "query in English.\n\n[Updated Information]:\nWhere was A born? Paris\n\n[Query]:\nWhere is A from?")
    assert xkde_prompt([("q ", " a")], "x", "zh", verbatim=True) == (
        ACK + "query in Chinese.\n\n[Updated Information]:\nq   a\n\n[Query]:\nx")
    assert XKDE_TEMPLATE == (ACK + "query in {Language}.\n\n[Updated Information]:\n"
                             "{source question} {source new answer}\n\n[Query]:\n{question}")


def test_lte_prompt_is_the_literal_text():
    assert lte_prompt([("q1", "a1"), ("q2", "a2")], "Q?") == (
        ACK + "question.\n\n[Updated Information]:\n1. q1 a1\n2. q2 a2\n\n[Question]:\nQ?")
    assert lte_prompt([], "Q?") == "Q?"


def test_ike_prompt_is_the_literal_text():
    assert ike_fact("Where was A born? ", " Paris", "en") == "Where was A born? Paris"
    assert ike_fact("A出生在哪里？", "巴黎", "zh") == "A出生在哪里？巴黎"
    demo = ike_demonstration("Where was B born? Rome", "Where is B from? Rome")
    assert demo == "New Fact: Where was B born? Rome\nPrompt: Where is B from? Rome"
    assert ike_prompt([demo], ["Where was A born? Paris"], "Where is A from?") == (
        "New Fact: Where was B born? Rome\nPrompt: Where is B from? Rome\n\n"
        "New Fact: Where was A born? Paris\nPrompt: Where is A from?")
    assert ike_prompt([], ["f1", "f2"], "q") == "New Fact: f1\nNew Fact: f2\nPrompt: q"
