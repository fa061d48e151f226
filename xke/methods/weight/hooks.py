"""Plain ``torch`` forward hooks: read module inputs/outputs, add vectors at token positions.

No tracing library: :func:`capture` registers ``register_forward_hook`` on named modules and keeps
their (first) input and output; :func:`add_at_positions` returns a hook that adds one vector per
(row, position) to a module's output, out of place so gradients reach the vectors.
"""

from __future__ import annotations

import weakref
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


class _StopForward(Exception):
    """Raised by :func:`stop_when_seen` to end a forward pass early."""


@contextmanager
def stop_when_seen(model: torch.nn.Module, names: list[str]) -> Iterator[type[Exception]]:
    """Abort forward passes once every module in ``names`` has run (register after :func:`capture`).

    Yields the exception class to catch around the forward call.
    """
    seen: set[str] = set()

    def make(name):
        def hook(mod, args, out):
            seen.add(name)
            if len(seen) == len(names):
                seen.clear()
                raise _StopForward
        return hook

    handles = [get_module(model, n).register_forward_hook(make(n)) for n in dict.fromkeys(names)]
    names = list(dict.fromkeys(names))
    try:
        yield _StopForward
    finally:
        for h in handles:
            h.remove()


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


def _passthrough(*args, **kwargs):
    """Forward of a skipped decoder layer: its input hidden states, unchanged."""
    return args[0] if args else kwargs["hidden_states"]


