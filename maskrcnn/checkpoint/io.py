"""Checkpoint files on disk: the one atomic writer and the one safe reader.

Writes go through a temporary sibling, fsync and ``os.replace``: a reader (or a process killed
meanwhile) sees the old file or the complete new one, never a partial file under the final name.

Reads never run code from a file. Torch files (zip, or the legacy format) go through
``torch.load(weights_only=True)``. Plain pickles (detectron2 model-zoo and Detectron ``.pkl``
files) go through a restricted unpickler that builds only numpy arrays, numpy scalars and plain
containers: any other global a pickle names (``os.system``, ``builtins.eval``, ...) is refused
when it is looked up, before anything could call it. Python-2 pickles (Detectron) are read with
``encoding="latin1"``.
"""
from __future__ import annotations

import importlib
import os
import pickle
import secrets
from typing import Any, BinaryIO, Callable, Mapping

import torch

from ..utils.errors import WeightsError

__all__ = ["CheckpointError", "UnsafePickleError", "atomic_write", "read_checkpoint", "safe_load"]


class CheckpointError(WeightsError, RuntimeError):
    """A checkpoint or weights file cannot be used: corrupt, truncated, unsafe, or not a checkpoint."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint or weights file that does not exist."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """A file asked for pickled objects other than tensors, arrays and plain containers."""


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
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
# The first object of a legacy (non-zip) torch.save file.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], None]) -> None:
    """Writes ``path`` via a temporary sibling ``.NAME.*.tmp``, fsync and ``os.replace``.

    Readers see either the old file or the complete new one; a process killed meanwhile leaves
    only the temporary file behind. The directory is created when missing, and the file gets
    the permissions of a plain ``open()`` (the umask applies).

    Args:
        path: Destination.
        write_fn: Writes the content to the binary file object it is given, e.g.
            ``lambda f: torch.save(obj, f)``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    while True:  # like mkstemp, but with the permissions of a plain open()
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # persist the rename itself; not supported everywhere
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _refused(path: str, detail: str) -> UnsafePickleError:
    return UnsafePickleError(
        f"{path} is not a valid checkpoint: it contains pickled objects other than tensors, "
        f"arrays and plain containers, and loading arbitrary pickles is refused for safety "
        f"({detail}). Load it with weights_only=False only if you trust whoever made the file.")


def _corrupt(path: str, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a valid checkpoint (corrupt or truncated): {type(error).__name__}: {error}")


class _NumpyUnpickler(pickle.Unpickler):
    """Finds only the globals of ``_ALLOWED_GLOBALS``; refuses every other one by name."""

    def __init__(self, file: BinaryIO, path: str) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        canonical = module.replace("numpy._core", "numpy.core", 1)
        if (canonical, name) not in _ALLOWED_GLOBALS:
            raise _refused(self._path, f"the pickle names '{module}.{name}'")
        for candidate in (canonical.replace("numpy.core", "numpy._core", 1), canonical):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise _refused(self._path, f"cannot resolve '{module}.{name}'")


def _torch_load(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "global" in ln.lower()), None)
        if detail is None:
            raise _corrupt(path, e) from e
        detail = detail.split(" Please use")[0].rstrip(".")
        raise _refused(path, f"torch.load(weights_only=True): {detail}") from e
    except Exception as e:  # zip errors, EOFError, bad magic number, ...
        raise _corrupt(path, e) from e


def safe_load(path: str | os.PathLike) -> Any:
    """Reads a torch file or a numpy pickle without ever running code from it.

    Args:
        path: A ``torch.save`` file (zip or legacy) or a plain pickle of numpy arrays
            (``.pkl`` files of detectron2 and Detectron, Python 2 or 3).

    Returns:
        The loaded object (tensors on the CPU, numpy arrays, plain containers).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: The file names other objects (refused, never executed).
        CheckpointError: The file is corrupt, truncated or not a pickle; the message names it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
    with open(path, "rb") as f:
        if f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC:
            return _torch_load(path)
        f.seek(0)
        try:
            obj = _NumpyUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except Exception as e:  # truncated, not a pickle at all, ...
            raise _corrupt(path, e) from e
    if isinstance(obj, int) and obj == _TORCH_LEGACY_MAGIC:
        return _torch_load(path)
    return obj


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a checkpoint with ``safe_load`` and puts the model state under ``"model"``.

    Args:
        path: A dict with a ``"model"`` key, a ``{"state_dict": ...}`` dict or a raw state dict.

    Returns:
        A dict with the model state under ``"model"`` and the file's other entries.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: The file is corrupt, truncated, unsafe (``UnsafePickleError``) or not
            a dict; the message names the file.
    """
    data = safe_load(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"{os.fspath(path)} is not a valid checkpoint: expected a dict, got {type(data).__name__}")
    if "model" not in data:
        if "state_dict" in data and isinstance(data["state_dict"], Mapping):
            rest = {k: v for k, v in data.items() if k != "state_dict"}
            return {"model": data["state_dict"], **rest}
        return {"model": data}  # a raw state dict
    return dict(data)
