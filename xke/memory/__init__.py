"""The persistent edit memory (SQLite), its embeddings index and the retrievers of in-context methods."""

from .store import EditStore, ImportResult, MemoryEdit

__all__ = ["EditStore", "ImportResult", "MemoryEdit"]
