"""Behaviour tests of the weight-editing methods on the tiny toy world (FT-L, FT-M, ROME, MEMIT, AlphaEdit, PMET)."""

from __future__ import annotations

import json

import pytest
import torch

import xke
from xke.data.schema import EditCase, EditRequest, LangView
from xke.errors import ConfigError, DataError, ModelError
from xke.models.architectures import num_layers
from xke.models.loading import load_model
from xke.models.prompts import PromptFormatter, encode_prompt_target
from xke.world.provider import provided_method


METHODS = ["ft-l", "ft-m", "rome", "memit", "alphaedit", "pmet"]


@pytest.fixture(scope="module")
def wm(world):
    lm = xke.load("world:" + str(world), device="cpu")
    cases = []
    for line in open(world / "cases.jsonl", encoding="utf-8"):
        d = json.loads(line)
        cases.append(EditCase(d["case_id"], {k: LangView(**v) for k, v in d["views"].items()}))
    return lm, PromptFormatter(lm.tokenizer), cases


def overrides(name, model):
    last = [0] if num_layers(model) <= 2 else [0, 1]
    ov = {"layers": [0] if name in ("rome", "ft-l", "ft-m") else last}
    if name not in ("ft-l", "ft-m"):
        ov.update(v_steps=20, progress=False, mom2_n_samples=400)
    return ov


def score(lm, fmt, prompt, target, lang):
    """Mean teacher-forced log-prob of the target's tokens, token accuracy, and the argmax ids."""
    p, t = encode_prompt_target(lm.tokenizer, fmt.format(prompt), target, lang)
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(torch.tensor([p + t])).logits[0].float(), -1)
    pos = list(range(len(p) - 1, len(p) + len(t) - 1))
    am = [int(lp[i].argmax()) for i in pos]
    return (sum(float(lp[i, x]) for i, x in zip(pos, t)) / len(t),
            sum(a == x for a, x in zip(am, t)) / len(t), am)


def unrelated_prompts(cases, edited, lang="en", n=6):
    ids = {c.case_id for c in edited}
    subj = {c.view(lang).subject for c in edited}
    out = []
    for c in cases:
        v = c.view(lang)
        if c.case_id in ids or v.subject in subj or any(s in v.prompt for s in subj):
            continue
        out.append((v.prompt, v.target_old or v.target_new))
        if len(out) == n:
            break
    return out


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", METHODS)
def test_batch_edit_raises_targets_keeps_unrelated_and_restores(wm, name):
    lm, fmt, cases = wm
    edited = cases[:3]
    reqs = [c.request("en") for c in edited]
    m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides=overrides(name, lm.model))
    before = state(lm.model)
    pre = [score(lm, fmt, r.prompt, r.target_new, "en") for r in reqs]
    others = unrelated_prompts(cases, edited)
    pre_loc = [score(lm, fmt, p, t, "en")[2] for p, t in others]
    h = m.apply(reqs)
    post = [score(lm, fmt, r.prompt, r.target_new, "en") for r in reqs]
    gain = sum(b[0] - a[0] for a, b in zip(pre, post)) / len(reqs)
    assert gain > 0.3, f"{name}: target log-prob rose by only {gain:.3f} ({pre} -> {post})"
    assert all(b[0] > a[0] + 0.05 for a, b in zip(pre, post)), f"{name}: an edit of the batch did not take {[(a[0], b[0]) for a, b in zip(pre, post)]}"
    post_loc = [score(lm, fmt, p, t, "en")[2] for p, t in others]
    agree = sum(sum(a == b for a, b in zip(x, y)) / len(x) for x, y in zip(pre_loc, post_loc)) / len(others)
    assert agree >= (0.6 if name == "ft-m" else 0.75), f"{name}: unrelated answers changed (argmax agreement {agree:.2f})"
    deltas = h.deltas()
    assert deltas and all(k.endswith(".weight") for k in deltas)
    changed = {k for k, v in state(lm.model).items() if not torch.equal(v, before[k])}
    assert changed and changed <= set(deltas), f"{name} changed parameters outside its snapshot: {changed - set(deltas)}"
    h.restore()
    after = state(lm.model)
    assert all(torch.equal(after[k], before[k]) for k in before), f"{name}: restore is not bit-identical"


