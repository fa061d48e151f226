"""``xke analyze deltas`` and ``xke analyze layers``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DataError


def register(sub, groups) -> None:
    an = groups["analyze"]

    p = an.add_parser(
        "deltas", help="geometry of zh / en / mixed edit deltas (CLM-Bench Figure 1)",
        description="Compare the deltas.safetensors of three `xke eval --save-deltas` runs that edited the same "
                    "facts in zh, in en and in both (mix), with the same protocol and batch size. Writes "
                    "OUT/geometry.json {matrix: {independence: {cosine, jaccard, principal_angle_deg, "
                    "relative_error}, additivity: {...}}} and OUT/geometry.png. Independence pair = (Δzh, Δen); "
                    "additivity pair = (Δmix, Δzh+Δen); relative error = ‖a−b‖/‖a‖ with a = Δzh resp. Δmix. "
                    "A neuron is an output row of the weight (a column for GPT-2 Conv1D). Several runs per "
                    "language (e.g. one per batch size, in the same order) give OUT/<label>/geometry.json and "
                    "the Figure-1 layout across runs in OUT/figure1.png.")
    p.add_argument("--zh", nargs="+", required=True, metavar="DIR", help="run dir(s) edited in zh")
    p.add_argument("--en", nargs="+", required=True, metavar="DIR", help="run dir(s) edited in en")
    p.add_argument("--mix", nargs="+", required=True, metavar="DIR", help="run dir(s) edited in zh and en at once")
    p.add_argument("--layer", default=None, metavar="NAME",
                   help="analyse only this edited matrix (parameter name, e.g. model.layers.2.mlp.down_proj.weight)")
    p.add_argument("--top-p", type=float, default=5.0, help="percent of neurons in the top set for Jaccard (default 5)")
    p.add_argument("--k", type=int, default=10, help="top-k left singular vectors for principal angles (default 10)")
    p.add_argument("--labels", default=None, help="comma-separated labels of the runs (default: batch size)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_deltas)

    p = an.add_parser(
        "layers", help="per-layer language separation of parallel sentences (CLM-Bench Appendix B)",
        description="Hidden states at the last subject token of parallel sentences in two languages, per layer: "
                    "language vector (mean difference), projection difference, separation (d'), delta cosine, "
                    "PCA and t-SNE plots, and a suggested layer (largest separation). Sentences come from "
                    "--bench/--data (e.g. bizsre ../shared/data/bizsre/test.json) or from a toy world "
                    "(--world DIR, or the world of --model world[:DIR]).")
    p.add_argument("--model", required=True, help="local model dir, tiny config name, world or world:DIR")
    p.add_argument("--bench", default=None, help="bizsre, mzsre, clm or jsonl (with --data)")
    p.add_argument("--data", default=None, help="benchmark file/folder")
    p.add_argument("--world", default=None, metavar="DIR", help="toy world directory (uses its cases.jsonl)")
    p.add_argument("--langs", default="zh,en", help="the two languages (default zh,en)")
    p.add_argument("--layers", default=None, help="layers, e.g. 9-12 or 1,3 (default: all)")
    p.add_argument("--limit", type=int, default=1000, help="number of sentence pairs (default 1000)")
    p.add_argument("--site", choices=["residual", "mlp"], default="residual",
                   help="residual = decoder layer output, mlp = MLP output (default residual)")
    p.add_argument("--template", choices=["none", "auto", "chat", "plain"], default="none",
                   help="feed the bare sentence (none, default) or a formatted prompt")
    p.add_argument("--system-prompt", default=None, metavar="TEXT",
                   help="system message of chat-formatted prompts (--template auto/chat)")
    p.add_argument("--no-tsne", action="store_true", help="skip t-SNE (PCA only)")
    p.add_argument("--tsne-max", type=int, default=300, help="pairs used for t-SNE (default 300)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_layers)


def _fmt(v, angle=False):
    return "   n/a" if v is None else (f"{v:6.1f}" if angle else f"{v:6.3f}")


def _print_geometry(geom) -> None:
    for name, g in geom.items():
        print(name)
        for pair in ("independence", "additivity"):
            m = g[pair]
            print(f"  {pair:<12} cosine {_fmt(m['cosine'])}  jaccard {_fmt(m['jaccard'])}  "
                  f"angle {_fmt(m['principal_angle_deg'], True)}°  rel.err {_fmt(m['relative_error'])}")


def _cmd_deltas(args: argparse.Namespace) -> int:
    from .deltas import analyze_deltas, figure1, run_meta
    n = len(args.zh)
    if len(args.en) != n or len(args.mix) != n:
        raise DataError(f"--zh, --en and --mix need the same number of run dirs (got {n}, {len(args.en)}, "
                        f"{len(args.mix)})")
    if args.k < 1:
        raise DataError("--k must be at least 1")
    if not 0 < args.top_p <= 100:
        raise DataError("--top-p must be in (0, 100]")
    out = Path(args.out)
    if n == 1:
        geom = analyze_deltas(args.zh[0], args.en[0], args.mix[0], out, layer=args.layer, top_p=args.top_p, k=args.k)
        _print_geometry(geom)
        print(f"wrote {out / 'geometry.json'} and {out / 'geometry.png'}")
        return 0
    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != n:
        raise DataError(f"--labels has {len(labels)} labels for {n} runs")
    if labels is None:
        labels = []
        for i, d in enumerate(args.zh):
            bs = run_meta(d).get("batch_size")
            labels.append(str(bs) if bs is not None else str(i))
        if len(set(labels)) != n:
            labels = [str(i) for i in range(n)]
    by_label = {}
    for lb, zh, en, mix in zip(labels, args.zh, args.en, args.mix):
        print(f"== {lb}")
        by_label[lb] = analyze_deltas(zh, en, mix, out / lb, layer=args.layer, top_p=args.top_p, k=args.k, label=lb)
        _print_geometry(by_label[lb])
    name, data = figure1(by_label, out / "figure1.png", layer=args.layer)
    (out / "geometry_by_run.json").write_text(json.dumps(by_label, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}/<label>/geometry.json, {out / 'geometry_by_run.json'} and {out / 'figure1.png'} ({name})")
    return 0


def _pairs_for(args):
    from ..data.languages import parse_langs
    from .layers import pairs_from_cases
    langs = parse_langs(args.langs)
    if len(langs) != 2:
        raise DataError(f"--langs needs exactly two languages, got {langs}")
    langs_t = (langs[0], langs[1])
    if args.data or args.bench:
        if not (args.data and args.bench):
            raise DataError("--bench and --data go together")
        from ..data.loaders import load_bench
        cases = load_bench(args.bench, args.data, langs=list(langs_t))
        return pairs_from_cases(cases, langs_t, limit=args.limit), langs_t, f"{args.bench}:{args.data}"
    world_dir = Path(args.world) if args.world else None
    if world_dir is None:
        from ..world.provider import is_world_spec, world_dir_of
        world_dir = world_dir_of(args.model) if is_world_spec(args.model) else None
    if world_dir is None:
        raise DataError("give parallel sentences: --bench NAME --data PATH (e.g. bizsre), or --world DIR")
    if (world_dir / "world.json").exists():  # the world's parallel statements, with subjects
        from ..world.world import load_world
        from .layers import pairs_from_world
        return (pairs_from_world(load_world(world_dir), langs_t, limit=args.limit, seed=args.seed), langs_t,
                f"world:{world_dir} (parallel statements)")
    cases_file = world_dir / "cases.jsonl"
    if not cases_file.exists():
        raise DataError(f"{world_dir} is not a toy world directory (no world.json or cases.jsonl)")
    from ..data.loaders import read_jsonl
    cases = read_jsonl(cases_file)
    return pairs_from_cases(cases, langs_t, limit=args.limit), langs_t, f"world:{world_dir} (cases.jsonl)"


def _cmd_layers(args: argparse.Namespace) -> int:
    from ..models.architectures import decoder_layers
    from ..models.loading import load_model
    from .layers import analyze_layers, parse_layers
    from ..world.provider import model_path
    from .plots import plot_layer_embeddings, plot_layer_metrics
    pairs, langs, source = _pairs_for(args)
    lm = load_model(str(model_path(args.model)), dtype=args.dtype, device=args.device)
    layers = parse_layers(args.layers, len(decoder_layers(lm.model)))
    report, points = analyze_layers(lm.model, lm.tokenizer, pairs, layers=layers, langs=langs, site=args.site,
                                    template=args.template, system_prompt=args.system_prompt,
                                    tsne=not args.no_tsne, tsne_max=args.tsne_max,
                                    seed=args.seed, batch_size=args.batch_size)
    report = {"model": args.model, "source": source, **report}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layers.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_layer_metrics(report["layers"], out / "layers.png", langs=langs, suggested=report["suggested_layer"],
                       title=f"{args.model}: {langs[0]} vs {langs[1]} ({report['n_pairs']} pairs, {args.site})")
    plot_layer_embeddings(points, out / "pca_tsne.png", langs=langs)
    a, b = langs
    print(f"{'layer':>5} {'proj ' + a:>10} {'proj ' + b:>10} {'proj diff':>10} {'separation':>10} "
          f"{'delta cos':>10} {'pair cos':>10}")
    for r in report["layers"]:
        print(f"{r['layer']:>5} {r['projection_' + a]:>10.3f} {r['projection_' + b]:>10.3f} "
              f"{r['projection_difference']:>10.3f} {r['separation']:>10.3f} {r['delta_cosine']:>10.3f} "
              f"{r['pair_cosine']:>10.3f}")
    print(f"suggested layer: {report['suggested_layer']} (largest separation)")
    print(f"wrote {out / 'layers.json'}, {out / 'layers.png'}, {out / 'pca_tsne.png'}")
    return 0
