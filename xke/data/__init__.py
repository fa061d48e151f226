"""Benchmark schema and loaders."""

from .schema import EditCase, EditRequest, LangView, Provenance, Query

__all__ = ["EditCase", "EditRequest", "LangView", "Provenance", "Query"]
