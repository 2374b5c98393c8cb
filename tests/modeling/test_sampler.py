"""BalancedPositiveNegativeSampler: counts, validity, determinism, torchvision equivalence."""
import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler as TVSampler

from maskrcnn.modeling.sampler import BalancedPositiveNegativeSampler


def random_labels(gen, n, p_pos, p_ign=0.2):
    u = torch.rand(n, generator=gen)
    lab = torch.zeros(n, dtype=torch.int64)
    lab[u < p_ign] = -1
    pos = u > 1 - p_pos
    lab[pos] = torch.randint(1, 5, (int(pos.sum()),), generator=gen)  # any class >= 1 is positive
    return lab


@pytest.mark.parametrize("batch,fraction", [(256, 0.5), (512, 0.25), (16, 0.5)])
def test_counts_and_validity(batch, fraction):
    gen = torch.Generator().manual_seed(0)
    labels = [random_labels(gen, 2000, 0.01), random_labels(gen, 2000, 0.5), random_labels(gen, 30, 0.3),
              torch.full((50,), -1), torch.zeros(0, dtype=torch.int64)]
    sampler = BalancedPositiveNegativeSampler(batch, fraction)
    pos, neg = sampler(labels)
    assert len(pos) == len(neg) == len(labels)
    for lab, p, n in zip(labels, pos, neg):
        assert p.dtype == torch.bool and n.dtype == torch.bool and p.shape == n.shape == lab.shape
        assert (lab[p] >= 1).all()
        assert (lab[n] == 0).all()
        assert not (p & n).any()
        n_pos_avail, n_neg_avail = int((lab >= 1).sum()), int((lab == 0).sum())
        exp_pos = min(n_pos_avail, int(batch * fraction))
        exp_neg = min(n_neg_avail, batch - exp_pos)
        assert int(p.sum()) == exp_pos
        assert int(n.sum()) == exp_neg
        assert int(p.sum()) + int(n.sum()) <= batch


def test_deterministic_under_manual_seed_and_random_otherwise():
    gen = torch.Generator().manual_seed(1)
    labels = [random_labels(gen, 3000, 0.3), random_labels(gen, 1000, 0.05)]
    sampler = BalancedPositiveNegativeSampler(256, 0.5)
    torch.manual_seed(123)
    a = sampler(labels)
    torch.manual_seed(123)
    b = sampler(labels)
    c = sampler(labels)
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert torch.equal(x, y)
    assert any(not torch.equal(x, y) for x, y in zip(a[0] + a[1], c[0] + c[1]))


def test_same_draws_as_torchvision():
    gen = torch.Generator().manual_seed(2)
    labels = [random_labels(gen, 1500, 0.2), random_labels(gen, 800, 0.6), random_labels(gen, 40, 0.2)]
    torch.manual_seed(7)
    pos, neg = BalancedPositiveNegativeSampler(128, 0.25)(labels)
    torch.manual_seed(7)
    tpos, tneg = TVSampler(128, 0.25)(labels)
    for a, b in zip(pos + neg, tpos + tneg):
        assert torch.equal(a, b.bool())
