"""Plain ``torch`` forward hooks: read module inputs/outputs, add vectors at token positions.

No tracing library: :func:`capture` registers ``register_forward_hook`` on named modules and keeps
their (first) input and output; :func:`add_at_positions` returns a hook that adds one vector per
(row, position) to a module's output, out of place so gradients reach the vectors.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ...models.architectures import get_module


def first_tensor(x):
    """The hidden-state tensor of a module output (decoder layers may return tuples)."""
    return x[0] if isinstance(x, (tuple, list)) else x


@dataclass
class Record:
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None


@dataclass
class Captured:
    records: dict[str, Record] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Record:
        return self.records[name]


@contextmanager
def capture(model: torch.nn.Module, names: list[str], *, inputs: bool = False, outputs: bool = True,
            detach: bool = True, select: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[Captured]:
    """Record the first positional input and/or the output of each module in ``names``.

    ``select`` (e.g. a gather of a few positions) is applied before storing, to keep memory small.
    """
    cap = Captured({n: Record() for n in names})
    handles = []

    def make(name):
        def hook(mod, args, out):
            rec = cap.records[name]
            if inputs:
                x = args[0]
                x = select(x) if select else x
                rec.input = x.detach() if detach else x
            if outputs:
                y = first_tensor(out)
                y = select(y) if select else y
                rec.output = y.detach() if detach else y
        return hook

    try:
        for n in names:
            handles.append(get_module(model, n).register_forward_hook(make(n)))
        yield cap
    finally:
        for h in handles:
            h.remove()


def add_at_positions(rows: torch.Tensor, positions: torch.Tensor, vectors: Callable[[], torch.Tensor],
                     on_first: Callable[[torch.Tensor], None] | None = None):
    """A forward hook adding ``vectors()[j]`` to ``output[rows[j], positions[j]]`` (out of place).

    ``on_first`` sees the unmodified output once (to record initial values).
    """
    state = {"seen": False}

    def hook(mod, args, out):
        y = first_tensor(out)
        if on_first is not None and not state["seen"]:
            on_first(y.detach())
            state["seen"] = True
        v = vectors().to(y.dtype)
        y2 = y.index_put((rows, positions), v, accumulate=True)
        if isinstance(out, tuple):
            return (y2,) + tuple(out[1:])
        if isinstance(out, list):
            return [y2] + list(out[1:])
        return y2
    return hook


@contextmanager
def hooked(model: torch.nn.Module, hooks: dict[str, Callable]) -> Iterator[None]:
    """Register forward hooks ``{module name: hook}`` for the duration of the block."""
    handles = [get_module(model, n).register_forward_hook(h) for n, h in hooks.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on all parameters for the block (restored after)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
