"""Resize / flip transforms on images and targets."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maskrcnn.config import get_cfg
from maskrcnn.data.transforms import (ColorJitter, Compose, RandomHorizontalFlip, RandomVerticalFlip,
                                      ResizeShortestEdge, build_transforms, get_resize_size)
from maskrcnn.structures.bounding_box import BoxList
from maskrcnn.structures.segmentation_mask import InstanceMasks


NO_JITTER = dict(BRIGHTNESS=0.0, CONTRAST=0.0, SATURATION=0.0, HUE=0.0, VERTICAL_FLIP_PROB_TRAIN=0.0,
                 MIN_SIZE_TRAIN_SAMPLING="choice")


def _target(h=60, w=90):
    boxes = torch.tensor([[10.0, 5.0, 40.0, 35.0], [50.0, 20.0, 80.0, 50.0]])
    target = BoxList(boxes, (h, w))
    target.add_field("labels", torch.tensor([1, 2]))
    poly = [[11.3, 6.1, 38.7, 9.4, 25.2, 33.8], [14.0, 20.0, 20.5, 20.0, 17.1, 30.2]]
    m = np.zeros((h, w), np.uint8)
    m[22:47, 53:71] = 1
    m[30:40, 71:78] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    target.add_field("masks", InstanceMasks([poly, None], (h, w), rles=[None, rle]))
    return target


@pytest.mark.parametrize("h, w, min_size, max_size, expected", [
    (480, 640, 800, 1333, (800, 1067)),
    (640, 480, 800, 1333, (1067, 800)),
    (100, 1000, 800, 1333, (133, 1333)),   # long side capped
    (60, 90, 30, 0, (30, 45)),             # no cap
])
def test_get_resize_size(h, w, min_size, max_size, expected):
    assert get_resize_size(h, w, min_size, max_size) == expected


def test_resize_image_and_boxes():
    image = torch.randint(0, 256, (3, 60, 90), dtype=torch.uint8)
    out, target = ResizeShortestEdge((120,), 1000)(image, _target())
    assert out.dtype == torch.uint8 and out.shape == (3, 120, 180)
    assert target.size == (120, 180) and target.get_field("masks").size == (120, 180)
    assert torch.allclose(target.bbox, _target().bbox * 2)
    capped, t2 = ResizeShortestEdge((120,), 150)(image, _target())
    assert capped.shape == (3, 100, 150) and t2.size == (100, 150)
    same, t3 = ResizeShortestEdge((60,), 1000)(image, None)
    assert torch.equal(same, image) and t3 is None


def test_multiscale_choice_within_set():
    torch.manual_seed(0)
    resize = ResizeShortestEdge((20, 30, 40), 1000)
    shorts = {resize(torch.zeros(3, 60, 90, dtype=torch.uint8), None)[0].shape[1] for _ in range(40)}
    assert shorts == {20, 30, 40}


def test_randomness_follows_torch_seed():
    t = Compose([ResizeShortestEdge((20, 30, 40, 50), 1000), RandomHorizontalFlip(0.5)])
    image = torch.randint(0, 256, (3, 60, 90), dtype=torch.uint8)

    def run():
        torch.manual_seed(123)
        return [t(image, _target())[1].bbox for _ in range(10)]

    assert all(torch.equal(a, b) for a, b in zip(run(), run()))


@pytest.mark.parametrize("flip, dim, boxes", [
    (RandomHorizontalFlip, -1, [[50.0, 5.0, 80.0, 35.0], [10.0, 20.0, 40.0, 50.0]]),
    (RandomVerticalFlip, -2, [[10.0, 25.0, 40.0, 55.0], [50.0, 10.0, 80.0, 40.0]]),
])
def test_flip_boxes_image_and_masks_consistent(flip, dim, boxes):
    image = torch.randint(0, 256, (3, 60, 90), dtype=torch.uint8)
    target = _target()
    flipped_img, flipped = flip(1.0)(image, target)
    assert torch.equal(flipped_img, image.flip(dim))
    assert flipped.bbox.tolist() == boxes
    idx = torch.arange(2)
    # Polygon (instance 0) and RLE (instance 1) targets flip with the image. (Not m = 7: a cell
    # centre then lies exactly on the polygon's horizontal edge y = 20, a tie that the half-open
    # scanline rule decides the other way once the polygon is upside down.)
    for m in (8, 14, 28):
        want = target.get_field("masks").crop_and_resize(target.bbox, idx, m).flip(dim)
        got = flipped.get_field("masks").crop_and_resize(flipped.bbox, idx, m)
        assert torch.equal(got, want)
        assert got[0].sum() > 0 and got[1].sum() > 0
    unchanged_img, unchanged = flip(0.0)(image, target)
    assert torch.equal(unchanged_img, image) and torch.equal(unchanged.bbox, target.bbox)


def test_both_flips_turn_the_targets_half_a_turn():
    image = torch.zeros(3, 60, 90, dtype=torch.uint8)
    target, idx = _target(), torch.arange(2)
    both = RandomHorizontalFlip(1.0)(*RandomVerticalFlip(1.0)(image, target))[1]
    want = target.get_field("masks").crop_and_resize(target.bbox, idx, 14).flip(-1).flip(-2)
    assert torch.equal(both.get_field("masks").crop_and_resize(both.bbox, idx, 14), want)


def test_range_sampling_draws_every_size_between_the_two():
    torch.manual_seed(0)
    image = torch.zeros(3, 60, 90, dtype=torch.uint8)
    t = ResizeShortestEdge((30, 36), 1000, sampling="range")
    shorts = {t(image, _target())[0].shape[-2] for _ in range(200)}
    assert shorts == set(range(30, 37))  # 30..36, both ends included
    choice = ResizeShortestEdge((30, 36), 1000)
    assert {choice(image, None)[0].shape[-2] for _ in range(50)} == {30, 36}
    for bad in ((30,), (40, 30), (30, 32, 34)):
        with pytest.raises(ValueError, match="low, high"):
            ResizeShortestEdge(bad, 1000, sampling="range")
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", (640, 800), "INPUT.MIN_SIZE_TRAIN_SAMPLING", "range"])
    assert build_transforms(cfg, True).transforms[0].sampling == "range"
    assert build_transforms(cfg, False).transforms[0].min_sizes == (800,)


def test_brightness_jitter_scales_every_pixel_by_one_factor_and_keeps_the_target():
    torch.manual_seed(0)
    image = torch.randint(20, 120, (3, 40, 50), dtype=torch.uint8)  # no pixel saturates at 1.5x
    factors = []
    for _ in range(20):
        out, target = ColorJitter(brightness=0.5)(image, _target())
        assert out.dtype == torch.uint8 and out.shape == image.shape
        assert torch.equal(target.bbox, _target().bbox)
        ratio = out.double() / image.double()
        factors.append(float(ratio.median()))
        assert (out.double() - image.double() * factors[-1]).abs().max() <= 1.0  # rounding only
    assert min(factors) >= 0.5 - 1e-2 and max(factors) <= 1.5 + 1e-2 and max(factors) - min(factors) > 0.3


def test_jitter_and_vertical_flip_from_cfg_in_training_only():
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.BRIGHTNESS", 0.2, "INPUT.HUE", 0.05, "INPUT.VERTICAL_FLIP_PROB_TRAIN", 0.5])
    train, test = build_transforms(cfg, True), build_transforms(cfg, False)
    kinds = [type(t).__name__ for t in train.transforms]
    assert kinds == ["ColorJitter", "ResizeShortestEdge", "RandomHorizontalFlip", "RandomVerticalFlip"]
    jitter = train.transforms[0].jitter
    assert jitter.brightness == (0.8, 1.2) and jitter.hue == (-0.05, 0.05) and jitter.contrast is None
    assert train.transforms[3].prob == 0.5
    assert [type(t).__name__ for t in test.transforms] == ["ResizeShortestEdge"]
    assert [type(t).__name__ for t in build_transforms(get_cfg(), True).transforms] == [
        "ResizeShortestEdge", "RandomHorizontalFlip"]


def test_resize_then_flip_masks_follow_boxes():
    torch.manual_seed(0)
    image = torch.zeros(3, 60, 90, dtype=torch.uint8)
    _, out = Compose([ResizeShortestEdge((30,), 1000), RandomHorizontalFlip(1.0)])(image, _target())
    assert out.size == (30, 45)
    masks = out.get_field("masks").crop_and_resize(out.bbox, torch.arange(2), 14)
    assert masks[1].mean() > 0.5  # RLE instance fills most of its box after resize + flip


def test_build_transforms_from_cfg():
    cfg = SimpleNamespace(INPUT=SimpleNamespace(MIN_SIZE_TRAIN=(30, 40), MAX_SIZE_TRAIN=100,
                                                MIN_SIZE_TEST=50, MAX_SIZE_TEST=70,
                                                HORIZONTAL_FLIP_PROB_TRAIN=0.5,
                                                RESIZE_MODE="antialias", **NO_JITTER))
    train, test = build_transforms(cfg, True), build_transforms(cfg, False)
    assert train.transforms[0].min_sizes == (30, 40) and train.transforms[1].prob == 0.5
    assert len(test.transforms) == 1
    img, _ = test(torch.zeros(3, 60, 90, dtype=torch.uint8), None)
    assert img.shape == (3, 47, 70)


def test_torchvision_resize_mode_matches_generalized_rcnn_transform():
    """RESIZE_MODE "torchvision": same size and pixels as torchvision's detection transform."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from maskrcnn.data.transforms import ResizeShortestEdge

    tv = GeneralizedRCNNTransform(800, 1333, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]).eval()
    g = torch.Generator().manual_seed(0)
    for h, w in [(480, 640), (333, 517), (1000, 3000), (799, 801)]:
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        out, _ = ResizeShortestEdge(800, 1333, "torchvision")(image)
        ref = tv.resize(image.float(), None)[0]
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, atol=1e-3)
        default, _ = ResizeShortestEdge(800, 1333)(image)
        assert default.dtype == torch.uint8  # the default mode stays uint8 and antialiased


