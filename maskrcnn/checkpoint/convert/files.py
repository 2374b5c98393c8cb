"""Reading weight files of any supported framework without ever running code from them.

``.pth`` (zip) files go through ``torch.load(weights_only=True)``. Plain pickles (detectron2
model-zoo and Detectron ``.pkl`` files) go through a restricted unpickler that can only build
numpy arrays, numpy scalars and plain containers: any other global a pickle names
(``os.system``, ``builtins.eval``, ...) is refused when it is looked up, before anything could
call it. Python-2 pickles (Detectron) are read with ``encoding="latin1"``.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import zipfile
from typing import Any, Mapping, Optional, Tuple

import torch

from .api import convert_state_dict
from .detect import UNKNOWN, detect_format, unwrap
from .report import ConversionReport

__all__ = ["UnsafePickleError", "safe_pickle_load", "read_weights_file", "load_weights_file"]

logger = logging.getLogger(__name__)

# (module, name) a weights pickle may reference. numpy 2 moved numpy.core to numpy._core;
# both spellings are accepted and resolved to whichever this numpy has.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}
# The first object of a legacy (non-zip) torch.save file.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than numpy arrays and plain containers."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        canonical = module.replace("numpy._core", "numpy.core", 1)
        if (canonical, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self._path}: refusing to load '{module}.{name}' from this pickle. Weight files may "
                "only contain numpy arrays and plain containers; a pickle that names other "
                "objects can run arbitrary code, so it is not loaded.")
        for candidate in (canonical.replace("numpy.core", "numpy._core", 1), canonical):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise UnsafePickleError(f"{self._path}: cannot resolve '{module}.{name}'")


def safe_pickle_load(path: str) -> Any:
    """Unpickles ``path`` allowing only numpy arrays / scalars and plain containers.

    Args:
        path: a ``.pkl`` file (Python 2 or 3 pickle).

    Returns:
        The unpickled object (dicts of numpy arrays, strings, numbers).

    Raises:
        UnsafePickleError: the pickle names any other global (nothing from it is executed).
    """
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, path).load()


def _torch_load(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        detail = next((ln for ln in lines if "global" in ln.lower()), lines[-1])
        raise UnsafePickleError(
            f"{path}: refusing to load: it contains pickled objects other than tensors and plain "
            f"containers (torch.load(weights_only=True) refused: {detail})") from e


def read_weights_file(path: str) -> Any:
    """Loads a ``.pth`` / ``.pkl`` weights file safely (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: the file would need arbitrary code to load.
        RuntimeError: the file is neither a torch file nor a pickle (message names the file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if zipfile.is_zipfile(path):
        return _torch_load(path)
    try:
        obj = safe_pickle_load(path)
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated, not a pickle at all, ...
        raise RuntimeError(f"{path} is not a readable weights file (neither a torch zip file nor a "
                           f"pickle): {type(e).__name__}: {e}") from e
    if isinstance(obj, int) and obj == _TORCH_LEGACY_MAGIC:
        return _torch_load(path)
    return obj


def load_weights_file(path: str, model_state: Optional[Mapping[str, Any]] = None,
                      source: str = "auto", log: Optional[logging.Logger] = None
                      ) -> Tuple["dict[str, torch.Tensor]", ConversionReport]:
    """Reads weights of any supported framework and returns them in this project's names.

    The one call for ``MODEL.WEIGHT``: the result goes straight to ``load_model_state``.

    Args:
        path: a local ``.pth`` or ``.pkl`` file (torchvision, torchvision ImageNet ResNet,
            detectron2, maskrcnn-benchmark, Detectron/Caffe2, or this project's own).
        model_state: the target model's ``state_dict()``, for the report (uninitialised
            tensors, shape mismatches) and to match its norm layers.
        source: a format name, or ``"auto"`` to detect it.
        log: logger for the report; this module's when None.

    Returns:
        ``(state_dict, report)``: our names -> tensors, and what was mapped / skipped /
        left uninitialised, with the config the weights expect in ``report.recommended_config``.

    Raises:
        FileNotFoundError, UnsafePickleError, RuntimeError: see ``read_weights_file``.
        ValueError: the format is not recognised (message names the file and a few keys).
    """
    path = os.fspath(path)
    obj = read_weights_file(path)
    if source == "auto":
        source = detect_format(obj)
    if source == UNKNOWN:
        raise ValueError(f"{path}: unrecognised weights format; {_describe(obj)}. Supported: this "
                         "project's checkpoints, torchvision (detection and ImageNet ResNets), "
                         "detectron2, maskrcnn-benchmark and Detectron/Caffe2 .pkl files")
    try:
        state, report = convert_state_dict(obj, source, model_state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    report.log(log or logger, where=path)
    return state, report


def _describe(obj: Any) -> str:
    try:
        state, extras = unwrap(obj)
    except TypeError:
        return f"it holds a {type(obj).__name__}, not a dict of tensors"
    keys = [str(k) for k in list(state)[:6]]
    more = f" (and {len(state) - 6} more)" if len(state) > 6 else ""
    top = f"; other top-level entries: {sorted(map(str, extras))[:6]}" if extras else ""
    return f"its first names are {keys}{more}{top}"
