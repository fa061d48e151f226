"""ROME/MEMIT/AlphaEdit/PMET compute what the reference code computes (issue 12).

The reference lines each test pins:
- δ bound: ``max_norm = clamp_norm_factor * target_init.norm()`` where ``target_init`` is the vector δ is
  added to: layer L's output (the residual) in memit ``compute_z.py``, the MLP output in rome
  ``compute_v.py`` and (per site) EasyEdit ``pmet/compute_zs.py``;
- decay: ``v_weight_decay * (torch.norm(delta) / torch.norm(target_init) ** 2)`` (all three);
- keys: memit ``compute_ks.py`` averages within template groups (``[["{}"], [prefixed...]]``), then
  across groups; rome ``compute_u.py`` averages over all templates.
"""

from __future__ import annotations

import json

import pytest
import torch

import xke
from xke.data.schema import EditCase, LangView
from xke.errors import ModelError
from xke.methods.weight.hooks import capture
from xke.methods.weight.targets import (Seq, TargetOptions, clamp_delta_, delta_decay, optimise_targets,
                                        request_keys)
from xke.models.prompts import PromptFormatter, encode_prompt_target
from xke.world.provider import provided_method


# --- the formulas on hand-made tensors ----------------------------------------------------------

def test_decay_term_is_norm_over_squared_norm():
    delta = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    ref = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    # ‖δ‖ / ‖h‖²: 5 / 4; a zero δ costs nothing
    torch.testing.assert_close(delta_decay(delta, ref), torch.tensor([1.25, 0.0]))
    torch.testing.assert_close(delta_decay(delta, ref, "squared"), torch.tensor([6.25, 0.0]))
    with pytest.raises(ValueError, match="decay_form"):
        delta_decay(delta, ref, "cubic")


def test_decay_gradient_at_zero_is_finite():
    d = torch.zeros(1, 3, requires_grad=True)
    delta_decay(d, torch.ones(1, 3)).sum().backward()
    assert torch.isfinite(d.grad).all()


def test_clamp_projects_onto_the_ball_of_the_reference_norm():
    delta = torch.tensor([[6.0, 8.0], [0.3, 0.4]])           # norms 10 and 0.5
    ref = torch.tensor([[0.0, 1.0], [0.0, 1.0]])             # norm 1
    clamp_delta_(delta, ref, 4.0)
    torch.testing.assert_close(delta, torch.tensor([[2.4, 3.2], [0.3, 0.4]]))   # first row scaled to norm 4


def test_grouped_key_mean_follows_compute_ks():
    # request 0: bare prompt key [1, 0]; two prefixed prompts [0, 2], [0, 4]; request 1: bare prompt only
    seqs = [Seq(0, [], 0, 0, prefix=0), Seq(0, [], 0, 0, prefix=1), Seq(0, [], 0, 0, prefix=2),
            Seq(1, [], 0, 0, prefix=0)]
    vals = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 4.0], [5.0, 5.0]])
    # templates: mean([1, 0], mean([0, 2], [0, 4]) = [0, 3]) = [0.5, 1.5]
    torch.testing.assert_close(request_keys(vals, seqs, 2, "templates"), torch.tensor([[0.5, 1.5], [5.0, 5.0]]))
    # flat (ROME's compute_u): mean of the three rows
    torch.testing.assert_close(request_keys(vals, seqs, 2, "flat"), torch.tensor([[1 / 3, 2.0], [5.0, 5.0]]))


# --- the same formulas inside the optimisation, on the tiny world ---------------------------------

@pytest.fixture(scope="module")
def wm(world):
    lm = xke.load("world:" + str(world), device="cpu")
    cases = [EditCase(d["case_id"], {k: LangView(**v) for k, v in d["views"].items()})
             for d in map(json.loads, open(world / "cases.jsonl", encoding="utf-8"))]
    return lm, PromptFormatter(lm.tokenizer), cases


def _at_subject(lm, seq, module):
    """``module``'s output at the subject's last token of ``seq`` (an independent forward pass)."""
    with torch.no_grad(), capture(lm.model, [module], outputs=True) as cap:
        lm.model(input_ids=torch.tensor([seq.ids]))
    return cap[module].output[0, seq.subj].float()


