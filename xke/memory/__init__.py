"""The persistent edit memory (SQLite), its embeddings index and the retrievers of in-context methods."""

from .store import AuditEntry, EditStore, ImportResult, MemoryEdit

__all__ = ["AuditEntry", "EditStore", "ImportResult", "MemoryEdit"]
