"""A guard that records the calls which, on a GPU, make the host wait for the device.

It runs on the CPU, where nothing waits, and finds the calls by what they are:

* at the dispatcher (a ``TorchDispatchMode``): ``_local_scalar_dense`` (``.item()``, ``int()``,
  ``float()``, ``bool()`` of a tensor), ``nonzero`` (also one-argument ``torch.where``),
  ``masked_select``, indexing or index assignment with a boolean mask, ``unique``,
  ``repeat_interleave`` without ``output_size``, ``bincount``, ``equal``, and torchvision's
  ``nms`` (its CUDA kernel copies the suppression mask to the host);
* in Python (monkeypatched methods): ``Tensor.tolist`` and ``Tensor.cpu``,
  which a CPU tensor serves without dispatching anything.

Each record names the kind of call and the innermost frame of the code under test, so a test
can compare the calls with a list of allowed sites.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections import Counter
from typing import Iterator, List, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_GUARD_FILE = os.path.abspath(__file__)

_SCALAR_OPS = {"aten._local_scalar_dense", "aten.equal", "aten.is_nonzero", "aten.item"}
_SIZE_OPS = {"aten.nonzero", "aten.masked_select", "aten._unique", "aten._unique2", "aten.unique_dim",
             "aten.unique_consecutive", "aten.bincount", "aten.argwhere"}


def _op_name(func) -> str:
    return f"{func.namespace}.{func._opname}" if hasattr(func, "_opname") else str(func)


def _has_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def classify(func, args, kwargs) -> str:
    """The kind of host-waiting call an aten op is, or ``""``."""
    name = _op_name(func)
    if name in _SCALAR_OPS:
        return "scalar"
    if name in _SIZE_OPS:
        return name.split(".")[1]
    if name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"):
        if _has_bool_index(args[1] if len(args) > 1 else kwargs.get("indices")):
            return "bool_mask_index"
    if name == "aten.repeat_interleave" and "output_size" not in kwargs and isinstance(args[0], torch.Tensor):
        if len(args) < 2 or not isinstance(args[1], int):
            return "repeat_interleave"
    if name == "torchvision.nms":
        return "nms"
    return ""


def _site() -> str:
    """``path:function`` of the innermost frame outside torch and this file (repo-relative)."""
    for frame in reversed(traceback.extract_stack()):
        path = os.path.abspath(frame.filename)
        if path == _GUARD_FILE or not path.startswith(_ROOT) or os.sep + ".venv" + os.sep in path:
            continue
        return f"{os.path.relpath(path, _ROOT)}:{frame.name}"
    for frame in reversed(traceback.extract_stack()):  # inside torch / torchvision only
        if os.path.abspath(frame.filename) != _GUARD_FILE:
            return f"{os.path.basename(frame.filename)}:{frame.name}"
    return "?"


class SyncRecorder(TorchDispatchMode):
    """Records ``(kind, site)`` of every host-waiting aten op run while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[Tuple[str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = classify(func, args, kwargs)
        if kind:
            self.calls.append((kind, _site()))
        return func(*args, **kwargs)

    def counts(self) -> Counter:
        return Counter(self.calls)


@contextlib.contextmanager
def record_syncs() -> Iterator[SyncRecorder]:
    """Record host-waiting calls (see the module docstring) in the ``with`` block."""
    recorder = SyncRecorder()
    patched = {}

    def wrap(name):
        original = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            recorder.calls.append((name, _site()))
            return original(self, *args, **kwargs)
        patched[name] = original
        setattr(torch.Tensor, name, method)

    for name in ("tolist", "cpu"):
        wrap(name)
    try:
        with recorder:
            yield recorder
    finally:
        for name, original in patched.items():
            setattr(torch.Tensor, name, original)
        sys.stdout.flush()
