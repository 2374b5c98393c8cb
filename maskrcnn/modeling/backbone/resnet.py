"""ResNet bodies with torchvision's parameter names (conv1, bn1, layer1..layer4).

Names and shapes match ``torchvision.models.resnet*`` so ImageNet and COCO
weights import losslessly; the norm layer (frozen BN, BN, GN) is a choice.
"""
from __future__ import annotations

from typing import Callable, List

import torch
from torch import nn

from ...layers.conv_norm import FrozenBatchNorm2d, conv_norm, make_norm
from .shape import ShapeSpec

# depth -> (block kind, blocks per stage)
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    26: ("bottleneck", (2, 2, 2, 2)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class BasicBlock(nn.Module):
    expansion_name = "basic"

    def __init__(self, cin: int, width: int, cout: int, stride: int, dilation: int,
                 norm: Callable[[int], nn.Module], groups: int = 1, stride_in_1x1: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = conv_norm(self.conv2, self.bn2, out)
        return self.relu(out.add_(identity))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, cout: int, stride: int, dilation: int,
                 norm: Callable[[int], nn.Module], groups: int = 1, stride_in_1x1: bool = False) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(cin, width, 1, s1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, s3, padding=dilation, dilation=dilation,
                               groups=groups, bias=False)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_norm(self.downsample[0], self.downsample[1], x)
        out = self.relu(conv_norm(self.conv1, self.bn1, x))
        out = self.relu(conv_norm(self.conv2, self.bn2, out))
        out = conv_norm(self.conv3, self.bn3, out)
        return self.relu(out.add_(identity))


def _shortcut(cin: int, cout: int, stride: int, norm: Callable[[int], nn.Module]):
    if cin == cout and stride == 1:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))


class ResNet(nn.Module):
    """ResNet body returning the outputs of stages 2..5 (C2..C5).

    Args:
        depth: 18, 26, 34, 50, 101 or 152.
        norm: "FrozenBN", "BN" or "GN".
        stem_out_channels: channels of the 7x7 stem.
        res2_out_channels: output channels of stage 2 (doubled at each later stage).
        width_per_group, num_groups: bottleneck width of stage 2 is their product.
        stride_in_1x1: put the stage stride in the first 1x1 conv (MSRA weights).
        res5_dilation: dilation of stage 5 (stride 1 when 2).
        freeze_at: 0 freezes nothing, 1 the stem, k the stem and stages 2..k.
        gn_groups, gn_eps, gn_dim_per_group: GroupNorm groups, epsilon and channels per group
            (see :func:`make_norm`), when ``norm`` is "GN".
    """

    def __init__(self, *, depth: int, norm: str = "FrozenBN", stem_out_channels: int = 64,
                 res2_out_channels: int = 256, width_per_group: int = 64, num_groups: int = 1,
                 stride_in_1x1: bool = False, res5_dilation: int = 1, freeze_at: int = 2,
                 gn_groups: int = 32, gn_eps: float = 1e-5, gn_dim_per_group: int = -1) -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth {depth} unknown; choose from {sorted(RESNET_SPECS)}")
        kind, blocks = RESNET_SPECS[depth]
        block_cls = BasicBlock if kind == "basic" else Bottleneck
        norm_fn = make_norm(norm, gn_groups, gn_eps, gn_dim_per_group)
        self.conv1 = nn.Conv2d(3, stem_out_channels, 7, 2, 3, bias=False)
        self.bn1 = norm_fn(stem_out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, cout, width = stem_out_channels, res2_out_channels, width_per_group * num_groups
        self.out_shapes: List[ShapeSpec] = []
        for i, n in enumerate(blocks):
            stride = 1 if i == 0 else 2
            dilation = res5_dilation if i == 3 else 1
            if i == 3 and dilation > 1:
                stride = 1
            layers = []
            for b in range(n):
                layers.append(block_cls(cin, width, cout, stride if b == 0 else 1, dilation, norm_fn,
                                        num_groups, stride_in_1x1))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            prev = self.out_shapes[-1].stride if self.out_shapes else 2
            self.out_shapes.append(ShapeSpec(channels=cout, stride=prev * 2 if i == 0 else prev * stride))
            cout, width = cout * 2, width * 2
        self.freeze(freeze_at)
        self._init_weights(norm)

    def _init_weights(self, norm: str) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if norm != "FrozenBN":
            # Zero-init the last norm of each residual branch: blocks start as identities.
            for m in self.modules():
                last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else (
                    getattr(m, "bn2", None) if isinstance(m, BasicBlock) else None)
                if last is not None:
                    nn.init.zeros_(last.weight)

    def _stages(self) -> List[nn.Module]:
        return [nn.ModuleList([self.conv1, self.bn1])] + [getattr(self, f"layer{i}") for i in range(1, 5)]

    def freeze(self, freeze_at: int) -> None:
        self.freeze_at = freeze_at
        for stage in self._stages()[:freeze_at]:
            for p in stage.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        # Frozen stages never update BatchNorm statistics.
        for stage in self._stages()[: self.freeze_at]:
            stage.eval()
        return self

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.maxpool(self.relu(conv_norm(self.conv1, self.bn1, x)))
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs
