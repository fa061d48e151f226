"""xke.analysis: geometry of edit deltas (CLM-Bench Figure 1), per-layer language separation
(Appendix B) and plots. The experiment grids (``xke experiment``) are :mod:`xke.eval.experiment`.

- :mod:`xke.analysis.geometry` — cosine, Jaccard of top-p% neurons, principal angles, relative error;
  :func:`~xke.analysis.geometry.geometry_report`.
- :mod:`xke.analysis.deltas` — ``analyze deltas`` on saved runs (``deltas.safetensors``).
- :mod:`xke.analysis.layers` — hidden states at the last subject token, language vector, separation.
- :mod:`xke.analysis.plots` — matplotlib (Agg) figures.
"""
