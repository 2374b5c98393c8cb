"""Fixtures for tests/layers (imported by the tests that use them; not a conftest.py, so that
``from conftest import ...`` in other folders keeps finding tests/conftest.py): the CPU twin of the CUDA mask-pasting kernel, in every run.

A plain ``pip install -e .`` never builds ``maskrcnn._C``, so without help the tests of the
kernel's arithmetic (its CPU reference op, compiled from the same ``paste_masks.h`` as the
CUDA kernel) and of the host side of the kernel path (``mask_ops._kernel_counts``: packing
the windows, offsets, encoding) would always skip. :func:`cpu_twin` compiles the CPU half of
the extension (``csrc/register.cpp`` + ``csrc/paste_masks/paste_masks_cpu.cpp``) with the C++
compiler alone (``torch.utils.cpp_extension.load``: no nvcc, no CUDA), once per test session,
into a folder per torch version of torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``), where later sessions find it built. Releases of torch before
the advisory lock (2.11 and older: a ``lock`` file whose mere existence blocks) wait forever on
a ``lock`` left there by a killed build, or by a newer torch, whose advisory lock file stays
after every build: that is why the folder is per torch version, and why, with those releases, a
lock older than :data:`STALE_LOCK_S` is removed, with a warning, before the build. About 15 s of compiling
on a quiet 2-core machine, a minute under load.

Without a C++ compiler or ninja the tests skip, with the reason; with
``MASKRCNN_REQUIRE_CPU_TWIN=1`` (``.ci/run`` sets it) that is a failure instead. A compile
error always fails. When ``maskrcnn._C`` is built in the checkout it is used as it is: the
library of the namespace ``maskrcnn_ops`` can be loaded only once per process.
"""
import importlib
import os
import shutil
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
import torch

from maskrcnn.layers import _ext

CSRC = Path(__file__).resolve().parents[2] / "csrc"
TWIN_NAME = "maskrcnn_paste_cpu_twin"
TWIN_SOURCES = ("register.cpp", "paste_masks/paste_masks_cpu.cpp")
# as setup.py: no contraction into FMAs, results equal the pure-PyTorch path bit for bit
TWIN_CFLAGS = ("-O3", "-ffp-contract=off")
STALE_LOCK_S = 900  # a compile of the twin takes seconds to a minute


def _missing_tools() -> str:
    """Why the twin cannot be compiled here ("" when it can)."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} is not on PATH; set CXX or install g++)"
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja, part of pip install -e \".[test]\")"
    return ""


def _lock_blocks_by_existing() -> bool:
    """Whether this torch's extension build waits while its ``lock`` file exists (``FileBaton``,
    2.11 and older); 2.14 holds an OS advisory lock (``FileLock``) instead, which the kernel
    releases when its holder dies, on a file that stays."""
    from torch.utils import cpp_extension

    return not hasattr(cpp_extension, "FileLock")


def _build_directory() -> str:
    """The twin's build folder: one per torch version, so that two environments do not rebuild
    each other's copy. With a torch whose build lock is a file that blocks by existing, a stale
    one (of a killed build) is removed."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    folder = os.path.join(root, f"{TWIN_NAME}_torch{torch.__version__}")
    os.makedirs(folder, exist_ok=True)
    lock = os.path.join(folder, "lock")
    if (_lock_blocks_by_existing() and os.path.exists(lock)
            and time.time() - os.path.getmtime(lock) > STALE_LOCK_S):
        warnings.warn(f"removed {lock}, left by a build killed over {STALE_LOCK_S} s ago "
                      "(torch would wait for it forever)")
        os.remove(lock)
    return folder


def _build_twin() -> types.ModuleType:
    from torch.utils import cpp_extension

    return cpp_extension.load(
        name=TWIN_NAME, sources=[str(CSRC / s) for s in TWIN_SOURCES], build_directory=_build_directory(),
        extra_include_paths=[str(CSRC)], extra_cflags=list(TWIN_CFLAGS), verbose=False)


@pytest.fixture(scope="session")
def cpu_twin() -> types.ModuleType:
    """The module that registers ``torch.ops.maskrcnn_ops`` with its CPU implementations."""
    try:
        return importlib.import_module("maskrcnn._C")
    except ImportError:
        pass
    missing = _missing_tools()
    if missing:
        message = f"cannot compile the CPU twin of maskrcnn._C from csrc/: {missing}"
        if os.environ.get("MASKRCNN_REQUIRE_CPU_TWIN") == "1":
            pytest.fail(message + " (MASKRCNN_REQUIRE_CPU_TWIN=1)")
        pytest.skip(message)
    return _build_twin()


@pytest.fixture
def twin_ops(cpu_twin, monkeypatch):
    """``torch.ops.maskrcnn_ops`` with the loader of :mod:`maskrcnn.layers._ext` pointed at the
    twin (as if it were ``maskrcnn._C``) for one test, so ``_ext.paste_ops()`` returns it."""
    monkeypatch.setitem(sys.modules, "maskrcnn._C", cpu_twin)
    _ext._reset()
    loaded, reason = _ext.load_status()
    assert loaded, reason
    yield torch.ops.maskrcnn_ops
    _ext._reset()