@pytest.mark.parametrize("name,bound", [("memit", "layer"), ("rome", "mlp")])
def test_delta_is_bounded_by_the_vector_it_is_added_to(wm, name, bound):
    """With a small clamp the bound binds: MEMIT's ‖δ‖ ends at clamp·‖h^L‖ (layer output), ROME's at
    clamp·‖m^L‖ (MLP output) — memit compute_z.py / rome compute_v.py."""
    lm, fmt, cases = wm
    m = provided_method(name, lm.model, lm.tokenizer, fmt,
                     overrides={"layers": [0], "clamp_norm_factor": 0.05, "v_steps": 15, "progress": False,
                                "mom2_n_samples": 200, **({"delta_bound": "residual"} if name == "memit" else {})})
    req = cases[1].request("en")
    rw, kl = m.rewrite_seqs([req]), m.kl_seqs([req])
    site = m.mlp_out(0)
    opts = m.plan().options if name == "memit" else m.config.target_options()
    res = optimise_targets(lm.model, lm.tokenizer, rw, kl, 1, [site], opts)
    h = _at_subject(lm, rw[0], m.layer_module(0))
    mlp = _at_subject(lm, rw[0], site)
    ref = h if bound == "layer" else mlp
    assert abs(float(h.norm() - mlp.norm())) > 0.01 * float(mlp.norm()), "norms too close to tell the bounds apart"
    torch.testing.assert_close(res.deltas[site][0].norm(), 0.05 * ref.norm(), rtol=1e-4, atol=1e-5)


def test_old_mlp_output_bound_is_an_option(wm):
    lm, fmt, cases = wm
    m = provided_method("memit", lm.model, lm.tokenizer, fmt,
                     overrides={"layers": [0], "delta_bound": "mlp_output", "progress": False})
    assert m.plan().options.norm_modules == {}
    m2 = provided_method("memit", lm.model, lm.tokenizer, fmt,
                         overrides={"layers": [0], "delta_bound": "residual", "progress": False})
    assert m2.plan().options.norm_modules == {m2.mlp_out(0): m2.layer_module(0)}
    # the reference's bound is the default, and no real-model preset changes it (only the toy worlds' does)
    from pathlib import Path

    import yaml

    from xke.methods.memit import MEMITConfig
    assert MEMITConfig().delta_bound == "residual"
    presets = Path(__import__("xke").__file__).parent / "configs"
    for f in list((presets / "memit").glob("*.yaml")) + list((presets / "alphaedit").glob("*.yaml")):
        if f.stem != "world":
            assert (yaml.safe_load(f.read_text()) or {}).get("delta_bound", "residual") == "residual", f


def test_last_layer_as_target_layer_is_refused(wm):
    lm, fmt, cases = wm
    from xke.models.architectures import num_layers
    n = num_layers(lm.model)
    for name in ("memit", "rome"):
        m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides={"layers": [n - 1], "progress": False})
        with pytest.raises(ModelError, match="last decoder layer"):
            m.apply([cases[0].request("en")])


def _p_target(lm, fmt, req):
    p, t = encode_prompt_target(lm.tokenizer, fmt.format(req.prompt), req.target_new, req.lang)
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(torch.tensor([p + t])).logits[0].float(), -1)
    return float(torch.exp(sum(lp[len(p) - 1 + j, x] for j, x in enumerate(t))))


@pytest.mark.parametrize("name", ["rome", "memit", "alphaedit", "pmet"])
def test_one_edit_with_the_default_preset_takes(wm, name):
    """End to end, the shipped toy-world preset: one English edit makes the new answer likely."""
    lm, fmt, cases = wm
    m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides={"progress": False})
    moves = []
    for c in cases[:4]:
        req = c.request("en")
        before = _p_target(lm, fmt, req)
        h = m.apply([req])
        moves.append((before, _p_target(lm, fmt, req)))
        h.restore()
    assert all(b < a for b, a in moves), f"{name}: an edit lowered P(target): {moves}"
    assert sum(a for _, a in moves) / len(moves) > 0.5, f"{name}: mean P(target) after one edit too low: {moves}"