@pytest.mark.parametrize("name", ["rome", "memit", "alphaedit", "ft-m"])
def test_sequential_edits_hold_and_roll_back(wm, name):
    lm, fmt, cases = wm
    m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides=overrides(name, lm.model))
    before = state(lm.model)
    a, b = [cases[3].request("en")], [cases[4].request("en")]
    pre_a = score(lm, fmt, a[0].prompt, a[0].target_new, "en")[0]
    pre_b = score(lm, fmt, b[0].prompt, b[0].target_new, "en")[0]
    h1 = m.apply(a)
    mid = state(lm.model)
    if name == "alphaedit":
        kept = {k: v.clone() for k, v in m.preserved.pkkt.items()}
        assert kept, "AlphaEdit must remember the keys of earlier edits"
    h2 = m.apply(b)
    assert score(lm, fmt, a[0].prompt, a[0].target_new, "en")[0] > pre_a
    assert score(lm, fmt, b[0].prompt, b[0].target_new, "en")[0] > pre_b + 0.2
    h2.restore()
    assert all(torch.equal(state(lm.model)[k], mid[k]) for k in mid)
    if name == "alphaedit":
        assert set(m.preserved.pkkt) == set(kept) and all(torch.equal(m.preserved.pkkt[k], kept[k]) for k in kept)
    h1.restore()
    assert all(torch.equal(state(lm.model)[k], before[k]) for k in before)
    if name == "alphaedit":
        assert m.preserved.pkkt == {}


def test_batched_targets_equal_one_at_a_time(wm):
    """One loop over the batch gives each request the δ it gets when optimised alone (right padding, masks)."""
    from xke.methods.weight.targets import TargetOptions, optimise_targets
    lm, fmt, cases = wm
    m = provided_method("rome", lm.model, lm.tokenizer, fmt, overrides=overrides("rome", lm.model))
    reqs = [cases[0].request("en"), cases[5].request("zh")]
    site = m.mlp_out(0)
    opts = TargetOptions(steps=6)
    both = optimise_targets(lm.model, lm.tokenizer, m.rewrite_seqs(reqs), m.kl_seqs(reqs), 2, [site], opts)
    for i, r in enumerate(reqs):
        one = optimise_targets(lm.model, lm.tokenizer, m.rewrite_seqs([r]), m.kl_seqs([r]), 1, [site], opts)
        torch.testing.assert_close(both.deltas[site][i], one.deltas[site][0], atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["rome", "memit", "pmet"])
