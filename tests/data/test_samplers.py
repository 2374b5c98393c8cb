"""Grouped, iteration-based, training and inference samplers; batch-size splitting."""
import pytest
import torch
from torch.utils.data import BatchSampler

from maskrcnn.data import build as build_module
from maskrcnn.data.collate import BatchCollator
from maskrcnn.data.samplers import (GroupedBatchSampler, InferenceSampler, IterationBasedBatchSampler,
                                    TrainingSampler)

GROUPS = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0]


def _grouped(seed=0, batch_size=3, rank=0, replicas=1):
    sampler = TrainingSampler(range(len(GROUPS)), num_replicas=replicas, rank=rank, seed=seed)
    return GroupedBatchSampler(sampler, GROUPS, batch_size)


def test_grouped_batches_single_group_and_cover_all():
    batches = list(_grouped())
    for b in batches:
        assert len({GROUPS[i] for i in b}) == 1 and 1 <= len(b) <= 3
    assert sorted(i for b in batches for i in b) == list(range(len(GROUPS)))
    assert len(_grouped()) == len(batches)
    full = list(GroupedBatchSampler(_grouped().sampler, GROUPS, 3, drop_uneven=True))
    assert all(len(b) == 3 for b in full)


def test_training_sampler_splits_across_ranks():
    parts = [list(TrainingSampler(range(10), num_replicas=2, rank=r, seed=3)) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(10))
    s = TrainingSampler(range(10), num_replicas=1, rank=0, seed=3)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first and sorted(list(s)) == list(range(10))


def test_iteration_based_exact_count_and_resume():
    full = list(IterationBasedBatchSampler(_grouped(), 17, 0))
    assert len(full) == 17 == len(IterationBasedBatchSampler(_grouped(), 17, 0))
    epoch_len = len(_grouped())
    assert full[:epoch_len] != full[epoch_len:2 * epoch_len]  # new shuffle each epoch
    for start in (1, 5, epoch_len, 12, 16, 17):
        resumed = IterationBasedBatchSampler(_grouped(), 17, start)
        assert list(resumed) == full[start:] and len(resumed) == 17 - start


def test_iteration_based_with_plain_batch_sampler():
    def make():
        return BatchSampler(TrainingSampler(range(7), num_replicas=1, rank=0, seed=1), 2, False)
    full = list(IterationBasedBatchSampler(make(), 11))
    assert len(full) == 11 and list(IterationBasedBatchSampler(make(), 11, 6)) == full[6:]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("size", [0, 1, 2, 7, 10])
def test_inference_sampler_shards(world, size):
    shards = [list(InferenceSampler(size, num_replicas=world, rank=r)) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(size))
    assert [len(InferenceSampler(size, world, r)) for r in range(world)] == [len(s) for s in shards]
    for s in shards:
        assert s == list(range(s[0], s[0] + len(s))) if s else True
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_per_process_batch_size(monkeypatch):
    monkeypatch.setattr(build_module, "get_world_size_and_rank", lambda: (4, 0))
    assert build_module.per_process_batch_size(8, "SOLVER.IMS_PER_BATCH") == 2
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH"):
        build_module.per_process_batch_size(6, "SOLVER.IMS_PER_BATCH")


def test_batch_collator_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), None, {"image_id": 1}), (torch.zeros(3, 6, 2), None, {"image_id": 2})]
    images, targets, infos = BatchCollator()(batch)
    assert [i.shape[1:] for i in images] == [(4, 5), (6, 2)]
    assert targets == [None, None] and [i["image_id"] for i in infos] == [1, 2]
