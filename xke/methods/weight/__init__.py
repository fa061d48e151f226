"""Machinery shared by the weight-editing methods (FT-L/FT-M, ROME, MEMIT, AlphaEdit, PMET).

Written once and used by every method:

- :mod:`.hooks` — plain ``torch`` forward hooks: capture module inputs/outputs, add vectors at positions;
- :mod:`.subject` — the subject's last token through the tokenizer's offset mapping;
- :mod:`.stats` — second-moment statistics of MLP keys from a local corpus, cached on disk;
- :mod:`.targets` — edit prompts (context prefixes, KL prompts), keys, and the batched optimisation of
  target vectors (ROME's v*, MEMIT's z, PMET's attention + MLP targets) for all requests in one loop;
- :mod:`.update` — the closed-form updates (rank-one, MEMIT's least squares, AlphaEdit's null-space
  projection) and writing them into ``nn.Linear`` / ``Conv1D`` weights;
- :mod:`.common` — the config fields and the method base class they share.
"""