def test_unknown_resize_mode_is_an_error():
    from maskrcnn.data.transforms import ResizeShortestEdge

    with pytest.raises(ValueError, match="resize mode"):
        ResizeShortestEdge(800, 1333, "nearest")


def detectron2_output_shape(oldh, oldw, short_edge_length, max_size):
    """detectron2's ResizeShortestEdge.get_output_shape, as published."""
    h, w = oldh, oldw
    size = short_edge_length * 1.0
    scale = size / min(h, w)
    if h < w:
        newh, neww = size, scale * w
    else:
        newh, neww = scale * h, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def test_detectron2_sizes():
    rng = np.random.default_rng(0)
    for h, w, short in zip(rng.integers(20, 3000, 500), rng.integers(20, 3000, 500), rng.choice([640, 800], 500)):
        want = detectron2_output_shape(h, w, short, 1333)
        assert get_resize_size(int(h), int(w), int(short), 1333, "detectron2") == want
    # Halves round up in detectron2 (int(x + 0.5)); Python's round would give 4.
    assert get_resize_size(4, 6, 3, 1333, "detectron2") == (3, 5)
    assert get_resize_size(4, 6, 3, 1333) == (3, 4)


@pytest.mark.parametrize("hw, short", [((60, 90), 120), ((480, 640), 200), ((333, 517), 800)])
def test_pil_resize_mode_is_pils_bilinear(hw, short):
    """RESIZE_MODE "pil": detectron2's ResizeTransform, i.e. PIL's Image.BILINEAR on the uint8 image."""
    from PIL import Image

    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3,) + hw, dtype=torch.uint8, generator=g)
    out, target = ResizeShortestEdge((short,), 1333, "pil")(image, _target(*hw))
    new_h, new_w = detectron2_output_shape(*hw, short, 1333)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((new_w, new_h), Image.BILINEAR)
    assert out.dtype == torch.uint8 and out.shape == (3, new_h, new_w)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), np.asarray(pil))
    assert target.size == (new_h, new_w) and target.get_field("masks").size == (new_h, new_w)
    antialias, _ = ResizeShortestEdge((short,), 1333, "antialias")(image)
    if short < min(hw):  # shrinking: torchvision's antialiased filter is not PIL's (upscaling agrees)
        assert antialias.shape == out.shape and not torch.equal(antialias, out)


def test_build_transforms_pil_mode():
    cfg = SimpleNamespace(INPUT=SimpleNamespace(MIN_SIZE_TRAIN=(640, 800), MAX_SIZE_TRAIN=1333, MIN_SIZE_TEST=800,
                                                MAX_SIZE_TEST=1333, HORIZONTAL_FLIP_PROB_TRAIN=0.5,
                                                RESIZE_MODE="pil", **NO_JITTER))
    assert build_transforms(cfg, True).transforms[0].mode == build_transforms(cfg, False).transforms[0].mode == "pil"