def test_fp16_fine_tuning_stays_bounded(world):
    """FT-M on fp16 weights: Adam on float32 master copies, so the change stays as small as in fp32."""
    lm32 = xke.load("world:" + str(world), device="cpu")
    lm16 = xke.load("world:" + str(world), device="cpu", dtype="float16")
    cases = [EditCase(d["case_id"], {k: LangView(**v) for k, v in d["views"].items()})
             for d in map(json.loads, open(world / "cases.jsonl", encoding="utf-8"))]
    req = cases[0].request("en")
    changes = {}
    for tag, lm in (("fp32", lm32), ("fp16", lm16)):
        m = provided_method("ft-m", lm.model, lm.tokenizer, PromptFormatter(lm.tokenizer), overrides={"steps": 10})
        h = m.apply([req])
        changes[tag] = max(float(d.float().abs().max()) for d in h.deltas().values())
        h.restore()
    assert changes["fp16"] < 3 * changes["fp32"] + 1e-3, changes


def test_layers_by_depth_picks_the_layers_for_this_model(wm):
    """One preset for models of several depths: ``layers_by_depth`` replaces ``layers`` for its depth only."""
    lm, fmt, _ = wm
    from xke.errors import ConfigError
    from xke.models.architectures import num_layers
    n = num_layers(lm.model)
    m = provided_method("memit", lm.model, lm.tokenizer, fmt,
                     overrides={"layers": [0, 1], "layers_by_depth": {n: [0], n + 2: [0, 1, 2]}})
    assert m.config.layers == [0]
    m = provided_method("memit", lm.model, lm.tokenizer, fmt, overrides={"layers": [0], "layers_by_depth": {n + 2: [1]}})
    assert m.config.layers == [0]
    with pytest.raises(ConfigError, match="increasing"):
        provided_method("memit", lm.model, lm.tokenizer, fmt, overrides={"layers_by_depth": {n: [1, 0]}})


# --- FT-L / FT-M against EasyEdit's loop ----------------------------------------------------------

def _easyedit_execute_ft():
    """``benchmarks/easyedit_ft.py``: EasyEdit's ``execute_ft`` step for step (its control flow and tensor
    operations, on xke's target ids)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "easyedit_ft.py"
    spec = importlib.util.spec_from_file_location("easyedit_ft", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.execute_ft


@pytest.mark.parametrize("name,objective,steps", [("ft-l", "prompt_last", 8), ("ft-m", "target_new", 25)])
def test_fine_tuning_deltas_equal_easyedits_loop(wm, name, objective, steps):
    """One edit: xke's FT-L / FT-M change the weight as EasyEdit's loop does (same objective, L∞ clamp,
    Adam, and stopping rule: no step once the loss is below ``stop_loss``). FT-M on the trained toy model
    stops early, so the stopping rule is exercised (the reference's Adam steps are counted)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    lm, fmt, cases = wm
    execute_ft = _easyedit_execute_ft()
    m = provided_method(name, lm.model, lm.tokenizer, fmt, overrides={"layers": [0], "steps": steps})
    c = m.config
    taken = []
    for case in cases[:3]:
        req = case.request("en")
        count = []
        hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: count.append(1))
        try:
            ref = execute_ft(lm.model, lm.tokenizer, fmt.format(req.prompt, req.style), req.target_new, req.lang,
                             layer=0, objective=objective, steps=steps, lr=c.lr, weight_decay=c.weight_decay,
                             norm=c.norm_constraint, stop_loss=c.stop_loss)
        finally:
            hook.remove()
        taken.append(len(count))
        h = m.apply([req])
        ours = h.deltas()
        h.restore()
        assert ours.keys() == ref.keys()
        for k in ref:
            scale = float(ref[k].abs().max())
            assert scale > 0, f"{name}: the reference loop changed nothing"
            assert torch.allclose(ours[k], ref[k], atol=1e-3 * scale, rtol=0), \
                f"{name} {case.case_id}: max |Δ_xke − Δ_EasyEdit| {float((ours[k] - ref[k]).abs().max()):.3g} of {scale:.3g}"
    if name == "ft-m":
        assert any(n < steps for n in taken), f"FT-M never stopped early ({taken}): the stopping rule is untested"