def test_cached_prefix_pass_equals_full_passes(wm, name):
    """Starting every step from the cached stream at the edit layer and the cached keys/values of the tokens
    before the subject gives the δ that full forward passes give (context prefixes, en and zh, a batch)."""
    from xke.methods.weight.targets import optimise_targets, resume_plan
    lm, fmt, cases = wm
    ov = dict(overrides(name, lm.model), context_prefixes={"default": ["", "Note. "], "zh": ["", "注意。"]})
    m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides=ov)
    reqs = [cases[0].request("en"), cases[5].request("zh"), cases[2].request("en")]
    sites = m.plan().sites if name != "rome" else [m.mlp_out(m.config.layers[0])]
    assert resume_plan(lm.model, sites)[0] == ("before" if name == "pmet" else "after")
    # stop_loss 1.0: requests stop at different steps, so later steps run on a subset of the rows
    for steps, stop_loss in ((6, None), (12, 1.0)):
        res = {}
        for fast in (True, False):
            opts = m.plan().options if name != "rome" else m.config.target_options()
            opts.steps, opts.reuse_prefix_layers = steps, fast
            opts.stop_loss = stop_loss or opts.stop_loss
            res[fast] = optimise_targets(lm.model, lm.tokenizer, m.rewrite_seqs(reqs), m.kl_seqs(reqs), 3, sites, opts)
        for s in sites:
            assert res[False].deltas[s].abs().max() > 0.01
            torch.testing.assert_close(res[True].deltas[s], res[False].deltas[s], atol=2e-4, rtol=1e-3)
            torch.testing.assert_close(res[True].inits[s], res[False].inits[s], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(res[True].nll, res[False].nll, atol=1e-4, rtol=1e-4)
        assert res[True].steps == res[False].steps


@pytest.mark.parametrize("name", ["ft-l", "ft-m"])
def test_fine_tuning_from_cached_stream_equals_full_passes(wm, name):
    lm, fmt, cases = wm
    reqs = [cases[0].request("en"), cases[5].request("zh")]
    out = {}
    for fast in (True, False):
        ov = dict(overrides(name, lm.model), steps=5, reuse_prefix_layers=fast)
        h = provided_method(name, lm.model, lm.tokenizer, fmt, overrides=ov).apply(reqs)
        out[fast] = h.deltas()
        h.restore()
    for k in out[False]:
        assert out[False][k].abs().max() > 0
        torch.testing.assert_close(out[True][k], out[False][k], atol=1e-6, rtol=1e-4)


def test_one_layer_memit_is_rome_up_to_a_scale(wm):
    """With one layer and one prompt, MEMIT's ``R kᵀ(λC + kkᵀ)⁻¹`` is, by Sherman–Morrison, ROME's
    ``(v* − Wk)(C⁻¹k)ᵀ/(kᵀC⁻¹k)`` times ``kᵀC⁻¹k / (λ + kᵀC⁻¹k)``: same direction, the same δ (R = v* − Wk).
    So equal scores of the two on a one-layer edit are expected, not a sign that one of them is not applied."""
    lm, fmt, cases = wm
    req = [cases[1].request("en")]
    d = {}
    for name in ("rome", "memit"):
        ov = dict(overrides(name, lm.model), layers=[0], v_steps=8)
        m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides=ov)
        h = m.apply(req)
        d[name] = next(iter(h.deltas().values())).flatten().double()
        h.restore()
    cos = float(d["rome"] @ d["memit"] / (d["rome"].norm() * d["memit"].norm()))
    ratio = float(d["memit"].norm() / d["rome"].norm())
    assert cos > 0.999 and 0.3 < ratio <= 1.0 + 1e-6, (cos, ratio)


def test_alphaedit_empty_null_space_is_a_clear_error(wm):
    """A threshold below every eigenvalue of C leaves no null space: edits would silently be no-ops."""
    lm, fmt, cases = wm
    ov = dict(overrides("alphaedit", lm.model), nullspace_threshold=1e-9, nullspace_relative=True,
              nullspace_min_fraction=0.0)
    m = provided_method("alphaedit", lm.model, lm.tokenizer, fmt, overrides=ov)
    with pytest.raises(ConfigError, match="null space is empty"):
        m.apply([cases[0].request("en")])


def test_chinese_subject_position(wm):
    from xke.methods.weight.subject import subject_last_token
    lm, fmt, cases = wm
    v = cases[0].view("zh")
    text = fmt.format(v.prompt)
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    i = subject_last_token(lm.tokenizer, text, v.subject, ids)
    assert lm.tokenizer.decode(ids[:i + 1]).endswith(v.subject)
    assert not lm.tokenizer.decode(ids[:i]).endswith(v.subject)


@pytest.mark.parametrize("name", ["rome", "memit", "pmet"])
def test_subject_missing_is_a_clear_error(wm, name):
    lm, fmt, cases = wm
    m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides=overrides(name, lm.model))
    v = cases[0].view("zh")
    bad = EditRequest("x1", "zh", v.prompt, v.target_new, cases[0].view("en").subject)  # en subject, zh prompt
    with pytest.raises(DataError, match="does not occur in the prompt"):
        m.apply([bad])


@pytest.mark.parametrize("name", METHODS)
def test_wrong_layer_is_a_clear_error(wm, name):
    lm, fmt, cases = wm
    n = num_layers(lm.model)
    m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides={"layers": [n + 3]})
    with pytest.raises(ModelError, match=rf"valid layers are 0\.\.{n - 1}"):
        m.apply([cases[0].request("en")])


