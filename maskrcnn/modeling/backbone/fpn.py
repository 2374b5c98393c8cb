"""Feature Pyramid Network (P2..P6) with torchvision's parameter names."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...layers.conv_norm import make_norm
from .shape import ShapeSpec


class FPN(nn.Module):
    """Top-down pathway with lateral 1x1 and output 3x3 convolutions, plus P6 by max-pooling P5.

    Args:
        in_shapes: shapes of C2..C5.
        out_channels: channels of every pyramid level.
        norm: "" (none), "GN", "FrozenBN" or "BN" after each conv (with a norm the convs have no
            bias; torchvision's ``*_v2`` FPN is the "BN" one, names ``inner_blocks.0.0`` / ``.0.1``).
        gn_groups, gn_eps, gn_dim_per_group: GroupNorm groups, epsilon, and channels per group
            (used instead of ``gn_groups`` when positive); see :func:`~maskrcnn.layers.conv_norm.make_norm`.
    """

    def __init__(self, *, in_shapes: Sequence[ShapeSpec], out_channels: int = 256, norm: str = "",
                 gn_groups: int = 32, gn_eps: float = 1e-5, gn_dim_per_group: int = -1) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList()
        self.layer_blocks = nn.ModuleList()
        gn = make_norm(norm, gn_groups, gn_eps, gn_dim_per_group) if norm else None
        for shape in in_shapes:
            self.inner_blocks.append(self._conv(shape.channels, out_channels, 1, gn))
            self.layer_blocks.append(self._conv(out_channels, out_channels, 3, gn))
        strides = [s.stride for s in in_shapes]
        self.out_shapes = [ShapeSpec(out_channels, s) for s in strides] + [
            ShapeSpec(out_channels, strides[-1] * 2)]

    @staticmethod
    def _conv(cin: int, cout: int, k: int, gn: Optional[Callable[[int], nn.Module]]) -> nn.Sequential:
        conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=gn is None)
        nn.init.kaiming_uniform_(conv.weight, a=1)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        return nn.Sequential(conv) if gn is None else nn.Sequential(conv, gn(cout))

    def forward(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        last = self.inner_blocks[-1](feats[-1])
        results = [self.layer_blocks[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            top_down = F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            last = lateral + top_down
            results.insert(0, self.layer_blocks[i](last))
        results.append(F.max_pool2d(results[-1], 1, 2, 0))
        return results


class BackboneWithFPN(nn.Module):
    """ResNet body + FPN; ``forward`` returns [P2, P3, P4, P5, P6]."""

    def __init__(self, body: nn.Module, fpn: FPN) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_shapes: List[ShapeSpec] = fpn.out_shapes

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.fpn(self.body(x))
