"""Edit prompts, keys, and the batched optimisation of target vectors.

For every request the method builds *rewrite sequences*: the rendered edit prompt, optionally behind
a few short context prefixes (placed inside the user turn for chat models), joined with the target
by :func:`~xke.models.prompts.encode_prompt_target` (the same tokens evaluation uses) and cut before
the last target token; and one *KL sequence* (``"{subject} is a"``-style, per language) whose
next-token distribution at the subject must not drift (Meng et al. 2022, eq. 4).

:func:`optimise_targets` then finds, for all requests of a batch in ONE loop, vectors ``δ_i`` added
to the output of one or more modules ("sites": the MLP output for ROME/MEMIT, attention and MLP
outputs for PMET) at the subject's last token, minimising

``L_i = f_nll · NLL(target_i | rewrite_i) + f_kl · KL(p_new ‖ p_init on KL_i) + wd · Σ_site ‖δ_i‖ / ‖h_i‖²``

with Adam, ``‖δ_i‖ ≤ clamp · ‖h_i‖`` after each step, and early stopping per request (a request whose
loss is below ``stop_loss`` is frozen and its rows leave the batch). ``h_i`` is the vector ``δ_i`` is
added to, on the bare prompt: the site's own output for ROME (rome ``compute_v.py``) and PMET
(EasyEdit ``pmet/compute_zs.py``), the residual stream after layer ``L`` for MEMIT and AlphaEdit
(memit ``compute_z.py``: ``z = h^L + δ``) — :attr:`TargetOptions.norm_modules`. The decay term is the
reference code's ``wd·‖δ‖/‖h‖²`` (:func:`delta_decay`; ``decay_form: squared`` gives ``wd·‖δ‖²/‖h‖²``). The requests' losses are
independent, so the sum gives each ``δ_i`` exactly its own
gradient: this is per-request optimisation (as in EasyEdit) done with one forward/backward pass per
step for the whole batch.

Each step computes only what ``δ`` can change: ``δ`` enters at layer ``L`` at the subject's last token,
so the layers before ``L`` and the tokens before the subject are run once, by one pass of the unedited
model that also yields the initial site outputs ``h_i``, the keys at the subject (ROME's ``k*``) and
the KL reference distributions. Every step then runs the layers after ``L`` on the tokens from the
subject on, attending to the cached keys/values of the earlier tokens (:func:`subject_aligned`,
:func:`resume_plan`), and the last layer's MLP only at the tokens whose outputs are read — the target
tokens and the KL rows' subject (:func:`~.hooks.last_mlp_only_at`). ``reuse_prefix_layers: false``
gives the plain full passes (same δ; tested). The objective is :func:`edit_loss`, a pure function of the
logits at the read positions; the passes that produce them are :class:`StepRunner`'s.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ...data.languages import normalize_lang
from ...data.schema import EditRequest
from ...models.prompts import encode_prompt, encode_prompt_target
from ...models.architectures import arch_spec, num_layers
from ...models.loading import cache_argument
from .hooks import (add_at_positions, capture, frozen, hooked, last_mlp_only_at, layer_outputs_are_tensors,
                    resume_at, stop_when_seen)
from .subject import subject_last_token

DEFAULT_KL = {"default": "{} is a", "zh": "{}是", "ja": "{}は", "de": "{} ist ein", "fr": "{} est un"}


@dataclass
class Seq:
    """One tokenized sequence fed to the model for request ``req``."""

    req: int
    ids: list[int]
    subj: int                     # index of the subject's last token
    n_prompt: int                 # number of prompt tokens (target tokens start here)
    target: list[int] = field(default_factory=list)
    prefix: int = 0


def prefixes_for(prefixes: dict, lang: str) -> list[str]:
    lst = prefixes.get(lang) or prefixes.get("default") or [""]
    return list(lst)


def build_rewrite_seqs(tokenizer, formatter, requests: Sequence[EditRequest], prefixes: dict,
                       with_target: bool = True) -> list[Seq]:
    """Rewrite sequences (prompt behind each context prefix, plus target minus its last token)."""
    out = []
    for r, req in enumerate(requests):
        for j, pre in enumerate(prefixes_for(prefixes, req.lang)):
            text = formatter.format(pre + req.prompt, req.style)
            p_ids, t_ids = encode_prompt_target(tokenizer, text, req.target_new, req.lang)
            if not t_ids:
                from ...errors import DataError
                raise DataError(f"case {req.case_id!r} ({req.lang}): empty target_new")
            subj = subject_last_token(tokenizer, text, req.subject, p_ids, case_id=req.case_id, lang=req.lang)
            ids = p_ids + (t_ids[:-1] if with_target else [])
            out.append(Seq(r, ids, subj, len(p_ids), list(t_ids) if with_target else [], j))
    return out


def build_kl_seqs(tokenizer, requests: Sequence[EditRequest], kl_prompts: dict) -> list[Seq]:
    out = []
    for r, req in enumerate(requests):
        lang = normalize_lang(req.lang)
        tmpl = kl_prompts.get(lang) or kl_prompts.get("default") or "{} is a"
        text = tmpl.format(req.subject)
        ids = encode_prompt(tokenizer, text)
        subj = subject_last_token(tokenizer, text, req.subject, ids, case_id=req.case_id, lang=req.lang)
        out.append(Seq(r, ids, subj, len(ids), [], -1))
    return out


def pad_batch(seqs: Sequence[Seq], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (positions of real tokens are unchanged by right padding)."""
    L = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s.ids)] = torch.tensor(s.ids)
        mask[i, :len(s.ids)] = 1
    return ids.to(device), mask.to(device)


