"""Norm layers: the factory every part of the model builds them with (:func:`make_norm`), and a
convolution followed by its norm layer with frozen BatchNorm folded into the convolution.

``FrozenBatchNorm2d`` (torchvision's, the norm of pretrained ResNets) is the affine map
``y = x * scale + shift`` with ``scale = weight / sqrt(running_var + eps)`` and
``shift = bias - running_mean * scale``. Applied after a convolution it can be folded into
it: ``conv(x, W * scale) + shift``. That saves one full pass over every activation map of
the backbone (and its backward in training) and computes the same function; the results
differ from the unfolded pair only by float rounding (about 1e-6 relative).

The fold is recomputed at every call from the current parameters (a few hundred
microseconds for a ResNet-50), so it is exact after loading weights and differentiable
with respect to the convolution weight: training works unchanged. State-dict names are
those of the separate ``conv`` and ``bn`` modules, so weights from torchvision,
maskrcnn-benchmark and detectron2 load as they are.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["FrozenBatchNorm2d", "conv_norm", "frozen_bn_scale_shift", "make_norm"]


def make_norm(kind: str, gn_groups: int = 32, gn_eps: float = 1e-5,
              gn_dim_per_group: int = -1) -> Callable[[int], nn.Module]:
    """Factory of norm layers: ``"FrozenBN"``, ``"BN"`` or ``"GN"``.

    GN has ``gn_groups`` groups, or ``channels // gn_dim_per_group`` when that is positive
    (maskrcnn-benchmark's ``GROUP_NORM.DIM_PER_GP``), halved until it divides the channels.
    The ResNet, the FPN and the ROI heads build their GroupNorm layers here, from the same
    ``MODEL.GROUP_NORM`` keys, as maskrcnn-benchmark does.
    """
    if kind == "FrozenBN":
        return lambda c: FrozenBatchNorm2d(c)
    if kind == "BN":
        return lambda c: nn.BatchNorm2d(c)
    if kind == "GN":
        def gn(c: int) -> nn.Module:
            groups = max(1, c // gn_dim_per_group) if gn_dim_per_group > 0 else gn_groups
            while c % groups:
                groups //= 2
            return nn.GroupNorm(groups, c, eps=gn_eps)
        return gn
    raise ValueError(f"unknown norm '{kind}': use FrozenBN, BN or GN")


def frozen_bn_scale_shift(bn: FrozenBatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` ``(C,)`` of a frozen BatchNorm, the same arithmetic as its forward."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    return scale, bn.bias - bn.running_mean * scale


def conv_norm(conv: nn.Conv2d, norm: Optional[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, folding a :class:`FrozenBatchNorm2d` into the convolution.

    Args:
        conv: the convolution.
        norm: its norm layer (any module, or None for no norm).
        x: ``(N, C_in, H, W)`` input.

    Returns:
        ``(N, C_out, H', W')``.
    """
    if isinstance(norm, FrozenBatchNorm2d):
        scale, shift = frozen_bn_scale_shift(norm)
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        bias = shift if conv.bias is None else conv.bias * scale + shift
        return conv._conv_forward(x, weight, bias)
    out = conv(x)
    return out if norm is None else norm(out)
