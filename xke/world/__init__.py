"""The toy multilingual world: generated facts in several languages and a tiny model trained on them.

The rest of xke reaches it through :mod:`xke.world.provider`, which turns ``world`` / ``world:DIR`` into
explicit inputs (model directory, presets, statistics corpus, IKE pool, retriever, XE-IT source).
"""