@contextmanager
def resume_at(model: torch.nn.Module, layer: int, hidden: Callable[[], torch.Tensor]) -> Iterator[None]:
    """Run forward passes from decoder layer ``layer`` on, with ``hidden()`` as that layer's input.

    Layers ``0..layer-1`` are not computed (their ``forward`` returns its input while the block is
    open) and a pre-hook on layer ``layer`` (the final norm when ``layer`` equals the number of
    layers) replaces the hidden states it receives by ``hidden()`` — typically residual-stream states
    cached by one earlier pass, plus the vectors being optimised. The embeddings, the causal mask and
    the position embeddings are still computed by the model's own forward (they are cheap), so
    attention in the later layers sees exactly what a full pass gives.

    This is what makes repeated optimisation steps cheap: the layers before the edit site are run
    once (Meng et al. 2022 optimise ``v*`` with the model's full forward at every step).
    """
    from ...models.architectures import arch_spec, get_module

    spec = arch_spec(model)
    layers = get_module(model, spec.layers)
    if not 0 <= layer <= len(layers):
        raise ValueError(f"resume_at: layer {layer} outside 0..{len(layers)}")
    target = layers[layer] if layer < len(layers) else get_module(model, spec.final_norm)

    def pre(mod, args, kwargs):
        h = hidden()
        if args:
            return (h,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = h
        return args, kwargs

    skipped = list(layers)[:layer]
    saved = [m.__dict__.get("forward") for m in skipped]   # an instance-level forward (e.g. accelerate's)
    for m in skipped:
        m.forward = _passthrough
    handle = target.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        for m, f in zip(skipped, saved):
            if f is None:
                del m.forward
            else:
                m.forward = f


@contextmanager
def last_mlp_only_at(model: torch.nn.Module, rows: torch.Tensor, positions: torch.Tensor) -> Iterator[None]:
    """Compute the last decoder layer's MLP only at the tokens ``(rows[i], positions[i])``.

    Exact for everything read at those tokens: the MLP acts on each token alone, the last layer's
    output feeds only the (per-token) final norm and the LM head, and the other tokens' outputs (left
    without their MLP term) are never read — callers apply the head at these tokens only. An editing
    loop scores a few target tokens of each sequence, so most of the last layer's MLP is skipped.
    """
    from ...models.architectures import arch_spec, get_module, num_layers

    mlp = get_module(model, arch_spec(model).mlp.format(num_layers(model) - 1))
    saved = mlp.__dict__.get("forward")
    full = mlp.forward

    def forward(x, *args, **kwargs):
        y = full(x[rows, positions], *args, **kwargs)
        return x.new_zeros(x.shape[:-1] + y.shape[-1:]).index_put((rows, positions), y)

    mlp.forward = forward
    try:
        yield
    finally:
        if saved is None:
            del mlp.forward
        else:
            mlp.forward = saved


class LayerReplay:
    """The decoder layers from ``start`` on and the final norm, called directly with the keyword arguments
    the model's own forward passed them (causal mask, position embeddings, ...), recorded once by
    :meth:`record`.

    An optimisation loop whose inputs before layer ``start`` are fixed then runs ``replay(h)`` each step
    instead of the model's forward: no embedding lookup, mask or rotary-embedding construction and no
    wrappers per step, and exactly the same computation in the layers (same arguments, same modules,
    module patches such as :func:`last_mlp_only_at` included). Needs layers that return tensors
    (:func:`layer_outputs_are_tensors`) and a forward without a cache.
    """

    def __init__(self, model: torch.nn.Module, start: int):
        from ...models.architectures import arch_spec, get_module

        spec = arch_spec(model)
        self.layers = list(get_module(model, spec.layers))[start:]
        self.norm = get_module(model, spec.final_norm)
        self.kwargs: list[dict] = []

    @contextmanager
    def record(self) -> Iterator[None]:
        """Record each replayed layer's keyword arguments during the forward pass run inside the block."""
        self.kwargs = [{} for _ in self.layers]

        def make(i):
            def pre(mod, args, kwargs):
                self.kwargs[i] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            return pre

        handles = [layer.register_forward_pre_hook(make(i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """The final-normed hidden states after the replayed layers, from ``hidden`` (the input of ``start``)."""
        for layer, kw in zip(self.layers, self.kwargs):
            hidden = layer(hidden, **kw)
        return self.norm(hidden)


_HEADS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, torch.Tensor]]" = weakref.WeakKeyDictionary()
#: largest LM head (bytes) given a column-major copy on CPU
HEAD_COPY_MAX_BYTES = 256 << 20


def head_logits(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's LM head as a function of hidden states ``h`` [..., d]: the logits ``h Wᵀ + b``.

    For a plain ``nn.Linear`` head on CPU (of at most :data:`HEAD_COPY_MAX_BYTES`) the product runs on a
    column-major copy of ``W`` made once per model and weight version: on CPU a product with a few rows
    (FT reads one position per prompt) is faster from ``Wᵀ`` stored contiguously (8000×256 head, one
    thread: 1.6× forward and 1.7× backward at one row, 1.3× and 1.1× at seven). Same values up to float
    rounding. Otherwise: the module.
    """
    head = model.get_output_embeddings()
    w = getattr(head, "weight", None)
    if type(head) is not torch.nn.Linear or w is None or w.device.type != "cpu" \
            or w.numel() * w.element_size() > HEAD_COPY_MAX_BYTES:
        return head
    key = (w.data_ptr(), w._version, w.dtype, tuple(w.shape))
    hit = _HEADS.get(model)
    if hit is None or hit[0] != key:
        hit = _HEADS[model] = (key, w.detach().t().contiguous())
    w_t, bias = hit[1], head.bias
    if bias is None:
        return lambda h: h @ w_t
    return lambda h: h @ w_t + bias


_TENSOR_LAYERS: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def layer_outputs_are_tensors(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whether decoder layers return a bare tensor (transformers >= 5), which :func:`resume_at` assumes.

    Found once per model (a two-token pass through the decoder, without the LM head) and remembered."""
    from ...models.architectures import arch_spec, get_module

    if model in _TENSOR_LAYERS:
        return _TENSOR_LAYERS[model]
    first = get_module(model, arch_spec(model).layer.format(0))
    seen = {}
    def hook(mod, args, out):
        seen["t"] = isinstance(out, torch.Tensor)

    h = first.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.base_model(input_ids=ids[:1, :2], attention_mask=mask[:1, :2], use_cache=False)
    finally:
        h.remove()
    _TENSOR_LAYERS[model] = bool(seen.get("t"))
    return _TENSOR_LAYERS[model]
