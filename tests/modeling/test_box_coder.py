"""BoxCoder: round trip, torchvision equivalence, clamping of dw/dh."""
import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from maskrcnn.modeling.box_coder import DEFAULT_SCALE_CLAMP, BoxCoder


def random_boxes(gen, n, size=200.0, min_side=1.0):
    xy = torch.rand(n, 2, generator=gen) * size
    wh = min_side + torch.rand(n, 2, generator=gen) * size
    return torch.cat([xy, xy + wh], 1)


WEIGHTS = [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)]


@pytest.mark.parametrize("weights", WEIGHTS)
def test_round_trip(weights):
    gen = torch.Generator().manual_seed(0)
    # side ratios stay below the dw/dh clamp (1000 / 16)
    refs = random_boxes(gen, 500, min_side=8.0).double()
    targets = random_boxes(gen, 500, min_side=8.0).double()
    coder = BoxCoder(weights)
    deltas = coder.encode(targets, refs)
    assert deltas.shape == (500, 4)
    torch.testing.assert_close(coder.decode(deltas, refs), targets, rtol=0, atol=1e-9)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_matches_torchvision(weights):
    gen = torch.Generator().manual_seed(1)
    refs, targets = random_boxes(gen, 300), random_boxes(gen, 300)
    ours = BoxCoder(weights).encode(targets, refs)
    theirs = TVBoxCoder(weights).encode_single(targets, refs)
    torch.testing.assert_close(ours, theirs)
    # the list API too
    theirs_list = TVBoxCoder(weights).encode([targets[:100], targets[100:]], [refs[:100], refs[100:]])
    torch.testing.assert_close(ours, torch.cat(theirs_list))


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("k", [1, 3])
def test_decode_matches_torchvision(weights, k):
    gen = torch.Generator().manual_seed(2)
    refs = random_boxes(gen, 200)
    deltas = torch.randn(200, 4 * k, generator=gen) * 2.0
    deltas[:10, 2::4] = 50.0  # beyond the clamp
    deltas[10:20, 3::4] = 50.0
    ours = BoxCoder(weights).decode(deltas, refs)
    assert ours.shape == (200, 4 * k)
    theirs = TVBoxCoder(weights).decode(deltas, [refs])  # (N, k, 4)
    torch.testing.assert_close(ours, theirs.reshape(200, 4 * k))
    theirs_single = TVBoxCoder(weights).decode_single(deltas, refs)
    torch.testing.assert_close(ours, theirs_single)


def test_decode_known_values():
    refs = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    torch.testing.assert_close(coder.decode(torch.zeros(1, 4), refs), refs)
    out = coder.decode(torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]]), refs)
    # centre (5, 10) -> (10, 5); width 10 -> 20
    torch.testing.assert_close(out, torch.tensor([[0.0, -5.0, 20.0, 15.0]]))
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    out = coder.decode(torch.tensor([[5.0, -2.5, 5 * math.log(2.0), 0.0]]), refs)
    torch.testing.assert_close(out, torch.tensor([[0.0, -5.0, 20.0, 15.0]]))


def test_large_dw_is_clamped():
    refs = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    deltas = torch.tensor([[0.0, 0.0, 1e4, 1e4]])
    out = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(deltas, refs)
    assert torch.isfinite(out).all()
    w, h = out[0, 2] - out[0, 0], out[0, 3] - out[0, 1]
    torch.testing.assert_close(w, torch.tensor(16.0 * math.exp(DEFAULT_SCALE_CLAMP)))
    torch.testing.assert_close(w, torch.tensor(1000.0))
    torch.testing.assert_close(h, torch.tensor(1000.0))
    # custom clamp; negative dw is not clamped
    out = BoxCoder((1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(2.0)).decode(
        torch.tensor([[0.0, 0.0, 3.0, -1.0]]), refs)
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(32.0))
    torch.testing.assert_close(out[0, 3] - out[0, 1], torch.tensor(16.0 * math.exp(-1.0)))
    # the clamp applies after dividing by the weight
    out = BoxCoder((1.0, 1.0, 5.0, 5.0)).decode(torch.tensor([[0.0, 0.0, 5 * 4.0, 5 * 5.0]]), refs)
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(16.0 * math.exp(4.0)))
    torch.testing.assert_close(out[0, 3] - out[0, 1], torch.tensor(1000.0))


def test_decode_casts_references_to_delta_dtype():
    refs = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    out = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(torch.zeros(1, 4, dtype=torch.float64), refs)
    assert out.dtype == torch.float64
