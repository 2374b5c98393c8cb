"""BalancedPositiveNegativeSampler: counts, validity, uniform draws, determinism, torchvision's rule."""
import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler as TVSampler

from maskrcnn.modeling.balanced_sampler import BalancedPositiveNegativeSampler


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


def test_same_counts_as_torchvision():
    """torchvision's rule (its draws come from randperm of the counts, read back from the device)."""
    gen = torch.Generator().manual_seed(2)
    labels = [random_labels(gen, 1500, 0.2), random_labels(gen, 800, 0.6), random_labels(gen, 40, 0.2)]
    pos, neg = BalancedPositiveNegativeSampler(128, 0.25)(labels)
    tpos, tneg = TVSampler(128, 0.25)(labels)
    for a, b in zip(pos + neg, tpos + tneg):
        assert int(a.sum()) == int(b.sum())


def test_draws_are_uniform():
    """Every eligible element is drawn with the same probability: k / (eligible count)."""
    labels = torch.tensor([1] * 10 + [0] * 40 + [-1] * 10)
    sampler = BalancedPositiveNegativeSampler(20, 0.25)  # 5 of 10 positives, 15 of 40 negatives
    torch.manual_seed(0)
    trials = 4000
    hits = torch.zeros(60)
    for _ in range(trials // 200):
        pos, neg = sampler.sample(labels.repeat(200, 1))
        hits += (pos | neg).sum(0).float()
    freq = hits / trials
    assert torch.all(freq[50:] == 0)
    # binomial standard deviation sqrt(p (1 - p) / trials) is below 0.008: allow 5 sigma
    assert torch.allclose(freq[:10], torch.full((10,), 0.5), atol=0.04), freq[:10]
    assert torch.allclose(freq[10:50], torch.full((40,), 15 / 40), atol=0.04), freq[10:50]


def test_batch_form_equals_list_form():
    gen = torch.Generator().manual_seed(3)
    labels = [random_labels(gen, 700, 0.1), random_labels(gen, 700, 0.4)]
    sampler = BalancedPositiveNegativeSampler(64, 0.25)
    torch.manual_seed(5)
    pos, neg = sampler(labels)
    torch.manual_seed(5)
    bpos, bneg = sampler.sample(torch.stack(labels))
    assert torch.equal(torch.stack(pos), bpos) and torch.equal(torch.stack(neg), bneg)
