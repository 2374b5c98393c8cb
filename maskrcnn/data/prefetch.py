"""Batches to the device ahead of time: the copy of batch i + 1 overlaps the step on batch i.

:class:`DevicePrefetcher` wraps a loader of ``(images, targets, infos)`` batches. On a CUDA
device it copies each batch with ``non_blocking=True`` on a side stream while the current step
runs on the default stream, every tensor of the targets included (``BoxList.to`` and
``InstanceMasks.to`` pass ``non_blocking`` on); the loader should pin its memory
(``pin_memory=True``, as :func:`maskrcnn.data.build.build_train_loader` does for a CUDA model:
the images, and the targets through ``BoxList.pin_memory``), otherwise the copies of pageable
memory are synchronous. On any other device it is a pass-through: the loader's own
batches, in order, untouched.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, List, Optional, Set

import torch

__all__ = ["DevicePrefetcher", "to_device"]

_END = object()


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``obj`` with every tensor on ``device``: tensors, lists, tuples, dicts, and objects with a
    ``to(device, non_blocking=...)`` method (BoxList, InstanceMasks); anything else as it is."""
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device, non_blocking) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else type(obj)(moved)  # namedtuples too
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor) or (callable(getattr(obj, "to", None)) and not isinstance(obj, type)):
        return obj.to(device, non_blocking=non_blocking)
    return obj


def _cuda_tensors(obj: Any, seen: Optional[Set[int]] = None) -> List[torch.Tensor]:
    """Every CUDA tensor reachable from ``obj`` (containers and object attributes)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_cuda else []
    if isinstance(obj, dict):
        values: Iterable = obj.values()
    elif isinstance(obj, (list, tuple)):
        values = obj
    elif hasattr(obj, "__dict__"):
        values = vars(obj).values()
    else:
        return []
    return [t for v in values for t in _cuda_tensors(v, seen)]


class DevicePrefetcher:
    """Iterates over ``loader`` yielding its batches with every tensor on ``device``.

    On CUDA, batch i + 1 is fetched from the loader and its copy is queued on a side stream
    before batch i is handed out; the default stream waits for that copy only when batch i + 1
    is handed out, and each copied tensor is recorded on the default stream so that its memory
    is not reused while the step still reads it.

    Args:
        loader: any iterable of batches (e.g. a DataLoader of ``(images, targets, infos)``).
        device: where the model runs.
    """

    def __init__(self, loader: Iterable, device: torch.device | str) -> None:
        self.loader = loader
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.device.type != "cuda":
            yield from self.loader
            return
        stream = torch.cuda.Stream(device=self.device)
        batches = iter(self.loader)
        upcoming = self._copy(batches, stream)
        while upcoming is not _END:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            for t in _cuda_tensors(upcoming):
                t.record_stream(current)
            batch, upcoming = upcoming, self._copy(batches, stream)
            yield batch

    def _copy(self, batches: Iterator[Any], stream: "torch.cuda.Stream") -> Any:
        """The next batch, its copy queued on ``stream``; ``_END`` after the last one."""
        try:
            batch = next(batches)
        except StopIteration:
            return _END
        with torch.cuda.stream(stream):
            return to_device(batch, self.device, non_blocking=True)
