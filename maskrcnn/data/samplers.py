"""Samplers: aspect-ratio grouping, iteration-based (resumable) batching, inference shards."""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["GroupedBatchSampler", "IterationBasedBatchSampler", "InferenceSampler",
           "DistributedSampler", "TrainingSampler", "get_world_size_and_rank"]


def get_world_size_and_rank() -> Tuple[int, int]:
    """``(world_size, rank)`` of the default process group, ``(1, 0)`` when not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class TrainingSampler(DistributedSampler):
    """Shuffled, rank-split sampler (``DistributedSampler`` that also works without a process group).

    Args:
        dataset: sized dataset.
        num_replicas: number of processes (default: world size, 1 when not distributed).
        rank: this process' rank (default: current rank, 0 when not distributed).
        shuffle: shuffle per epoch (``set_epoch``) with ``seed``.
        seed: shuffling seed, identical on every rank.
    """

    def __init__(self, dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0) -> None:
        world, this_rank = get_world_size_and_rank()
        super().__init__(dataset, num_replicas=world if num_replicas is None else num_replicas,
                         rank=this_rank if rank is None else rank, shuffle=shuffle, seed=seed)


class GroupedBatchSampler(Sampler[List[int]]):
    """Batches whose elements share a group id (e.g. portrait vs landscape).

    Follows maskrcnn-benchmark: indices are taken in the sampler's order,
    split per group into chunks of ``batch_size``, and the chunks are ordered by
    the position of their first element. Leftover partial chunks are kept
    unless ``drop_uneven``.

    Args:
        sampler: base sampler yielding dataset indices.
        group_ids: group id of every dataset index.
        batch_size: images per batch.
        drop_uneven: drop incomplete batches.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int,
                 drop_uneven: bool = False) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.group_ids = torch.as_tensor(list(group_ids), dtype=torch.int64, device="cpu")
        self.batch_size = int(batch_size)
        self.drop_uneven = drop_uneven

    def _prepare_batches(self) -> List[List[int]]:
        sampled = torch.as_tensor(list(self.sampler), dtype=torch.int64, device="cpu")
        if sampled.numel() == 0:
            return []
        groups = self.group_ids[sampled]
        chunks: List[torch.Tensor] = []
        for g in torch.unique(groups).tolist():
            positions = torch.nonzero(groups == g, as_tuple=False).flatten()
            chunks.extend(positions.split(self.batch_size))
        if self.drop_uneven:
            chunks = [c for c in chunks if c.numel() == self.batch_size]
        chunks.sort(key=lambda c: int(c[0]))
        return [sampled[c].tolist() for c in chunks]

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._prepare_batches())

    def __len__(self) -> int:
        return len(self._prepare_batches())


class IterationBasedBatchSampler(Sampler[List[int]]):
    """Repeat a batch sampler over epochs until ``num_iterations`` batches in total.

    Epoch ``e`` calls ``set_epoch(e)`` on the inner sampler (when it has one),
    so each pass is a new shuffle. Starting at ``start_iter`` yields exactly the
    tail (batches ``start_iter .. num_iterations - 1``) of the uninterrupted
    sequence: whole epochs are skipped by length, the rest batch by batch.

    Args:
        batch_sampler: sampler of batches (its ``.sampler`` may have ``set_epoch``).
        num_iterations: total number of batches of the whole run.
        start_iter: number of batches already consumed (resume point).
    """

    def __init__(self, batch_sampler: Sampler[List[int]], num_iterations: int, start_iter: int = 0) -> None:
        if start_iter < 0 or num_iterations < 0:
            raise ValueError("num_iterations and start_iter must be non-negative")
        self.batch_sampler = batch_sampler
        self.num_iterations = int(num_iterations)
        self.start_iter = int(start_iter)

    def _set_epoch(self, epoch: int) -> None:
        for obj in (self.batch_sampler, getattr(self.batch_sampler, "sampler", None)):
            if obj is not None and hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    def __iter__(self) -> Iterator[List[int]]:
        iteration, epoch, skip = self.start_iter, 0, self.start_iter
        while iteration < self.num_iterations:
            self._set_epoch(epoch)
            epoch += 1
            if skip > 0:
                n = len(self.batch_sampler)
                if n == 0:
                    raise RuntimeError("IterationBasedBatchSampler: the batch sampler is empty")
                if skip >= n:
                    skip -= n
                    continue
            produced = 0
            for batch in self.batch_sampler:
                produced += 1
                if skip > 0:
                    skip -= 1
                    continue
                yield batch
                iteration += 1
                if iteration >= self.num_iterations:
                    return
            if produced == 0:
                raise RuntimeError("IterationBasedBatchSampler: the batch sampler is empty")

    def __len__(self) -> int:
        return max(0, self.num_iterations - self.start_iter)

    def position(self, iteration: int) -> Tuple[int, int]:
        """``(epoch, batch index within that epoch)`` of the batch after ``iteration`` batches.

        This is where a run resumed at ``start_iter=iteration`` continues; it is stored in
        checkpoints to check that a resumed run reads the same sequence. The inner sampler's
        epoch is left as it was.
        """
        inner = [o for o in (self.batch_sampler, getattr(self.batch_sampler, "sampler", None))
                 if o is not None and hasattr(o, "epoch")]
        saved = [o.epoch for o in inner]
        try:
            epoch, skip = 0, int(iteration)
            while True:
                self._set_epoch(epoch)
                n = len(self.batch_sampler)
                if n == 0:
                    raise RuntimeError("IterationBasedBatchSampler: the batch sampler is empty")
                if skip < n:
                    return epoch, skip
                skip -= n
                epoch += 1
        finally:
            for o, e in zip(inner, saved):
                o.epoch = e


class InferenceSampler(Sampler[int]):
    """Contiguous, non-overlapping shard of ``range(size)`` for one rank (no padding).

    Ranks ``r < size % num_replicas`` get one extra index; the shards cover
    every index exactly once.

    Args:
        size: dataset length.
        num_replicas: number of processes (default: world size).
        rank: this process' rank (default: current rank).
    """

    def __init__(self, size: int, num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        world, this_rank = get_world_size_and_rank()
        self.size = int(size)
        self.num_replicas = world if num_replicas is None else int(num_replicas)
        self.rank = this_rank if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} out of range for {self.num_replicas} replicas")
        base, extra = divmod(self.size, self.num_replicas)
        self.begin = self.rank * base + min(self.rank, extra)
        self.end = self.begin + base + (1 if self.rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin
