"""Frozen BatchNorm folded into the convolution computes conv -> FrozenBatchNorm2d."""
import torch
from torch import nn

from maskrcnn.layers.conv_norm import FrozenBatchNorm2d, conv_norm


def _pair(bias: bool, seed: int = 0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(8, 16, 3, 2, 1, bias=bias)
    bn = FrozenBatchNorm2d(16)
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    return conv, bn


def test_fold_matches_unfolded_forward_and_grads():
    for bias in (False, True):
        conv, bn = _pair(bias)
        x = torch.randn(2, 8, 17, 23, requires_grad=True)
        ref = bn(conv(x))
        out = conv_norm(conv, bn, x)
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(ref)
        grads_ref = torch.autograd.grad(ref, [x, conv.weight], g)
        grads = torch.autograd.grad(out, [x, conv.weight], g)
        for a, b in zip(grads, grads_ref):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_other_norms_are_applied_unchanged():
    conv, _ = _pair(False)
    bn = nn.BatchNorm2d(16).eval()
    bn.running_mean.normal_()
    x = torch.randn(1, 8, 9, 9)
    assert torch.equal(conv_norm(conv, bn, x), bn(conv(x)))
    assert torch.equal(conv_norm(conv, None, x), conv(x))


def test_fold_follows_loaded_weights():
    # The fold is recomputed per call: loading new statistics changes the output.
    conv, bn = _pair(False)
    x = torch.randn(1, 8, 9, 9)
    before = conv_norm(conv, bn, x)
    bn.running_var.mul_(4)
    after = conv_norm(conv, bn, x)
    assert torch.allclose(after, bn(conv(x)), atol=1e-5)
    assert not torch.allclose(before, after)
