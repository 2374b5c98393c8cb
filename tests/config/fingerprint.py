"""A comparable summary of everything an object built from a config holds, for the key walk.

Two builds from configs that differ in one key must differ in their fingerprint if the key was
honoured: module types and attributes, parameter / buffer shapes, values and ``requires_grad``,
plain attributes of helper objects (matchers, samplers, selectors, losses, hooks), closures,
samplers and loaders, recursively.
"""
import hashlib
import logging
import types
from typing import Any, Set

import torch
from torch import nn

_MODULE_INTERNALS = ("_parameters", "_buffers", "_modules")


def _tensor(t: torch.Tensor) -> tuple:
    head = ("tensor", tuple(t.shape), str(t.dtype), t.device.type, bool(t.requires_grad))
    if t.device.type == "meta":
        return head
    data = t.detach().to("cpu").contiguous()
    if data.dtype == torch.bfloat16:
        data = data.float()
    return head + (hashlib.sha1(data.numpy().tobytes()).hexdigest(),)


def fingerprint(obj: Any, _seen: Set[int] = None) -> Any:
    """Nested tuples / dicts of plain values describing ``obj`` (deterministic for equal builds)."""
    seen = set() if _seen is None else _seen
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, (torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return _tensor(obj)
    if isinstance(obj, torch.Generator):
        return ("generator", obj.initial_seed())
    if isinstance(obj, (logging.Logger, types.ModuleType, type)):
        return (type(obj).__name__, getattr(obj, "__name__", getattr(obj, "name", "")))
    if id(obj) in seen:
        return ("seen", type(obj).__qualname__)
    seen.add(id(obj))
    fp = lambda v: fingerprint(v, seen)  # noqa: E731
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [fp(v) for v in obj])
    if isinstance(obj, dict):
        return {str(k): fp(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return ("set", sorted(repr(fp(v)) for v in obj))
    if isinstance(obj, nn.Module):
        attrs = {k: fp(v) for k, v in vars(obj).items() if not k.startswith("_") and k != "training"}
        return (type(obj).__qualname__, attrs, [fp(getattr(obj, k)) for k in _MODULE_INTERNALS])
    if isinstance(obj, types.MethodType):
        return ("method", obj.__func__.__qualname__, fp(obj.__self__))
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        cells = [c.cell_contents for c in (getattr(obj, "__closure__", None) or ()) if _filled(c)]
        return ("function", obj.__qualname__, fp(cells), fp(getattr(obj, "__defaults__", None)))
    if hasattr(obj, "__dict__"):
        return (type(obj).__qualname__, {k: fp(v) for k, v in vars(obj).items()})
    return (type(obj).__qualname__,)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True
