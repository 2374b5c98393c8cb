"""Matcher against torchvision's Matcher."""
import pytest
import torch
from torchvision.models.detection._utils import Matcher as TVMatcher

from maskrcnn.modeling.matcher import Matcher


def quantised_iou(gen, g, n, levels=10):
    """IoU-like matrix with many exact ties (values on a coarse grid)."""
    return torch.randint(0, levels + 1, (g, n), generator=gen).float() / levels


@pytest.mark.parametrize("allow_low", [False, True])
@pytest.mark.parametrize("thresholds", [(0.7, 0.3), (0.5, 0.5), (0.5, 0.4)])
@pytest.mark.parametrize("seed", range(4))
def test_matches_torchvision(allow_low, thresholds, seed):
    gen = torch.Generator().manual_seed(seed)
    high, low = thresholds
    ours = Matcher(high, low, allow_low_quality_matches=allow_low)
    theirs = TVMatcher(high, low, allow_low_quality_matches=allow_low)
    cases = [
        torch.rand(7, 50, generator=gen),                        # continuous
        quantised_iou(gen, 5, 40),                               # ties everywhere
        torch.rand(6, 30, generator=gen) * 0.35,                 # all low quality
        torch.cat([torch.rand(3, 20, generator=gen) * 0.2, torch.zeros(1, 20)]),  # a GT with no overlap
        torch.rand(1, 1, generator=gen),
    ]
    for iou in cases:
        expected = theirs(iou.clone())
        got = ours(iou.clone())
        assert got.dtype == torch.int64
        assert torch.equal(got, expected), iou


def test_codes_and_low_quality_values():
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.2],
                        [0.1, 0.6, 0.2, 0.25]])
    m = Matcher(0.7, 0.3)
    assert m(iou).tolist() == [0, Matcher.BETWEEN_THRESHOLDS, Matcher.BELOW_LOW_THRESHOLD,
                               Matcher.BELOW_LOW_THRESHOLD]
    m = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    # GT 1's best prediction (column 1, IoU 0.6) is kept
    assert m(iou).tolist() == [0, 1, -1, -1]


def test_empty_ground_truth_all_background():
    out = Matcher(0.7, 0.3, allow_low_quality_matches=True)(torch.zeros(0, 9))
    assert out.tolist() == [-1] * 9 and out.dtype == torch.int64
    assert Matcher(0.5, 0.5)(torch.zeros(3, 0)).shape == (0,)


def test_invalid_thresholds():
    with pytest.raises(ValueError):
        Matcher(0.3, 0.7)