def test_wrong_module_name_lists_near_names(wm):
    lm, fmt, cases = wm
    m = provided_method("rome", lm.model, lm.tokenizer, fmt,
                     overrides={"layers": [0], "mlp_out_module": "model.layers.{}.mlp.dwn_proj"})
    with pytest.raises(ModelError, match="down_proj"):
        m.apply([cases[0].request("en")])


def test_bad_config_values_rejected():
    from xke.methods.base import build_method_config
    with pytest.raises(ConfigError, match="exactly one layer"):
        build_method_config("rome", family="world", overrides={"layers": [0, 1]})
    with pytest.raises(ConfigError, match="unknown key"):
        build_method_config("memit", family="world", overrides={"layer": [0]})


# --- statistics -------------------------------------------------------------------------------
def test_stats_cache_key_follows_corpus_and_is_reused(tmp_path, tiny_model, monkeypatch):
    from xke.methods.weight import stats
    model, tok = tiny_model.model, tiny_model.tokenizer
    a = tmp_path / "a.txt"
    import uuid
    tag = uuid.uuid4().hex   # fresh content: the disk cache must not already hold these statistics
    a.write_text("\n".join(f"line {i} about rivers and hills {tag}" for i in range(30)), encoding="utf-8")
    b = tmp_path / "b.jsonl"
    b.write_text("\n".join(json.dumps({"text": f"其他 {i} text {tag}"}) for i in range(30)), encoding="utf-8")
    names = ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    wh = stats.model_weight_hash(model)
    ka = stats.stats_key(wh, names[0], stats.corpus_hash(a), 20, 64, "float32")
    kb = stats.stats_key(wh, names[0], stats.corpus_hash(b), 20, 64, "float32")
    assert ka != kb
    assert ka != stats.stats_key(wh, names[0], stats.corpus_hash(a), 21, 64, "float32")
    assert ka != stats.stats_key(wh, names[1], stats.corpus_hash(a), 20, 64, "float32")
    assert ka != stats.stats_key(wh, names[0], stats.corpus_hash(a), 20, 64, "float64")
    calls = []
    real = stats._accumulate
    monkeypatch.setattr(stats, "_accumulate", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    s1 = stats.second_moments(model, tok, names, corpus=a, n_samples=20, max_length=64, progress=False)
    assert calls == [names]                      # both layers in one pass
    d = model.config.intermediate_size
    assert s1[names[0]].shape == (d, d) and torch.allclose(s1[names[0]], s1[names[0]].T, atol=1e-6)
    s2 = stats.second_moments(model, tok, names, corpus=a, n_samples=20, max_length=64, progress=False)
    assert len(calls) == 1 and torch.equal(s1[names[1]], s2[names[1]])   # loaded from the disk cache
    a.write_text(a.read_text(encoding="utf-8") + "\none more line", encoding="utf-8")
    stats.second_moments(model, tok, names[:1], corpus=a, n_samples=20, max_length=64, progress=False)
    assert len(calls) == 2                       # corpus changed -> recomputed
    stats.second_moments(model, tok, names[:1], corpus=b, n_samples=20, max_length=64, progress=False)
    assert len(calls) == 3
    with torch.no_grad():
        p = model.model.layers[0].mlp.down_proj.weight
        old = p.clone()
        p.add_(1e-3)
        try:
            assert stats.model_weight_hash(model) != wh
        finally:
            p.copy_(old)


def test_missing_corpus_says_how_to_give_one(tiny_model):
    lm = tiny_model
    m = provided_method("memit", lm.model, lm.tokenizer, PromptFormatter(lm.tokenizer, mode="plain"),
                     overrides={"layers": [1]})
    req = EditRequest("c", "en", "Where was Ann Lee born?", "Oslo", "Ann Lee")
    with pytest.raises(ConfigError, match="stats_corpus"):
        m.apply([req])


def test_gpt2_conv1d_weights(tmp_path):
    """GPT-2 stores Conv1D weights transposed: updates must land in the right orientation."""
    lm = load_model("tiny-gpt2", device="cpu")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"Sentence {i} about Ann Lee and Oslo." for i in range(40)), encoding="utf-8")
    fmt = PromptFormatter(lm.tokenizer, mode="plain")
    req = EditRequest("c", "en", "Where was Ann Lee born?", "Oslo", "Ann Lee")
    for name in ("rome", "memit", "ft-m"):
        ov = {"layers": [1]} if name == "ft-m" else {"layers": [1], "stats_corpus": str(corpus), "v_steps": 3,
                                                      "mom2_n_samples": 40, "progress": False}
        m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides=ov)
        before = state(lm.model)
        h = m.apply([req])
        assert set(h.deltas()) == {"transformer.h.1.mlp.c_proj.weight"}
        assert h.deltas()["transformer.h.1.mlp.c_proj.weight"].abs().sum() > 0
        h.restore()
        assert all(torch.equal(state(lm.model)[k], before[k]) for k in before)


