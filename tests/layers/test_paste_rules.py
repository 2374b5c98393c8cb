"""PASTE_RULE "torchvision" reproduces torchvision's paste_masks_in_image (then > 0.5)."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

from maskrcnn.layers.mask_ops import masks_to_rle, paste_masks_in_image
from maskrcnn.layers.paste_rules import rule_geometry


def _cases(seed: int, n: int, h: int, w: int):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, 1, 28, 28, generator=g)
    masks = torch.nn.functional.avg_pool2d(masks, 5, 1, 2)  # smooth, values spread around 0.5
    masks = (masks - 0.5) * 4 + 0.5
    masks = masks.clamp(0, 1)
    # starts inside the image (torchvision's own paste fails on boxes left of / above it);
    # ends may lie outside
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.9, h * 0.9])
    wh = torch.rand(n, 2, generator=g) ** 2 * torch.tensor([w * 0.8, h * 0.8]) + 0.3
    boxes = torch.cat([xy, xy + wh], 1)
    return masks, boxes


@pytest.mark.parametrize("size", [(60, 90), (333, 517)])
def test_torchvision_rule_matches_torchvision(size):
    h, w = size
    masks, boxes = _cases(0, 60, h, w)
    ours = paste_masks_in_image(masks, boxes, (h, w), rule="torchvision")
    theirs = tv_paste(masks, boxes, (h, w))[:, 0] >= 0.5
    diff = (ours != theirs).sum().item()
    # float32 (theirs) against float64 (ours) source coordinates: a pixel can only flip when
    # its value is within rounding of the threshold.
    assert diff <= max(2, theirs.sum().item() * 1e-4), diff
    assert theirs.sum() > 1000
    # and the default rule is a different one: the comparison above can fail
    center = paste_masks_in_image(masks, boxes, (h, w))
    assert (center != theirs).sum() > 10 * max(diff, 1)


def test_torchvision_rule_rle_is_the_encoding_of_its_paste():
    h, w = 200, 300
    masks, boxes = _cases(1, 40, h, w)
    pasted = paste_masks_in_image(masks, boxes, (h, w), rule="torchvision").numpy()
    rles = masks_to_rle(masks, boxes, (h, w), rule="torchvision")
    for m, rle in zip(pasted, rles):
        ref = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        assert rle["counts"] == ref["counts"].decode()


def test_rule_geometry():
    # torchvision: box 10..38 (w 28) scaled by 30/28 about its centre -> 9..39, 31 pixels wide
    grid, win = rule_geometry((10.0, 10.0, 38.0, 38.0), 28, "torchvision", 100, 100)
    assert win == (9, 40, 9, 40)
    assert grid[0] == pytest.approx(9 + 31 / 30) and grid[2] == pytest.approx(9 + 31 * 29 / 30)
    assert rule_geometry((10.0, 10.0, 38.0, 38.0), 28, "center", 100, 100)[1] == (9, 39, 9, 39)
    assert rule_geometry((float("nan"), 0, 1, 1), 28, "torchvision", 10, 10) is None
    with pytest.raises(ValueError, match="paste rule"):
        rule_geometry((0, 0, 1, 1), 28, "nearest", 10, 10)
