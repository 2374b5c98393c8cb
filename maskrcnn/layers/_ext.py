"""Lazy loader of the optional compiled ops (``maskrcnn._C``, built from ``csrc/``).

``maskrcnn._C`` is imported on first use, never at package import. If it is missing or fails
to load, the pure-PyTorch paths run. The outcome is logged once per process, at INFO, as
exactly one of::

    mask pasting: CUDA kernel from maskrcnn._C
    mask pasting: pure-PyTorch path (extension not built: <reason>)
"""
from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Optional, Tuple

import torch

__all__ = ["paste_ops", "load_status"]

logger = logging.getLogger(__name__)

_EXTENSION = "maskrcnn._C"
_lock = threading.Lock()
_state: Optional[Tuple[Optional[Any], str]] = None  # (torch.ops.maskrcnn_ops or None, reason)


def _load() -> Tuple[Optional[Any], str]:
    try:
        importlib.import_module(_EXTENSION)
        ops = torch.ops.maskrcnn_ops
        for name in ("paste_masks", "paste_masks_packed"):
            getattr(ops, name)  # raises if the library lacks the op (stale build)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the PyTorch path
        return None, f"{type(exc).__name__}: {exc}"
    return ops, ""


def load_status() -> Tuple[bool, str]:
    """Load the extension if not yet tried; return ``(loaded, reason it is not)``."""
    global _state
    with _lock:
        if _state is None:
            _state = _load()
            if _state[0] is not None:
                logger.info("mask pasting: CUDA kernel from %s", _EXTENSION)
            else:
                logger.info("mask pasting: pure-PyTorch path (extension not built: %s)", _state[1])
    return _state[0] is not None, _state[1]


def paste_ops() -> Optional[Any]:
    """``torch.ops.maskrcnn_ops`` when ``maskrcnn._C`` loads, else ``None``."""
    load_status()
    return _state[0]


def _reset() -> None:
    """Forget the outcome (tests only): the next call loads and logs again."""
    global _state
    with _lock:
        _state = None
