"""Detect PyTorch's fused kernels while a task runs, through any route: "written by hand", enforced.

A task that must be written by hand (attention in Task 1.1, LayerNorm in Task 2.2) may not reach
PyTorch's fused implementation, whichever name it is called by: ``F.scaled_dot_product_attention``,
the same function imported under another name, ``torch._C._nn.scaled_dot_product_attention``,
``torch.ops.aten.scaled_dot_product_attention``, ``nn.MultiheadAttention`` or
``F.multi_head_attention_forward``. Patching the attribute ``F.scaled_dot_product_attention``
misses all but the first; this module watches at two levels instead:

* a ``TorchFunctionMode`` sees every call of a torch function by its name, and
* a ``TorchDispatchMode`` sees the ATen kernels that run (``_scaled_dot_product_flash_attention_for_cpu``,
  ``_efficient_attention_forward``, ``_scaled_dot_product_cudnn_attention``, the math path's
  ``_safe_softmax``, ``_native_multi_head_attention``, ``native_layer_norm``, ...).

API (three names)::

    with forbid("1.1"):                       # raises ForbiddenRoute at the first fused call
        attention.scaled_dot_product_attention(q, k, v)
    with forbid("1.1", raise_=False) as used: # or only records them
        ...
    used  # ["F.scaled_dot_product_attention", ...]
    with allowed():                           # references inside a test may use the kernels
        expected = F.scaled_dot_product_attention(q, k, v)

Groups: ``"attention"`` (default) and ``"layer_norm"``. Backward kernels are never flagged: a
backward pass implies a forward call, which is where the route is caught.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["ForbiddenRoute", "allowed", "forbid", "GROUPS"]

# Function-level names (``func.__name__``) and ATen kernel names (``OpOverload.name()`` without
# the "aten::" namespace and the overload) per group.
GROUPS: dict[str, dict[str, frozenset[str]]] = {
    "attention": {
        "functions": frozenset({
            "scaled_dot_product_attention", "multi_head_attention_forward", "_native_multi_head_attention",
            "_scaled_dot_product_attention_math", "_scaled_dot_product_flash_attention",
            "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
            "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_fused_attention_overrideable",
            "_scaled_dot_product_attention_math_for_mps", "_transformer_encoder_layer_fwd",
        }),
        "kernels": frozenset({
            "scaled_dot_product_attention", "_scaled_dot_product_attention_math", "_safe_softmax",
            "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
            "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps",
            "_flash_attention_forward", "_efficient_attention_forward", "_native_multi_head_attention",
            "_transformer_encoder_layer_fwd", "_masked_softmax",
        }),
    },
    "layer_norm": {
        "functions": frozenset({"layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm"}),
        "kernels": frozenset({"layer_norm", "native_layer_norm", "_fused_rms_norm"}),
    },
}
LABELS = {  # how a route is named to the student
    "scaled_dot_product_attention": "F.scaled_dot_product_attention",
    "multi_head_attention_forward": "nn.MultiheadAttention (F.multi_head_attention_forward)",
    "_native_multi_head_attention": "nn.MultiheadAttention's fused kernel",
    "layer_norm": "F.layer_norm / nn.LayerNorm",
    "native_layer_norm": "F.layer_norm / nn.LayerNorm",
}
_state = threading.local()


class ForbiddenRoute(AssertionError):
    """A task that must be written by hand reached one of PyTorch's fused kernels."""


@contextlib.contextmanager
def allowed() -> Iterator[None]:
    """Suspend every ``forbid`` in this thread (for the reference computations of a test)."""
    _state.allowed = getattr(_state, "allowed", 0) + 1
    try:
        yield
    finally:
        _state.allowed -= 1


def _name(func) -> str:
    name = getattr(func, "__name__", "") or ""
    if isinstance(func, torch._ops.OpOverload):
        name = func._schema.name.split("::")[-1]
    return name.split(".")[0]


class _Guard:
    def __init__(self, task: str, groups: tuple[str, ...], raise_: bool, used: list[str]):
        self.task, self.raise_, self.used = task, raise_, used
        self.functions = frozenset().union(*(GROUPS[g]["functions"] for g in groups))
        self.kernels = frozenset().union(*(GROUPS[g]["kernels"] for g in groups))

    def hit(self, name: str, level: str) -> None:
        if getattr(_state, "allowed", 0) or "backward" in name:
            return
        label = LABELS.get(name, f"torch's {name}")
        if label not in self.used:
            self.used.append(label)
        if self.raise_:
            raise ForbiddenRoute(f"Task {self.task} must be written by hand: it may not call {label} "
                                 f"(reached {level}); compute it from matmul, torch.softmax and elementwise operations")


class _FunctionMode(TorchFunctionMode):
    def __init__(self, guard: _Guard):
        super().__init__()
        self.guard = guard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = _name(func)
        if name in self.guard.functions:
            self.guard.hit(name, f"as {name}")
        return func(*args, **(kwargs or {}))


class _DispatchMode(TorchDispatchMode):
    def __init__(self, guard: _Guard):
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = _name(func)
        if name in self.guard.kernels:
            self.guard.hit(name, f"as the ATen kernel aten::{name}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbid(task: str, *groups: str, raise_: bool = True) -> Iterator[list[str]]:
    """While the block runs, PyTorch's fused routes of ``groups`` (default ``"attention"``) are forbidden.

    Args:
        task: the task id named in the error, e.g. ``"1.1"``.
        groups: ``"attention"`` and/or ``"layer_norm"``.
        raise_: raise ``ForbiddenRoute`` at the first use (default); False only records.

    Yields:
        the list of routes used (labels such as ``"F.scaled_dot_product_attention"``), filled as they run.
    """
    groups = groups or ("attention",)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"forbid: unknown groups {sorted(unknown)}; known: {sorted(GROUPS)}")
    used: list[str] = []
    guard = _Guard(task, groups, raise_, used)
    with _FunctionMode(guard), _DispatchMode(guard):
        yield used
