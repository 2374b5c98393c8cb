"""The training state a checkpoint carries besides the weights: RNG states (loadable with
weights_only=True) and the data sampler's position."""
import random

import numpy as np
import pytest
import torch

from maskrcnn.data.build import SeededBatchSampler
from maskrcnn.data.samplers import GroupedBatchSampler, IterationBasedBatchSampler, TrainingSampler
from maskrcnn.engine.resume import get_rng_states, set_rng_states

GROUPS = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0]


def _draws():
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(),
            torch.rand(3).tolist(), torch.randperm(20).tolist())


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gauss_next behind, which must be restored too
    np.random.randn()
    torch.save({"rng": [get_rng_states()]}, tmp_path / "c.pth")
    expected = _draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert _draws() != expected
    states = torch.load(tmp_path / "c.pth", weights_only=True)["rng"][0]
    set_rng_states(states)
    assert _draws() == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_states_round_trip(tmp_path):
    torch.cuda.manual_seed_all(4)
    torch.save({"rng": [get_rng_states()]}, tmp_path / "c.pth")
    expected = torch.rand(5, device="cuda").tolist()
    torch.cuda.manual_seed_all(99)
    set_rng_states(torch.load(tmp_path / "c.pth", weights_only=True)["rng"][0])
    assert torch.rand(5, device="cuda").tolist() == expected


def _grouped(seed=0):
    sampler = TrainingSampler(range(len(GROUPS)), num_replicas=1, rank=0, seed=seed)
    return GroupedBatchSampler(sampler, GROUPS, 3)


def test_sampler_position_matches_the_sequence_and_does_not_disturb_it():
    # Grouped batching gives epochs of different lengths: count them the slow way.
    expected, epoch = [], 0
    while len(expected) <= 30:
        batches = _grouped()
        batches.sampler.set_epoch(epoch)
        expected += [(epoch, b) for b in range(len(list(batches)))]
        epoch += 1
    assert len({e for e, _ in expected[:30]}) >= 3
    sampler = IterationBasedBatchSampler(_grouped(), 30)
    reference = list(IterationBasedBatchSampler(_grouped(), 30))
    produced = []
    for it, batch in enumerate(sampler):
        produced.append(batch)
        # Asking for positions mid-iteration (as a checkpoint save does) changes nothing.
        assert sampler.position(it + 1) == expected[it + 1]
        assert sampler.position(0) == (0, 0)
    assert produced == reference


def test_seeded_batch_sampler_state():
    seeded = SeededBatchSampler(IterationBasedBatchSampler(_grouped(seed=5), 30, 7), seed=5, rank=0)
    state = seeded.state_at(7)
    assert state["seed"] == 5 and state["iteration"] == 7
    assert (state["epoch"], state["batch_in_epoch"]) == seeded.batch_sampler.position(7)
    assert state["epoch"] >= 1  # 13 images in batches of 3: at least 5 batches per epoch


def test_seeded_dataset_reseeds_only_the_cpu_generator(monkeypatch):
    """A sample's randomness depends on its seed alone; the caller's CPU stream is restored and
    the accelerators' generators are not reseeded (with NUM_WORKERS 0 the samples are made in
    the training process, whose CUDA stream must not move)."""
    from maskrcnn.data.build import SeededDataset

    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.rand(3) + index

    def reseeded(*args, **kwargs):
        raise AssertionError("an accelerator generator was reseeded")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded)
    monkeypatch.setattr(torch.cuda, "manual_seed", reseeded)
    ds = SeededDataset(Noise())
    torch.default_generator.manual_seed(0)
    expected_next = torch.rand(2)
    torch.default_generator.manual_seed(0)
    a, b, c = ds[(1, 11)], ds[(1, 11)], ds[(1, 12)]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.rand(2), expected_next)
