"""A guard that finds tensors which the code under test creates on the default device.

On a GPU the data lives on ``cuda`` while a factory call without ``device=`` (``torch.zeros(n)``,
``torch.tensor(values)``, ``torch.arange(n)``, ...) still makes a CPU tensor. The first op that
mixes the two fails, or, for some ops, copies silently and makes the host wait. On the CPU both
are the same device and nothing shows. ``stray_factories_on_meta()`` makes them differ here:
while it is active, every factory call *made from this project's code* (``maskrcnn/``) without
a ``device`` argument creates its tensor on the ``meta`` device, which holds no data, so the
first op that mixes it with the CPU data raises "Tensor on device meta is not on the expected
device cpu", naming the line. Calls from torch and torchvision are left alone: on a GPU they
run as their authors meant, and their own CPU scalars are theirs to place.

``as_tensor`` / ``asarray`` of a tensor keep that tensor's device without a ``device`` argument,
so they are left alone too.

Some ops accept a ``meta`` tensor beside CPU data without complaint: indexing (``x[i]``,
``x[i] = v``), ``index_select``, ``gather``, ``scatter_``, ``index_put_`` return a ``meta`` result
or write nothing. On a GPU the same stray index is an error for some of them and, for indexing, a
copy to the device that makes the host wait. So the guard itself checks every op's tensor
arguments (and those in a list or tuple argument, as indices are passed) and raises when a
``meta`` tensor meets one on another device, naming the op.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

PACKAGE = os.path.join(os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")), "maskrcnn") + os.sep
_KEEPS_DEVICE = {torch.as_tensor, torch.asarray}


def _called_from_package() -> bool:
    """Whether the factory's direct caller (two frames up: past ``__torch_function__``) is a
    line of ``maskrcnn/``; a call made by torch's own Python code (e.g. a sampler of
    ``torch.utils.data``) is torch's."""
    return os.path.abspath(sys._getframe(2).f_code.co_filename).startswith(PACKAGE)


def _tensors(values) -> Iterator[torch.Tensor]:
    for v in values:
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from (t for t in v if isinstance(t, torch.Tensor))


def _refuse_mixed_devices(func, args, kwargs) -> None:
    devices = {t.device.type for t in _tensors((*args, *kwargs.values()))}
    if "meta" in devices and len(devices) > 1:
        others = ", ".join(sorted(devices - {"meta"}))
        raise RuntimeError(f"{getattr(func, '__qualname__', func)}: a tensor on device meta (made without "
                           f"device= in maskrcnn/) meets one on {others}")


class _StrayFactoriesOnMeta(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.redirected = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        _refuse_mixed_devices(func, args, kwargs)
        if (func in _device_constructors() and kwargs.get("device") is None
                and not (func in _KEEPS_DEVICE and args and isinstance(args[0], torch.Tensor))
                and _called_from_package()):
            kwargs = dict(kwargs, device="meta")
            self.redirected += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def stray_factories_on_meta() -> Iterator[_StrayFactoriesOnMeta]:
    """Redirect the project's device-less factory calls to ``meta`` while active."""
    mode = _StrayFactoriesOnMeta()
    with mode:
        yield mode