def pad_id_of(tokenizer) -> int:
    for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if t is not None:
            return int(t)
    return 0


def gather_at_subject(model, tokenizer, seqs: Sequence[Seq], *, inputs: Sequence[str] = (),
                      outputs: Sequence[str] = (), chunk: int = 256) -> dict[tuple[str, str], torch.Tensor]:
    """Inputs/outputs of modules at each sequence's subject token: ``{(name, "in"|"out"): [n_seq, d] float32}``."""
    dev = next(model.parameters()).device
    pad = pad_id_of(tokenizer)
    res: dict[tuple[str, str], list[torch.Tensor]] = {}
    names = list(dict.fromkeys(list(inputs) + list(outputs)))
    for s0 in range(0, len(seqs), chunk):
        part = seqs[s0:s0 + chunk]
        ids, mask = pad_batch(part, pad, dev)
        rows = torch.arange(len(part), device=dev)
        pos = torch.tensor([s.subj for s in part], device=dev)
        sel = lambda x: x[rows, pos]  # noqa: E731
        with torch.no_grad(), capture(model, names, inputs=bool(inputs), outputs=bool(outputs), select=sel) as cap, \
                stop_when_seen(model, names) as stopped:
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except stopped:
                pass   # everything needed is captured: the later layers and the LM head are not run
        for n in inputs:
            res.setdefault((n, "in"), []).append(cap[n].input.float())
        for n in outputs:
            res.setdefault((n, "out"), []).append(cap[n].output.float())
    return {k: torch.cat(v) for k, v in res.items()}


def mean_per_request(values: torch.Tensor, seqs: Sequence[Seq], n_req: int) -> torch.Tensor:
    """Average rows of ``values`` belonging to the same request: ``[n_req, d]``."""
    idx = torch.tensor([s.req for s in seqs], device=values.device)
    out = torch.zeros((n_req, values.shape[1]), dtype=values.dtype, device=values.device)
    out.index_add_(0, idx, values)
    cnt = torch.bincount(idx, minlength=n_req).clamp(min=1).to(values.dtype)
    return out / cnt[:, None]