def test_alphaedit_update_is_eq15():
    """The one-solve form equals R Kᵀ P (K_pK_pᵀP + KKᵀP + αI)⁻¹ computed literally."""
    from xke.methods.weight.update import alphaedit_update, nullspace_projector
    g = torch.Generator().manual_seed(0)
    d, n, m, dout = 12, 3, 4, 5
    C = (lambda A: A @ A.T)(torch.randn(d, 6, generator=g, dtype=torch.float64))   # rank 6: a null space
    P = nullspace_projector(C, 1e-6).double()
    K, Kp, R = (torch.randn(d, n, generator=g, dtype=torch.float64), torch.randn(d, m, generator=g, dtype=torch.float64),
                torch.randn(dout, n, generator=g, dtype=torch.float64))
    alpha = 0.5
    literal = R @ K.T @ P @ torch.linalg.inv(Kp @ Kp.T @ P + K @ K.T @ P + alpha * torch.eye(d, dtype=torch.float64))
    got = alphaedit_update(K, R, P, P @ Kp @ Kp.T, alpha)
    torch.testing.assert_close(got, literal, atol=1e-5, rtol=1e-5)
    assert torch.allclose(got @ (torch.eye(d, dtype=torch.float64) - P), torch.zeros(dout, d, dtype=torch.float64), atol=1e-5)


def test_head_logits_equal_the_head_and_follow_weight_changes():
    """The FT loss's LM head (a column-major copy of W on CPU) gives the head's logits and gradients, and a
    changed head weight (in place, e.g. an edit of tied embeddings) is seen at the next call."""
    from xke.methods.weight.hooks import head_logits

    class LM(torch.nn.Module):
        def __init__(self, bias):
            super().__init__()
            self.head = torch.nn.Linear(16, 50, bias=bias)

        def get_output_embeddings(self):
            return self.head

    torch.manual_seed(0)
    for bias in (False, True):
        lm = LM(bias)
        h = torch.randn(3, 16, requires_grad=True)
        got, want = head_logits(lm)(h), lm.head(h)
        torch.testing.assert_close(got, want)
        g = torch.randn(3, 50)
        torch.testing.assert_close(torch.autograd.grad(got, h, g)[0], torch.autograd.grad(want, h, g)[0])
        with torch.no_grad():
            lm.head.weight.mul_(2.0)
        torch.testing.assert_close(head_logits(lm)(h), lm.head(h))


def test_nullspace_min_fraction_keeps_the_smallest_eigen_directions():
    """The null space: eigenvalues below the threshold (eq. 9-10), and at least ``min_fraction`` of the
    directions, those of the smallest eigenvalues."""
    from xke.methods.weight.update import nullspace_projector

    Q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    C = Q @ torch.diag(torch.tensor([9.0, 5.0, 3.0, 1.0, 0.1, 0.01], dtype=torch.float64)) @ Q.T
    span = lambda k: Q[:, 6 - k:] @ Q[:, 6 - k:].T   # noqa: E731  (the k smallest eigenvalues)
    torch.testing.assert_close(nullspace_projector(C, 2.0).double(), span(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(nullspace_projector(C, 0.05).double(), span(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(nullspace_projector(C, 0.05, min_fraction=0.5).double(), span(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(nullspace_projector(C, 2.0, min_fraction=0.3).double(), span(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(nullspace_projector(C, 0.5, relative=True).double(), span(4), atol=1e-6, rtol=0)
