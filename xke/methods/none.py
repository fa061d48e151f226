"""The unedited model: the "Origin" row of the papers' tables."""

from __future__ import annotations

from typing import Sequence

from ..data.schema import EditRequest
from .base import EditHandle, EditMethod, NoOpHandle, register_method


@register_method
class NoEdit(EditMethod):
    """Applies nothing; evaluation then measures the original model."""

    name = "none"
    kind = "none"

    def apply(self, requests: Sequence[EditRequest]) -> EditHandle:
        return NoOpHandle()