def request_keys(values: torch.Tensor, seqs: Sequence[Seq], n_req: int, grouping: str = "templates") -> torch.Tensor:
    """Key of each request from its rows' keys ``values`` ``[n_rows, d]``: ``[n_req, d]``.

    - ``"templates"`` (MEMIT/AlphaEdit/PMET, memit ``compute_ks.py``): the mean within each template group
      — the bare prompt (first context prefix) and the prefixed prompts — then the mean across groups;
    - ``"flat"`` (ROME ``compute_u.py``, eq. 3): the mean over all rows.
    """
    if grouping == "flat":
        return mean_per_request(values, seqs, n_req)
    if grouping != "templates":
        raise ValueError(f"key grouping must be 'templates' or 'flat', got {grouping!r}")
    group = torch.tensor([2 * s.req + (s.prefix > 0) for s in seqs], device=values.device)
    sums = torch.zeros((2 * n_req, values.shape[1]), dtype=values.dtype, device=values.device).index_add_(0, group, values)
    cnt = torch.bincount(group, minlength=2 * n_req).to(values.dtype)
    means = (sums / cnt.clamp(min=1)[:, None]).view(n_req, 2, -1)
    present = (cnt.view(n_req, 2) > 0).to(values.dtype)
    return (means * present[..., None]).sum(1) / present.sum(1).clamp(min=1)[:, None]


def delta_decay(delta: torch.Tensor, ref: torch.Tensor, form: str = "norm") -> torch.Tensor:
    """Per-row decay term without its weight: ``‖δ‖/‖h‖²`` (``"norm"``: rome ``compute_v.py``, memit
    ``compute_z.py``, EasyEdit) or ``‖δ‖²/‖h‖²`` (``"squared"``); ``delta``, ``ref`` ``[n, d]`` → ``[n]``."""
    den = (ref ** 2).sum(1).clamp(min=1e-12)
    if form == "norm":
        return torch.linalg.vector_norm(delta, dim=1) / den
    if form == "squared":
        return (delta ** 2).sum(1) / den
    raise ValueError(f"decay_form must be 'norm' or 'squared', got {form!r}")


def clamp_delta_(delta: torch.Tensor, ref: torch.Tensor, factor: float) -> None:
    """Project each row of ``delta`` in place into the ball ``‖δ‖ ≤ factor·‖h‖`` (``h`` = row of ``ref``)."""
    max_norm = factor * ref.norm(dim=1)
    norm = delta.norm(dim=1)
    scale = torch.where(norm > max_norm, max_norm / norm.clamp(min=1e-12), torch.ones_like(norm))
    delta.mul_(scale[:, None])


@dataclass
class TargetOptions:
    steps: int = 25
    lr: float = 0.5
    weight_decay: float = 1e-3
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    nll_factor: float = 1.0
    stop_loss: float = 5e-2
    #: PMET: lower the NLL factor to 0.1× once every target token is the argmax; stop when KL is also small
    adaptive_nll: bool = False
    #: requests per optimisation loop (memory bound); 0 = all requests of the batch in one loop
    max_requests_per_loop: int = 0
    #: run the layers before the edit site once and start every step from the cached residual stream
    reuse_prefix_layers: bool = True
    #: with max_requests_per_loop 0: split a batch so that one loop's cached stream/keys fit this budget
    cache_budget_mb: float = 1024.0
    #: site -> module whose output (at the subject, bare prompt) is the vector δ is added to: its norm bounds
    #: δ (clamp) and scales the decay term. Sites not listed use their own output (ROME, PMET).
    norm_modules: dict[str, str] = field(default_factory=dict)
    #: "norm": wd·‖δ‖/‖h‖² (rome compute_v.py, memit compute_z.py, EasyEdit); "squared": wd·‖δ‖²/‖h‖²
    decay_form: str = "norm"


@dataclass
class TargetResult:
    deltas: dict[str, torch.Tensor]   # site -> [n_req, d]
    inits: dict[str, torch.Tensor]    # site -> [n_req, d]: the site's output at the subject (first prefix)
    nll: torch.Tensor                 # [n_req] final NLL per request
    steps: int
    #: site -> [n_rewrite_rows, d_in]: the site's input at the subject in every rewrite row (unedited model)
    keys: dict[str, torch.Tensor] = field(default_factory=dict)


@contextmanager
def _both(a, b):
    with a, b:
        yield


def _output_module(model):
    return model.get_output_embeddings()


def _base_model(model):
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise RuntimeError("model has no base_model")
    return base


