"""Anchors against torchvision's AnchorGenerator; Pooler against MultiScaleRoIAlign."""
import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import LevelMapper as TVLevelMapper

from maskrcnn.modeling.poolers import LevelMapper, Pooler
from maskrcnn.modeling.rpn.anchor_generator import AnchorGenerator, cell_anchors
from maskrcnn.structures.image_list import to_image_list

SIZES = (32, 64, 128, 256, 512)
STRIDES = (4, 8, 16, 32, 64)
RATIOS = (0.5, 1.0, 2.0)


def fpn_features(padded_hw, channels=1, n=1, strides=STRIDES, gen=None):
    h, w = padded_hw
    return [torch.rand(n, channels, math.ceil(h / s), math.ceil(w / s), generator=gen) for s in strides]


# -------------------------------------------------------------------- anchors
def test_cell_anchors_values():
    cells = cell_anchors(32, RATIOS)
    # ratio = height / width; rounded half-sizes like torchvision
    expected = torch.tensor([[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]])
    torch.testing.assert_close(cells, expected)
    tv = TVAnchorGenerator(sizes=((32,),), aspect_ratios=(RATIOS,)).cell_anchors[0]
    torch.testing.assert_close(cells, tv)


@pytest.mark.parametrize("image_hw", [[(500, 620)], [(832, 1216), (700, 1000)]])
def test_anchors_match_torchvision(image_hw):
    images = [torch.zeros(3, h, w) for h, w in image_hw]
    il = to_image_list(images, size_divisibility=64)  # strides must divide the padded size
    ph, pw = il.tensors.shape[-2:]
    feats = fpn_features((ph, pw), n=len(images))
    ours, counts = AnchorGenerator(sizes=SIZES, strides=STRIDES, aspect_ratios=RATIOS)(feats)
    assert counts == [f.shape[-2] * f.shape[-1] * 3 for f in feats]
    assert ours.shape == (sum(counts), 4)
    tv = TVAnchorGenerator(sizes=tuple((s,) for s in SIZES), aspect_ratios=(RATIOS,) * 5)
    theirs = tv(TVImageList(il.tensors, il.image_sizes), feats)
    assert len(theirs) == len(images)
    for t in theirs:
        assert torch.equal(ours, t)


def test_anchor_layout_location_major():
    gen = AnchorGenerator(sizes=(32, 64), strides=(4, 8), aspect_ratios=RATIOS)
    assert gen.num_anchors_per_location == 3
    feats = [torch.zeros(1, 1, 3, 5), torch.zeros(1, 1, 2, 2)]
    anchors, counts = gen(feats)
    assert counts == [45, 12]
    lvl0 = anchors[:45].view(3, 5, 3, 4)  # (y, x, a, 4)
    cells = cell_anchors(32, RATIOS)
    for y in range(3):
        for x in range(5):
            shift = torch.tensor([x * 4.0, y * 4.0, x * 4.0, y * 4.0])
            torch.testing.assert_close(lvl0[y, x], cells + shift)
    torch.testing.assert_close(anchors[45:48], cell_anchors(64, RATIOS))
    # cached grids are reused and stay equal
    again, _ = gen(feats)
    assert torch.equal(again, anchors)
    with pytest.raises(ValueError):
        AnchorGenerator(sizes=(32, 64), strides=(4,), aspect_ratios=RATIOS)


# -------------------------------------------------------------------- poolers
def varied_boxes(gen, n, h, w):
    """Boxes of sqrt(area) from ~10 to ~700 pixels so that every level gets some."""
    side = torch.exp(torch.empty(n).uniform_(math.log(10), math.log(700), generator=gen))
    aspect = torch.exp(torch.empty(n).uniform_(-0.7, 0.7, generator=gen))
    bw = (side * aspect).clamp(max=w - 1)
    bh = (side / aspect).clamp(max=h - 1)
    x1 = torch.rand(n, generator=gen) * (w - bw)
    y1 = torch.rand(n, generator=gen) * (h - bh)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], 1)


def test_level_mapper_values():
    mapper = LevelMapper(2, 5)

    def lv(side):
        return int(mapper(torch.tensor([[0.0, 0.0, side, side]]))[0])

    assert lv(224) == 2          # canonical level 4 -> index 2
    assert lv(112) == 1
    assert lv(448) == 3
    assert lv(56) == 0
    assert lv(223.0) == 1
    assert lv(32) == 0 and lv(1) == 0   # clamped at k_min
    assert lv(2000) == 3                # clamped at k_max
    # a rectangle uses sqrt(area): 112 x 448 has the canonical area
    assert int(mapper(torch.tensor([[0.0, 0.0, 112.0, 448.0]]))[0]) == 2
    assert int(mapper(torch.tensor([[5.0, 5.0, 5.0, 9.0]]))[0]) == 0  # empty box


def test_level_mapper_matches_torchvision():
    gen = torch.Generator().manual_seed(0)
    boxes = varied_boxes(gen, 500, 1000, 1000)
    boxes = torch.cat([boxes, torch.tensor([[0.0, 0.0, 224.0, 224.0], [0.0, 0.0, 112.0, 112.0],
                                            [0.0, 0.0, 448.0, 448.0]])])
    ours = LevelMapper(2, 5)(boxes)
    theirs = TVLevelMapper(2, 5)([boxes])
    assert ours.dtype == torch.int64
    assert torch.equal(ours, theirs.to(torch.int64))


def test_pooler_matches_multiscale_roi_align():
    gen = torch.Generator().manual_seed(0)
    il = to_image_list([torch.zeros(3, 790, 780), torch.zeros(3, 800, 760)], size_divisibility=32)
    assert tuple(il.tensors.shape[-2:]) == (800, 800)
    feats = fpn_features((800, 800), channels=4, n=2, strides=(4, 8, 16, 32, 64), gen=gen)
    boxes = [varied_boxes(gen, 60, 790, 780), varied_boxes(gen, 45, 800, 760)]
    pooler = Pooler(output_size=7, scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=2)
    ours = pooler(feats, boxes)  # the extra P6 level is ignored
    assert ours.shape == (105, 4, 7, 7)
    levels = pooler.mapper(torch.cat(boxes))
    assert set(levels.tolist()) == {0, 1, 2, 3}
    tv = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    theirs = tv({str(i): f for i, f in enumerate(feats[:4])}, boxes, [(800, 800), (800, 800)])
    assert tv.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_pooler_single_level_and_empty():
    gen = torch.Generator().manual_seed(1)
    feat = torch.rand(2, 3, 40, 50, generator=gen)
    boxes = [varied_boxes(gen, 5, 640, 800) * 0.5, varied_boxes(gen, 3, 640, 800) * 0.5]
    pooler = Pooler(output_size=14, scales=(1 / 16,), sampling_ratio=0, aligned=True)
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    expected = roi_align(feat, rois, (14, 14), 1 / 16, 0, True)
    torch.testing.assert_close(pooler([feat], boxes), expected, rtol=0, atol=0)
    feats = fpn_features((64, 64), channels=3, n=2, strides=(4, 8, 16, 32))
    out = Pooler(output_size=7, scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=2)(
        feats, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert out.shape == (0, 3, 7, 7)
