"""Constrained fine-tuning baselines: FT-L (Meng et al., 2022) and FT-M (Zhang et al., 2024).

Both fine-tune the MLP output projection(s) of the chosen layer(s) with Adam on the edit prompts,
rendered like evaluation renders them and joined with the target by
:func:`~xke.models.prompts.encode_prompt_target`. Sequences are right-padded and every position is
computed from each sequence's own length, so no left-padding index errors.

- **FT-L** (``objective: prompt_last``): the original's objective — at the prompt's last token, the mean
  negative log-probability of the target's tokens — with the L∞ norm constraint
  ``‖W − W₀‖∞ ≤ norm_constraint`` applied after every step.
- **FT-M** (``objective: target``): teacher-forced cross-entropy on the target tokens only (the prompt
  is masked out of the loss); no norm constraint by default.

Each step, as EasyEdit's ``execute_ft``: a mini-batch whose loss is already below ``stop_loss`` takes no
Adam step, and the loop ends once the mean loss over all requests is below it
(``tests/test_weight_reference.py`` holds the deltas to that loop, ``benchmarks/easyedit_ft.py``).

Where xke deliberately differs from EasyEdit's FT: the target is joined to the prompt exactly as
evaluation joins it (no space hard-coded before every target, which is wrong for zh/ja/th), and the
BOS token is never a target token (EasyEdit tokenizes the target on its own, BOS included, and trains
on it). Half-precision weights are optimised through float32 master copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from contextlib import nullcontext
from typing import Literal, Sequence

import torch

from ..data.schema import EditRequest
from ..errors import DataError
from ..models.architectures import num_layers
from ..models.prompts import encode_prompt_target
from .base import EditHandle, EditMethod, MethodConfig, WeightSnapshot, register_method
from .weight.common import module_for_layer
from .weight.hooks import frozen, head_logits, last_mlp_only_at
from .weight.targets import Seq, pad_batch, pad_id_of


@dataclass
class FTConfig(MethodConfig):
    layers: list[int] = field(default_factory=lambda: [0])
    mlp_out_module: str | None = None
    objective: Literal["prompt_last", "target"] = "prompt_last"
    steps: int = 25
    lr: float = 5e-4
    weight_decay: float = 0.0
    #: L∞ bound on the weight change (None: unconstrained)
    norm_constraint: float | None = 5e-4
    #: requests per optimisation mini-batch (0: the whole batch at once)
    batch_size: int = 0
    stop_loss: float = 1e-2
    #: run the layers before the edited one once and start every step from the cached stream
    reuse_prefix_layers: bool = True

    def validate(self) -> None:
        if not self.layers or any(l < 0 for l in self.layers):
            raise ValueError(f"layers must be a non-empty list of indices >= 0, got {self.layers}")
        if self.steps < 1 or self.lr <= 0:
            raise ValueError("steps must be >= 1 and lr > 0")
        if self.norm_constraint is not None and self.norm_constraint <= 0:
            raise ValueError("norm_constraint must be > 0 (or null for none)")


@dataclass
class FTMConfig(FTConfig):
    objective: Literal["prompt_last", "target"] = "target"
    norm_constraint: float | None = None


def _write_back(weights, masters, opt_params, bounds) -> None:
    """After an Adam step: clamp the optimised tensors into ``bounds`` (FT-L's norm constraint) and copy
    float32 master copies back into their half-precision weights."""
    with torch.no_grad():
        if bounds is not None:
            for p, (lo, hi) in zip(opt_params, bounds):
                torch.clamp(p, lo, hi, out=p)
        for w, m in zip(weights, masters):
            if m is not None:
                w.copy_(m)


class _FineTune(EditMethod):
    kind = "weight"
    config: FTConfig

    def _seqs(self, requests: Sequence[EditRequest]) -> list[Seq]:
        out = []
        for r, req in enumerate(requests):
            text = self.formatter.format(req.prompt, req.style)
            p, t = encode_prompt_target(self.tokenizer, text, req.target_new, req.lang)
            if not t:
                raise DataError(f"case {req.case_id!r} ({req.lang}): empty target_new")
            ids = p if self.config.objective == "prompt_last" else p + t[:-1]
            out.append(Seq(r, ids, len(p) - 1, len(p), list(t)))
        return out

    def apply(self, requests: Sequence[EditRequest]) -> EditHandle:
        c = self.config
        mods = [module_for_layer(self.model, self.name, "mlp_out", c.mlp_out_module, l) for l in c.layers]
        names = [f"{m}.weight" for m in mods]
        handle = WeightSnapshot(self.model, names)
        requests = list(requests)
        if not requests:
            return handle
        seqs = self._seqs(requests)
        params = dict(self.model.named_parameters())
        weights = [params[n] for n in names]
        dev = weights[0].device
        pad = pad_id_of(self.tokenizer)
        base, head = self.model.base_model, head_logits(self.model)
        bs = c.batch_size or len(seqs)
        ids_all, mask_all = pad_batch(seqs, pad, dev)
        start = self._resume(mods, ids_all, mask_all)
        # the last layer's MLP only at the tokens the loss reads (exact; off with reuse_prefix_layers)
        sparse_last = c.reuse_prefix_layers and max(c.layers) < num_layers(self.model) - 1
        # half-precision weights: Adam runs on float32 master copies written back after each step (Adam's
        # moments and eps underflow in fp16, which blows the weights up)
        masters = [w.detach().float().clone() if w.dtype in (torch.float16, torch.bfloat16) else None for w in weights]
        opt_params = [w if m is None else m for w, m in zip(weights, masters)]
        with frozen(self.model), torch.enable_grad():
            for w in weights:
                w.requires_grad_(True)
            opt = torch.optim.Adam(opt_params, lr=c.lr, weight_decay=c.weight_decay,
                                   fused=all(p.is_floating_point() for p in opt_params))   # one kernel per step
            bounds = None if c.norm_constraint is None else [
                (handle.originals[n].to(p.dtype) - c.norm_constraint,
                 handle.originals[n].to(p.dtype) + c.norm_constraint) for n, p in zip(names, opt_params)]
            batches = [(b0, seqs[b0:b0 + bs], self._read_positions(seqs[b0:b0 + bs], dev))
                       for b0 in range(0, len(seqs), bs)]    # fixed across steps: built once
            for _ in range(c.steps):
                total = 0.0
                for b0, part, (rows, pos, lab, owner, counts) in batches:
                    T = max(len(s.ids) for s in part)
                    ids, mask = ids_all[b0:b0 + bs, :T], mask_all[b0:b0 + bs, :T]
                    with (last_mlp_only_at(self.model, rows, pos) if sparse_last else nullcontext()):
                        hidden = start(b0, b0 + len(part), T, lambda: base(input_ids=ids, attention_mask=mask,
                                                                            use_cache=False)[0])
                    loss = self._loss(part, hidden[rows, pos], head, lab, owner, counts)
                    value = float(loss.detach())
                    total += value * len(part) / len(seqs)
                    if value < c.stop_loss:     # as EasyEdit: a mini-batch already below it takes no step
                        continue
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    for w, m in zip(weights, masters):
                        if m is not None:
                            m.grad, w.grad = w.grad.float(), None
                    opt.step()
                    _write_back(weights, masters, opt_params, bounds)
                if total < c.stop_loss:     # the step's mean loss over all requests
                    break
            opt.zero_grad(set_to_none=True)
        return handle

    def _resume(self, mods: list[str], ids: torch.Tensor, mask: torch.Tensor):
        """A function ``forward(r0, r1, T, full)`` giving the final hidden states of rows ``r0:r1``
        (``full()`` runs the model's own forward).

        With one edited layer ``L`` (the usual case) nothing before its MLP output projection changes
        during fine-tuning, so one pass caches ``h_mid = out_L − W₀ k`` (the layer's output minus the
        projection's output) and the keys ``k``; each step then computes ``out_L = h_mid + W k`` with
        the current ``W`` and runs only the layers after ``L``: called directly with the arguments the
        model's forward gave them (:class:`~.weight.hooks.LayerReplay`) when one mini-batch holds every
        sequence, else through the model's forward (:func:`~.weight.hooks.resume_at`). Otherwise
        (several layers, a custom module name) it is the plain full forward.
        """
        from .weight.hooks import LayerReplay, capture, layer_outputs_are_tensors, resume_at
        from .weight.targets import site_layer
        from ..models.architectures import arch_spec, get_module

        L, is_mlp_out = site_layer(self.model, mods[0]) if len(mods) == 1 else (-1, False)
        if not self.config.reuse_prefix_layers or not is_mlp_out or not layer_outputs_are_tensors(self.model, ids, mask):
            return lambda r0, r1, T, full: full()
        layer = arch_spec(self.model).layer.format(L)
        replay = LayerReplay(self.model, L + 1)
        with torch.no_grad(), capture(self.model, [layer], outputs=True) as c_out, \
                capture(self.model, [mods[0]], inputs=True, outputs=True) as c_mlp, replay.record():
            self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
        h_mid = c_out[layer].output - c_mlp[mods[0]].output
        keys = c_mlp[mods[0]].input
        proj = get_module(self.model, mods[0])
        n, width = ids.shape

        def forward(r0, r1, T, full):
            out_L = lambda: h_mid[r0:r1, :T] + proj(keys[r0:r1, :T])  # noqa: E731
            if (r0, r1, T) == (0, n, width):
                return replay(out_L())
            with resume_at(self.model, L + 1, out_L):
                return full()
        return forward

    def _read_positions(self, part: list[Seq], dev):
        """``rows, positions, labels, owner, counts`` of the tokens the loss reads: FT-L — each prompt's
        last token (``labels`` = all target ids, ``owner`` their sequence); FT-M — the positions that
        predict each target token. ``counts``: labels per sequence (float), fixed across steps."""
        rows, pos, lab, owner = [], [], [], []
        for i, s in enumerate(part):
            if self.config.objective == "prompt_last":
                rows.append(i); pos.append(s.n_prompt - 1)
                lab += s.target; owner += [i] * len(s.target)
            else:
                for j, t in enumerate(s.target):
                    rows.append(i); pos.append(s.n_prompt - 1 + j); lab.append(t); owner.append(i)
        as_t = lambda x: torch.tensor(x, device=dev)  # noqa: E731
        owner_t = as_t(owner)
        return as_t(rows), as_t(pos), as_t(lab), owner_t, torch.bincount(owner_t, minlength=len(part)).float()

    def _loss(self, part: list[Seq], hidden_read, head, lab, owner, counts) -> torch.Tensor:
        """Mean over sequences of the target's mean NLL: FT-L from each prompt's last token, FT-M teacher-forced."""
        logp = torch.log_softmax(head(hidden_read).float(), -1)
        # FT-L: one read token per sequence, whose row scores all its target ids; FT-M: one row per target id
        row = owner if self.config.objective == "prompt_last" else torch.arange(len(lab), device=lab.device)
        tok = -logp[row, lab]
        per = torch.zeros(len(part), device=lab.device).index_add(0, owner, tok)
        per = per / counts
        return per.mean()


@register_method
class FTL(_FineTune):
    name = "ft-l"
    config_class = FTConfig


@register_method
class FTM(_FineTune):
    name = "ft-m"
    config_class = FTMConfig
