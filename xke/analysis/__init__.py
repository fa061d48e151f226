"""xke.analysis: geometry of edit deltas (CLM-Bench Figure 1), per-layer language separation
(Appendix B), plots, and experiment grids (``xke experiment``).

- :mod:`xke.analysis.geometry` — cosine, Jaccard of top-p% neurons, principal angles, relative error;
  :func:`~xke.analysis.geometry.geometry_report`.
- :mod:`xke.analysis.layers` — hidden states at the last subject token, language vector, separation.
- :mod:`xke.analysis.plots` — matplotlib (Agg) figures.
- :mod:`xke.analysis.experiment` — ``analyze deltas`` on saved runs, YAML experiment grids.
"""