def _auto_chunk(model, rewrite, kl, n_req: int, budget_mb: float) -> int:
    """Requests per loop so that the cached stream and keys/values of one loop stay within ``budget_mb``
    (requests are independent, so splitting a batch does not change any δ)."""
    if n_req <= 1 or budget_mb <= 0:
        return max(1, n_req)
    cfg = model.config
    d = cfg.hidden_size
    heads = getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", 1)
    head_dim = getattr(cfg, "head_dim", None) or d // max(1, getattr(cfg, "num_attention_heads", 1))
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 1)
    width = max(len(s.ids) for s in list(rewrite) + list(kl))
    rows_per_req = (len(rewrite) + len(kl)) / n_req
    dtype_bytes = next(model.parameters()).element_size()
    # per row: stream (d) + keys/values of every layer (2 · heads · head_dim) for each column, x2 for the
    # first pass's full cache
    per_req = rows_per_req * width * (d + 2 * 2 * n_layers * heads * head_dim) * dtype_bytes
    return int(max(1, min(n_req, budget_mb * 2 ** 20 // max(1.0, per_req))))


def optimise_targets(model, tokenizer, rewrite: Sequence[Seq], kl: Sequence[Seq], n_req: int, sites: list[str],
                     opts: TargetOptions) -> TargetResult:
    """Optimise δ for every request at every site, all requests of a chunk in one loop (see module doc)."""
    chunk = opts.max_requests_per_loop or _auto_chunk(model, rewrite, kl, n_req, opts.cache_budget_mb)
    parts = []
    for r0 in range(0, n_req, chunk):
        r1 = min(n_req, r0 + chunk)
        rw = [Seq(s.req - r0, s.ids, s.subj, s.n_prompt, s.target, s.prefix) for s in rewrite if r0 <= s.req < r1]
        kk = [Seq(s.req - r0, s.ids, s.subj, s.n_prompt, s.target, s.prefix) for s in kl if r0 <= s.req < r1]
        parts.append(_optimise(model, tokenizer, rw, kk, r1 - r0, sites, opts))
    return TargetResult({s: torch.cat([p.deltas[s] for p in parts]) for s in sites},
                        {s: torch.cat([p.inits[s] for p in parts]) for s in sites},
                        torch.cat([p.nll for p in parts]), max(p.steps for p in parts),
                        {s: torch.cat([p.keys[s] for p in parts]) for s in sites})


def site_layer(model, name: str) -> tuple[int, bool]:
    """``(layer index, whether ``name`` is that layer's MLP output projection)`` for a module name;
    ``(-1, False)`` when the name is not inside a decoder layer of the architecture table."""
    spec = arch_spec(model)
    for i in range(num_layers(model)):
        if name == spec.mlp_out.format(i):
            return i, True
        if name.startswith(spec.layer.format(i) + "."):
            return i, False
    return -1, False


def resume_plan(model, sites: Sequence[str]) -> tuple[str, int]:
    """How the optimisation loop avoids recomputing the layers before the edit site.

    - ``("after", L)``: the only site is layer ``L``'s MLP output projection, whose output is added to
      the residual stream, so ``δ`` can be added to the cached output of layer ``L`` itself and each
      step runs layers ``L+1..`` only;
    - ``("before", L)``: other sites (PMET's attention output) live in layer ``L``: each step runs
      layers ``L..`` from the cached input of layer ``L``, with the sites' hooks;
    - ``("full", 0)``: no reuse (module names not in the architecture table).
    """
    where = [site_layer(model, s) for s in sites]
    if not where or any(l < 0 for l, _ in where):
        return "full", 0
    L = min(l for l, _ in where)
    if len(sites) == 1 and where[0][1]:
        return "after", L
    return "before", L


def subject_aligned(seqs: Sequence[Seq], pad_id: int, device):
    """Place every sequence so that its subject's last token sits in the same column ``P``.

    Returns ``ids, mask, positions, P``: the tokens before the subject are left-padded into columns
    ``0..P-1`` and the rest (subject first) right-padded after them; ``positions`` are each token's
    position in its own sequence (pass them as ``position_ids``), so the model computes exactly what it
    computes on the unpadded sequence.
    """
    P = max(s.subj for s in seqs)
    W = P + max(len(s.ids) - s.subj for s in seqs)
    ids = torch.full((len(seqs), W), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), W), dtype=torch.long)
    pos = torch.zeros((len(seqs), W), dtype=torch.long)
    for i, s in enumerate(seqs):
        a = P - s.subj
        ids[i, a:a + len(s.ids)] = torch.tensor(s.ids)
        mask[i, a:a + len(s.ids)] = 1
        pos[i, a:a + len(s.ids)] = torch.arange(len(s.ids))
    return ids.to(device), mask.to(device), pos.to(device), P


def _prefix_cache(kv, rows):
    """A fresh ``DynamicCache`` holding the (constant) keys/values of the columns before the subject.

    The tensors are handed to the cache without copies (a cache built from data concatenates them);
    layers that never run during the steps hold zero-stride views of the right shape, which the cache
    needs only for its length.
    """
    from transformers import DynamicCache

    if kv is None:
        return None
    sel = (lambda t: t) if rows is None else (lambda t: t[rows] if t.stride(0) else t[:len(rows)])
    cache = DynamicCache(ddp_cache_data=[(k[:1, :, :0], v[:1, :, :0]) for k, v in kv])
    for layer, (k, v) in zip(cache.layers, kv):
        layer.keys, layer.values = sel(k), sel(v)
    return cache


def _keep_kv(past, P: int, first_run: int):
    """Keys/values of the first ``P`` columns for the layers from ``first_run`` on; earlier layers
    (never run during the steps) get zero-stride placeholders of the same shape (no memory)."""
    out = []
    for i, layer in enumerate(past):
        k, v = layer[0][..., :P, :], layer[1][..., :P, :]
        if i < first_run:
            k = k.new_zeros(()).expand(k.shape)
            v = v.new_zeros(()).expand(v.shape)
        else:
            k, v = k.contiguous(), v.contiguous()
        out.append((k, v))
    return out


@dataclass
class Readout:
    """What one pass of the model yields for the objective (active requests only)."""

    target_logits: torch.Tensor          # [n_tok, V]: logits predicting each target token of the rewrite rows
    target_labels: torch.Tensor          # [n_tok]: the target tokens
    target_rows: torch.Tensor            # [n_tok]: rewrite row of each target token
    kl_logits: torch.Tensor | None       # [n_kl, V]: next-token logits at the subject of the KL rows
    kl_init: torch.Tensor | None         # [n_kl, V]: the unedited model's log-probabilities there
    kl_req: torch.Tensor | None          # [n_kl]: request of each KL row


def edit_loss(out: Readout, row_req: torch.Tensor, row_len: torch.Tensor, n_req: int, decay: torch.Tensor,
              nll_factor, kl_factor: float, weight_decay: float):
    """Per-request objective of ROME eq. 4 / MEMIT eq. 16:

    ``L_i = f_nll · mean_r (1/|t_r|) Σ_j −log p(t_rj | rewrite_r) + f_kl · Σ KL(p_new ‖ p_init) + wd · decay_i``

    over the rewrite rows ``r`` and KL rows of request ``i`` (``row_req``: request of each rewrite row,
    ``row_len``: its number of target tokens; ``decay`` from :func:`delta_decay`). Returns the loss, NLL and
    KL terms (each ``[n_req]``) and the log-probabilities at the target positions.
    """
    dev = out.target_logits.device
    logp = torch.log_softmax(out.target_logits.float(), dim=-1)
    tok_lp = logp.gather(1, out.target_labels[:, None]).squeeze(1)
    nll_row = torch.zeros(len(row_req), device=dev).index_add(0, out.target_rows, -tok_lp) / row_len
    rows_per_req = torch.bincount(row_req, minlength=n_req).clamp(min=1).float()
    nll = torch.zeros(n_req, device=dev).index_add(0, row_req, nll_row) / rows_per_req
    kl = torch.zeros(n_req, device=dev)
    if out.kl_logits is not None:
        kl_lp = torch.log_softmax(out.kl_logits.float(), dim=-1)
        kl = kl.index_add(0, out.kl_req, (kl_lp.exp() * (kl_lp - out.kl_init)).sum(-1))
    return nll_factor * nll + kl_factor * kl + weight_decay * decay, nll, kl, logp


def _adaptive_nll(logp, out: Readout, row_req, kl, active, n_req: int, opts: TargetOptions):
    """PMET: the NLL factor drops to 0.1× for a request once every target token is the argmax; such a
    request stops once its weighted KL term is <= 0.01 (EasyEdit ``pmet/compute_zs.py``).
    Returns ``(nll_factor [n_req], stop [n_req])``."""
    wrong = 1 - (logp.argmax(-1) == out.target_labels).float()
    all_ok = torch.zeros(n_req, device=logp.device).index_add(0, row_req[out.target_rows], wrong) == 0
    all_ok &= active
    factor = torch.where(all_ok, 0.1 * opts.nll_factor, float(opts.nll_factor))
    return factor, all_ok & (opts.kl_factor * kl <= 0.01)


class StepRunner:
    """Runs the model for the optimisation loop, computing only what ``δ`` can change (no loss here).

    Nothing before the edit site changes while ``δ`` is optimised: not the layers before the site's
    layer ``L``, and — since ``δ`` enters at the subject's last token — not any token before the
    subject, in any layer. So (unless ``reuse_prefix_layers`` is off, or the module names are not in the
    architecture table) :meth:`first_pass` caches the residual stream at layer ``L`` for the tokens from
    the subject on and the attention keys/values of the tokens before it; every :meth:`step` then runs
    only layers after ``L`` (``L`` itself for PMET's attention site) on the tokens from the subject on
    (:func:`subject_aligned`, :func:`~.hooks.resume_at`), and the last layer's MLP only at the positions
    read. The logits are the same as with full passes (checked in the tests).
    """

    def __init__(self, model, tokenizer, rewrite: Sequence[Seq], kl: Sequence[Seq], n_req: int,
                 sites: Sequence[str], opts: TargetOptions):
        self.model, self.sites, self.n_req = model, list(sites), n_req
        self.dev = dev = next(model.parameters()).device
        seqs = list(rewrite) + list(kl)
        self.n_rw, self.n_kl = len(rewrite), len(kl)
        self._layout(seqs, pad_id_of(tokenizer), opts.reuse_prefix_layers)
        self.req_all = torch.tensor([s.req for s in seqs], device=dev)
        self.rw_req, self.kl_req = self.req_all[:self.n_rw], self.req_all[self.n_rw:]
        # the last layer's MLP only where outputs are read (unless a site is in the last layer)
        self.sparse_last = opts.reuse_prefix_layers and all(
            0 <= site_layer(model, s)[0] < num_layers(model) - 1 for s in sites)
        first_rw: dict[int, int] = {}
        for i, s in enumerate(rewrite):
            first_rw.setdefault(s.req, i)
        self.first_rows = torch.tensor([first_rw[r] for r in range(n_req)], device=dev)
        # target positions of rewrite rows (columns of the computed part)
        shift = [s.subj if self.mode != "full" else 0 for s in seqs]
        cols = [(i, s.n_prompt - 1 + j - shift[i], t) for i, s in enumerate(rewrite) for j, t in enumerate(s.target)]
        self.t_row, self.t_pos, self.t_lab = (torch.tensor(c, dtype=torch.long, device=dev)
                                               for c in (zip(*cols) if cols else ([], [], [])))
        self.t_len = torch.tensor([len(s.target) for s in rewrite], device=dev, dtype=torch.float32)
        self.base, self.head = _base_model(model), _output_module(model)
        self.cache_arg = cache_argument(self.base)

    def _layout(self, seqs, pad: int, reuse: bool) -> None:
        """Subject-aligned batch for the fast path (:func:`resume_plan`), else a right-padded one."""
        dev = self.dev
        self.mode, self.L0 = resume_plan(self.model, self.sites) if reuse else ("full", 0)
        if self.mode != "full":
            self.ids_all, self.mask_all, self.pos_all, self.P = subject_aligned(seqs, pad, dev)
            P = self.P
            if not layer_outputs_are_tensors(self.model, self.ids_all[:, P:], self.mask_all[:, P:]):
                self.mode = "full"
        if self.mode == "full":
            self.ids_all, self.mask_all = pad_batch(seqs, pad, dev)
            self.pos_all, self.P = None, 0
        # subject column: 0 for every row in the aligned layout (columns counted from P), else its own position
        self.subj_all = (torch.zeros(len(seqs), dtype=torch.long, device=dev) if self.mode != "full"
                         else torch.tensor([s.subj for s in seqs], device=dev))

    def first_pass(self, norm_modules: dict[str, str]):
        """One pass of the unedited model. Returns ``(inits, refs, keys)`` per site: the site's output at
        each request's subject (bare prompt), the vector bounding ``δ`` there (``norm_modules``), and the
        site's input at the subject of every rewrite row; keeps the KL reference distributions and, on the
        fast path, the stream at layer ``L`` and the keys/values before the subject."""
        model, sites, mode, P = self.model, self.sites, self.mode, self.P
        layer_name = arch_spec(model).layer.format(self.L0)
        rows0 = torch.arange(len(self.req_all), device=self.dev)
        at_subj = lambda x: x[rows0, self.subj_all + P]  # noqa: E731
        ref_mods = sorted({norm_modules[s] for s in sites if s in norm_modules})
        with torch.no_grad(), capture(model, sites, inputs=True, outputs=True, select=at_subj) as cap_sites, \
                capture(model, ref_mods, outputs=True, select=at_subj) as cap_refs, \
                capture(model, [layer_name] if mode != "full" else [], inputs=(mode == "before"),
                        outputs=(mode == "after"), select=lambda x: x[:, P:]) as cap_layer:
            out0 = self.base(input_ids=self.ids_all, attention_mask=self.mask_all, position_ids=self.pos_all,
                             use_cache=(mode != "full"))
            hidden0 = out0[0]
            self.kl_init = (torch.log_softmax(self.head(at_subj(hidden0)[self.n_rw:]).float(), -1)
                            if self.n_kl else None)
        self.kv = None
        if mode != "full" and P > 0:
            self.kv = _keep_kv(getattr(out0, self.cache_arg), P, self.L0 + 1 if mode == "after" else self.L0)
        del out0, hidden0
        first = self.first_rows
        inits = {s: cap_sites[s].output[first].float() for s in sites}
        refs = {s: (cap_refs[norm_modules[s]].output[first].float() if s in norm_modules else inits[s])
                for s in sites}
        keys = {s: cap_sites[s].input[:self.n_rw].float() for s in sites}
        self.resid = None
        if mode != "full":
            rec = cap_layer[layer_name]
            self.resid = rec.output if mode == "after" else rec.input
        return inits, refs, keys

    def _add_deltas(self, deltas, act_rows, row_req, row_pos, Q: int):
        """Context adding ``δ`` of each active row's request at its subject column."""
        rows_local = torch.arange(len(act_rows), device=self.dev)
        if self.mode == "after":
            # layer L's output with δ added at the subject (its MLP output feeds the residual additively)
            d, resid = deltas[self.sites[0]], self.resid
            return resume_at(self.model, self.L0 + 1, lambda: resid[act_rows, :Q].index_put(
                (rows_local, row_pos), d[row_req].to(resid.dtype), accumulate=True))
        hooks = {s: add_at_positions(rows_local, row_pos, (lambda s=s: deltas[s][row_req])) for s in self.sites}
        ctx = hooked(self.model, hooks)
        if self.mode == "before":
            ctx = _both(ctx, resume_at(self.model, self.L0, lambda: self.resid[act_rows, :Q]))
        return ctx

    @contextmanager
    def step(self, deltas: dict[str, torch.Tensor], active: torch.Tensor):
        """One pass with ``δ`` added for the ``active`` requests; yields their :class:`Readout`."""
        dev, P = self.dev, self.P
        act_rows = active[self.req_all].nonzero().squeeze(1)
        # map old row index -> new row index within the active batch
        new_index = torch.full((len(self.req_all),), -1, dtype=torch.long, device=dev)
        new_index[act_rows] = torch.arange(len(act_rows), device=dev)
        Q = int(self.mask_all[act_rows, P:].sum(1).max())
        ids, mask = self.ids_all[act_rows, P:P + Q], self.mask_all[act_rows, :P + Q]
        pos = self.pos_all[act_rows, P:P + Q] if self.pos_all is not None else None
        ctx = self._add_deltas(deltas, act_rows, self.req_all[act_rows], self.subj_all[act_rows], Q)
        # the tokens whose outputs are read: target positions of the rewrite rows, the subject of KL rows
        act_t = active[self.rw_req[self.t_row]]
        tr, tp = new_index[self.t_row[act_t]], self.t_pos[act_t]
        read_rows, read_pos = tr, tp
        if self.n_kl:
            act_kl = active[self.kl_req]
            kr = torch.arange(self.n_rw, len(self.req_all), device=dev)[act_kl]
            read_rows, read_pos = torch.cat([tr, new_index[kr]]), torch.cat([tp, self.subj_all[kr]])
        if self.sparse_last:
            ctx = _both(ctx, last_mlp_only_at(self.model, read_rows, read_pos))
        with ctx:
            cache = _prefix_cache(self.kv, None if bool(active.all()) else act_rows)
            hidden = self.base(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=self.kv is not None,
                               **{self.cache_arg: cache})[0]
            kl_part = ((self.head(hidden[new_index[kr], self.subj_all[kr]]), self.kl_init[act_kl.nonzero().squeeze(1)],
                        self.kl_req[act_kl]) if self.n_kl else (None, None, None))
            yield Readout(self.head(hidden[tr, tp]), self.t_lab[act_t], self.t_row[act_t], *kl_part)


def _optimise(model, tokenizer, rewrite, kl, n_req, sites, opts) -> TargetResult:
    """One Adam loop over all requests of ``rewrite``/``kl`` minimising :func:`edit_loss` (see the module
    doc); :class:`StepRunner` runs the passes. A request whose loss is below ``stop_loss`` is frozen."""
    run = StepRunner(model, tokenizer, rewrite, kl, n_req, sites, opts)
    inits, refs, keys = run.first_pass(opts.norm_modules)
    dev = run.dev
    deltas = {s: torch.zeros((n_req, model.config.hidden_size), device=dev, requires_grad=True) for s in sites}
    opt = torch.optim.Adam(list(deltas.values()), lr=opts.lr)
    done = torch.zeros(n_req, dtype=torch.bool, device=dev)
    nll_factor = torch.full((n_req,), float(opts.nll_factor), device=dev)
    last_nll = torch.zeros(n_req, device=dev)
    steps_done = 0
    for it in range(max(1, opts.steps)):
        active = ~done
        with torch.enable_grad(), frozen(model), run.step(deltas, active) as out:
            decay = sum(delta_decay(deltas[s], refs[s], opts.decay_form) for s in sites)
            loss, nll, kl_loss, logp = edit_loss(out, run.rw_req, run.t_len, n_req, decay, nll_factor,
                                                 opts.kl_factor, opts.weight_decay)
            with torch.no_grad():
                last_nll = torch.where(active, nll.detach(), last_nll)
                newly = active & (loss.detach() < opts.stop_loss)
                if opts.adaptive_nll:
                    nll_factor, stop = _adaptive_nll(logp, out, run.rw_req, kl_loss.detach(), active, n_req, opts)
                    newly |= stop
                done |= newly
            steps_done = it + 1
            if bool(done.all()) or it == opts.steps - 1:
                break
            opt.zero_grad(set_to_none=True)
            frozen_vals = {s: deltas[s].detach()[done].clone() for s in sites}
            loss[~done].sum().backward()
        opt.step()
        with torch.no_grad():
            for s in sites:
                d = deltas[s]
                if frozen_vals[s].numel():
                    d[done] = frozen_vals[s]
                clamp_delta_(d, refs[s], opts.clamp_norm_factor)
    return TargetResult({s: d.detach() for s, d in deltas.items()}, inits, last_nll.detach(), steps_done, keys)
