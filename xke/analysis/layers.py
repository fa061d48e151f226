"""Per-layer language separation of parallel sentences (CLM-Bench Appendix B).

For N parallel sentence pairs (the same fact in language a = zh and b = en,
each with its subject), the hidden state at the **last token of the subject**
is taken at every layer (``site="residual"``: the decoder layer's raw output, read
with a hook on the layer; not ``hidden_states[l + 1]``, whose last entry is after the
final norm and so not comparable with the others; ``site="mlp"``: the layer's MLP
output). Per layer:

* **language vector** ``v = mean(h_a) − mean(h_b)`` (mean difference);
* ``projection_a`` / ``projection_b``: mean projection of each language's
  states on the unit language vector, and ``projection_difference`` = their
  difference (= ‖v‖; grows with the hidden-state scale, as in the paper's
  Figure 5 "language projection difference");
* ``separation``: a scale-free d' — the two languages' projections on a
  language vector estimated on the *other* half of the pairs (even/odd
  cross-fitting), ``(mean_a − mean_b) / sqrt((var_a + var_b) / 2)``;
* ``delta_cosine``: mean cosine between each pair's difference
  ``h_a,i − h_b,i`` and the language vector (how consistently the languages
  differ along one direction);
* ``pair_cosine``: mean cosine between the two states of a pair.

The **suggested layer** is the one with the largest separation (the paper
picks the layer where the languages separate most, Appendix B summary).
PCA and t-SNE (scikit-learn) give 2-D views of both languages per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import DataError, ModelError


@dataclass(frozen=True)
class ParallelPair:
    """One fact in two languages: sentence and subject in each."""

    text_a: str
    subject_a: str
    text_b: str
    subject_b: str
    key: str = ""


# ---------------------------------------------------------------- pure statistics
def _cos_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(x, y.expand_as(x) if y.dim() == 1 else y, dim=-1)


def _dprime(pa: torch.Tensor, pb: torch.Tensor) -> float:
    pooled = math.sqrt((float(pa.var(unbiased=False)) + float(pb.var(unbiased=False))) / 2.0)
    diff = float(pa.mean() - pb.mean())
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(1e6, diff)
    return diff / pooled


def separation_stats(h_a: torch.Tensor, h_b: torch.Tensor) -> dict[str, float]:
    """Statistics of one layer from ``h_a``, ``h_b`` of shape ``[N, D]`` (row i of each = pair i)."""
    if h_a.shape != h_b.shape or h_a.dim() != 2:
        raise ValueError(f"expected two [N, D] tensors of one shape, got {tuple(h_a.shape)} and {tuple(h_b.shape)}")
    a, b = h_a.double(), h_b.double()
    n = a.shape[0]
    v = a.mean(0) - b.mean(0)
    norm = float(torch.linalg.vector_norm(v))
    u = v / norm if norm > 0 else v
    proj_a, proj_b = float((a @ u).mean()), float((b @ u).mean())
    # cross-fitted separation: direction from one half, projections of the other half
    if n >= 4:
        idx = torch.arange(n)
        seps = []
        for fit, ev in ((idx % 2 == 0, idx % 2 == 1), (idx % 2 == 1, idx % 2 == 0)):
            w = a[fit].mean(0) - b[fit].mean(0)
            wn = torch.linalg.vector_norm(w)
            w = w / wn if wn > 0 else w
            seps.append(_dprime(a[ev] @ w, b[ev] @ w))
        separation = sum(seps) / len(seps)
    else:
        separation = _dprime(a @ u, b @ u)
    delta_cos = float(_cos_rows(a - b, v).mean()) if norm > 0 else 0.0
    pair_cos = float(_cos_rows(a, b).mean())
    return {"projection_a": proj_a, "projection_b": proj_b, "projection_difference": proj_a - proj_b,
            "language_vector_norm": norm, "separation": separation, "delta_cosine": delta_cos,
            "pair_cosine": pair_cos}


def layer_report(states_a: torch.Tensor, states_b: torch.Tensor, layers: Sequence[int],
                 langs: tuple[str, str] = ("zh", "en")) -> dict[str, Any]:
    """Per-layer statistics from ``[N, L, D]`` states; ``layers[j]`` names column j.
    Keys ``projection_a``/``projection_b`` are renamed ``projection_<lang>``."""
    a_code, b_code = langs
    rows = []
    for j, lay in enumerate(layers):
        st = separation_stats(states_a[:, j], states_b[:, j])
        st[f"projection_{a_code}"] = st.pop("projection_a")
        st[f"projection_{b_code}"] = st.pop("projection_b")
        rows.append({"layer": int(lay), **{k: round(v, 6) for k, v in st.items()}})
    best = max(rows, key=lambda r: (r["separation"], r["layer"])) if rows else None
    return {"langs": list(langs), "n_pairs": int(states_a.shape[0]), "layers": rows,
            "suggested_layer": best["layer"] if best else None,
            "suggested_by": "largest separation (cross-fitted d' of the projections on the language vector)"}


def embeddings_2d(h_a: torch.Tensor, h_b: torch.Tensor, *, tsne: bool = True, max_points: int = 300,
                  seed: int = 0) -> dict[str, Any]:
    """PCA (and t-SNE) coordinates of the two languages' states of one layer (first ``max_points``
    pairs for t-SNE)."""
    import numpy as np
    from sklearn.decomposition import PCA

    x = torch.cat([h_a, h_b]).double().numpy()
    lang = ["a"] * h_a.shape[0] + ["b"] * h_b.shape[0]
    out: dict[str, Any] = {"lang": lang}
    out["pca"] = PCA(n_components=2, random_state=seed).fit_transform(x) if x.shape[0] >= 2 else np.zeros((x.shape[0], 2))
    out["tsne"] = None
    if tsne and h_a.shape[0] >= 4:
        from sklearn.manifold import TSNE
        m = min(max_points, h_a.shape[0])
        sub = np.concatenate([h_a[:m].double().numpy(), h_b[:m].double().numpy()])
        perplexity = float(max(2.0, min(30.0, (sub.shape[0] - 1) / 3.0)))
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(sub)
        full = np.full((x.shape[0], 2), np.nan)
        full[:m] = coords[:m]
        full[h_a.shape[0]:h_a.shape[0] + m] = coords[m:]
        out["tsne"] = full
    return out


# ---------------------------------------------------------------- model side
def subject_last_token(offsets: Sequence[tuple[int, int]], text: str, subject: str) -> int | None:
    """Index of the last token overlapping the (first) occurrence of ``subject`` in ``text``;
    ``None`` when the subject does not occur."""
    start = text.find(subject) if subject else -1
    if start < 0:
        start = text.lower().find(subject.lower()) if subject else -1
    if start < 0:
        return None
    end = start + len(subject)
    last = None
    for i, (s, e) in enumerate(offsets):
        if e > s and s < end and e > start:
            last = i
    return last


def collect_states(model, tokenizer, texts: Sequence[str], subjects: Sequence[str], layers: Sequence[int], *,
                   site: str = "residual", batch_size: int = 16) -> tuple[torch.Tensor, int]:
    """``[N, len(layers), D]`` float32 states at each text's last subject token; texts whose subject
    is not found use their last token (their count is returned as the second value)."""
    from ..models.architectures import arch_spec, decoder_layers, get_module

    blocks = decoder_layers(model)  # residual site: no ArchSpec needed
    n_layers = len(blocks)
    bad = [lay for lay in layers if not 0 <= lay < n_layers]
    if bad:
        raise ModelError(f"layer(s) {bad} out of range: model has {n_layers} layers (0..{n_layers - 1})")
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError("analyze layers needs a fast tokenizer (offset mapping) to find subject tokens")
    device = next(model.parameters()).device
    bos = getattr(tokenizer, "bos_token", None)
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    if site == "mlp":
        spec = arch_spec(model)
        for lay in layers:
            mod = get_module(model, spec.mlp.format(lay))
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, lay=lay: captured.__setitem__(lay, (o[0] if isinstance(o, tuple) else o).detach())))
    elif site == "residual":
        for lay in layers:
            hooks.append(blocks[lay].register_forward_hook(
                lambda m, i, o, lay=lay: captured.__setitem__(lay, (o[0] if isinstance(o, tuple) else o).detach())))
    else:
        raise ValueError(f"site must be 'residual' or 'mlp', got {site!r}")
    out = []
    missing = 0
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    try:
        for s in range(0, len(texts), batch_size):
            bt, bs = list(texts[s:s + batch_size]), list(subjects[s:s + batch_size])
            enc_ids, positions = [], []
            for t, subj in zip(bt, bs):
                add_special = not (bool(bos) and t.startswith(bos))
                enc = tokenizer(t, add_special_tokens=add_special, return_offsets_mapping=True)
                pos = subject_last_token(enc["offset_mapping"], t, subj)
                if pos is None:
                    missing += 1
                    pos = len(enc["input_ids"]) - 1
                enc_ids.append(list(enc["input_ids"]))
                positions.append(pos)
            width = max(len(x) for x in enc_ids)
            ids = torch.full((len(enc_ids), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(enc_ids), width), dtype=torch.long)
            for i, x in enumerate(enc_ids):  # left padding
                ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
                mask[i, width - len(x):] = 1
            pos_t = torch.tensor([width - len(x) + p for x, p in zip(enc_ids, positions)])
            with torch.inference_mode():
                model(input_ids=ids.to(device), attention_mask=mask.to(device))
            rows = torch.arange(len(enc_ids))
            per_layer = []
            for lay in layers:
                h = captured[lay]
                per_layer.append(h[rows, pos_t.to(h.device)].float().cpu())
            out.append(torch.stack(per_layer, dim=1))
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(out, dim=0), missing


def parse_layers(spec: str | None, n_layers: int) -> list[int]:
    """``None``/"all" → every layer; "9-12", "1,3,5", "-1" (last) accepted."""
    if spec is None or spec == "all":
        return list(range(n_layers))
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                v = int(part)
                out.append(v if v >= 0 else n_layers + v)
        except ValueError:
            raise DataError(f"cannot parse layer list {spec!r}; use e.g. 9-12 or 1,3,5") from None
    bad = [x for x in out if not 0 <= x < n_layers]
    if bad:
        raise ModelError(f"layer(s) {bad} out of range: model has {n_layers} layers (0..{n_layers - 1})")
    return sorted(dict.fromkeys(out))


def pairs_from_cases(cases, langs: tuple[str, str], *, limit: int | None = None,
                     field: str = "prompt") -> list[ParallelPair]:
    """Parallel pairs from :class:`~xke.data.schema.EditCase` objects having both languages
    (the edit prompt, or the locality prompt with ``field="locality"``, is the sentence)."""
    a, b = langs
    pairs = []
    for c in cases:
        if a not in c.views or b not in c.views:
            continue
        va, vb = c.views[a], c.views[b]
        pairs.append(ParallelPair(va.prompt, va.subject, vb.prompt, vb.subject, key=c.case_id))
        if limit and len(pairs) >= limit:
            break
    if len(pairs) < 2:
        raise DataError(f"need at least 2 cases with both {a} and {b} views, found {len(pairs)}")
    return pairs


def pairs_from_world(world, langs: tuple[str, str], *, limit: int | None = None, seed: int = 0) -> list[ParallelPair]:
    """Parallel statements of a toy :class:`~xke.world.world.World` (the facts behind its
    ``parallel_sentences``), with each language's subject surface form; statement templates rotate
    over facts, facts are shuffled with ``seed`` so a limit covers every relation."""
    import random
    a, b = langs
    for code in langs:
        if code not in world.langs:
            raise DataError(f"the world has no language {code!r}; it has {world.langs}")
    facts = list(world.all_facts())
    random.Random(seed).shuffle(facts)
    pairs = []
    for i, f in enumerate(facts[:limit] if limit else facts):
        pairs.append(ParallelPair(world.statement(f.subject, f.relation, a, i), world.name(f.subject, a),
                                  world.statement(f.subject, f.relation, b, i), world.name(f.subject, b),
                                  key=f"{f.subject}|{f.relation}"))
    if len(pairs) < 2:
        raise DataError(f"the world has only {len(pairs)} facts")
    return pairs


def analyze_layers(model, tokenizer, pairs: Sequence[ParallelPair], *, layers: Sequence[int],
                   langs: tuple[str, str] = ("zh", "en"), site: str = "residual", template: str = "none",
                   system_prompt: str | None = None, tsne: bool = True, tsne_max: int = 300, seed: int = 0,
                   batch_size: int = 16) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """Run the model over both sides of ``pairs``; return (layers.json mapping, 2-D points per layer).
    ``template``: "none" feeds the bare sentence, otherwise a :class:`PromptFormatter` mode (with
    ``system_prompt`` as its system message)."""
    if template == "none":
        fmt = lambda t: t  # noqa: E731
    else:
        from ..models.prompts import PromptFormatter
        pf = PromptFormatter(tokenizer, mode=template, system=system_prompt)
        fmt = pf.format
    ta = [fmt(p.text_a) for p in pairs]
    tb = [fmt(p.text_b) for p in pairs]
    ha, miss_a = collect_states(model, tokenizer, ta, [p.subject_a for p in pairs], layers, site=site,
                                batch_size=batch_size)
    hb, miss_b = collect_states(model, tokenizer, tb, [p.subject_b for p in pairs], layers, site=site,
                                batch_size=batch_size)
    report = layer_report(ha, hb, layers, langs)
    report.update({"site": site, "template": template, "subject_not_found": {langs[0]: miss_a, langs[1]: miss_b}})
    points = {}
    for j, lay in enumerate(layers):
        e = embeddings_2d(ha[:, j], hb[:, j], tsne=tsne, max_points=tsne_max, seed=seed)
        e["lang"] = [langs[0] if x == "a" else langs[1] for x in e["lang"]]
        points[int(lay)] = e
    return report, points
