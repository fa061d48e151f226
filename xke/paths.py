"""Where xke keeps caches (built tiny models, the toy world, statistics)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$XKE_CACHE`` (default ``~/.cache/xke``) joined with ``parts``, created."""
    root = Path(os.environ.get("XKE_CACHE") or Path.home() / ".cache" / "xke")
    p = root.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
