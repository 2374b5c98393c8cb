"""Each recipe's training rules against an independent computation written here.

* default recipe (``configs/e2e_mask_rcnn_R_50_FPN_1x.yaml``, maskrcnn-benchmark's keys): RPN
  smooth-L1 beta 1/9, box head beta 1, both normalised by the sampled count, box-local binary
  mask targets; smooth-L1, BCE and cross-entropy from their formulas on hand-made matches;
* detectron2 (``configs/detectron2/mask_rcnn_R_50_FPN_1x.yaml``): unrounded anchors
  (detectron2's published ``generate_cell_anchors``), BGR input minus its mean, beta 0 (L1),
  RPN losses divided by ``BATCH_SIZE_PER_IMAGE`` x images, box loss by the sampled count,
  ROIAlignV2 with adaptive sampling; the converter's recommended config agrees with the file;
* torchvision (``configs/torchvision/maskrcnn_resnet50_fpn.yaml``): anchor strides derived from
  the padded image, and mask targets equal to ``project_masks_on_boxes`` on full bitmaps
  (polygons and RLE, resized and flipped) although no full-image mask is built: each instance's
  window is an exact crop of the full raster.
(PIL's resize of the detectron2 recipe: ``tests/data/test_transforms.py``; the whole torchvision
training step: ``test_torchvision_train_parity.py``.)
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList
from torchvision.models.detection.roi_heads import project_masks_on_boxes

from maskrcnn.checkpoint.convert.detectron2 import RECOMMENDED_CONFIG, RECOMMENDED_CONFIG_FILE
from maskrcnn.config import load_cfg
from maskrcnn.config.checks import CHOICES
from maskrcnn.modeling.build import build_roi_heads, build_rpn
from maskrcnn.modeling.detector import GeneralizedRCNN
from maskrcnn.modeling.roi_heads.mask_head.loss import TARGET_RULES
from maskrcnn.modeling.roi_heads.mask_head.roi_align_targets import roi_align_mask_targets
from maskrcnn.modeling.rpn.loss import RPN_LOSS_NORMALIZERS
from maskrcnn.structures.bounding_box import BoxList
from maskrcnn.structures.image_list import to_image_list
from maskrcnn.structures.segmentation_mask import InstanceMasks

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT = os.path.join(ROOT, "configs", "e2e_mask_rcnn_R_50_FPN_1x.yaml")
D2 = os.path.join(ROOT, RECOMMENDED_CONFIG_FILE)
TV = os.path.join(ROOT, "configs", "torchvision", "maskrcnn_resnet50_fpn.yaml")


def _cfg(path, *opts):
    return load_cfg(path, ["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu", "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 5, *opts])


# ------------------------------------------------------------------ independent formulas
def smooth_l1(x: np.ndarray, beta: float) -> np.ndarray:
    x = np.abs(x)
    return np.abs(x) if beta == 0 else np.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


def bce(logit: np.ndarray, target: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-logit))
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    m = logits.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(1))
    return lse - logits[np.arange(len(labels)), labels]


def encode(gt: np.ndarray, ref: np.ndarray, weights) -> np.ndarray:
    wx, wy, ww, wh = weights
    rw, rh = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    return np.stack([wx * ((gt[:, 0] + gw / 2) - (ref[:, 0] + rw / 2)) / rw,
                     wy * ((gt[:, 1] + gh / 2) - (ref[:, 1] + rh / 2)) / rh,
                     ww * np.log(gw / rw), wh * np.log(gh / rh)], 1)


# ----------------------------------------------------------------------------- RPN loss
# One ground truth on image 0; hand-labelled anchors (IoU in the comments); image 1 has none.
GT = [10.0, 10.0, 50.0, 50.0]
ANCHORS = np.array([[10, 10, 50, 50],      # IoU 1.00   positive
                    [12, 12, 52, 52],      # IoU 0.82   positive
                    [20, 10, 60, 50],      # IoU 0.60   ignored (between 0.3 and 0.7)
                    [30, 30, 70, 70],      # IoU 0.14   negative
                    [100, 100, 140, 140],  # IoU 0      negative
                    [0, 0, 20, 20]], np.float64)  # IoU 0.06 negative
LABELS = np.array([[1, 1, -1, 0, 0, 0], [0, 0, 0, 0, 0, 0]])


def _rpn_case(path):
    cfg = _cfg(path)
    loss = build_rpn(cfg, 8).loss_fn
    g = torch.Generator().manual_seed(0)
    objectness = torch.randn(2, 6, generator=g)
    deltas = 0.3 * torch.randn(2, 6, 4, generator=g)
    gts = [BoxList(torch.tensor([GT]), (160, 160)), BoxList(torch.zeros(0, 4), (160, 160))]
    got = loss(torch.tensor(ANCHORS, dtype=torch.float32), objectness, deltas, gts)
    return cfg, got, objectness.double().numpy(), deltas.double().numpy()


@pytest.mark.parametrize("path, beta, normalizer", [(DEFAULT, 1 / 9, "sampled"), (D2, 0.0, "batch_size"),
                                                    (TV, 1 / 9, "sampled")])
def test_rpn_losses_follow_the_recipe(path, beta, normalizer):
    cfg, got, objectness, deltas = _rpn_case(path)
    assert cfg.MODEL.RPN.SMOOTH_L1_BETA == pytest.approx(beta) and cfg.MODEL.RPN.LOSS_NORMALIZATION == normalizer
    sampled = LABELS >= 0  # 6 anchors per image: the balanced sampler takes every labelled one
    norm = sampled.sum() if normalizer == "sampled" else cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE * 2
    assert norm == (11 if normalizer == "sampled" else 512)
    obj = bce(objectness, np.clip(LABELS, 0, 1))[sampled].sum() / norm
    targets = encode(np.array([GT] * 6), ANCHORS, (1, 1, 1, 1))
    box = smooth_l1(deltas[0] - targets, beta).sum(1)[LABELS[0] == 1].sum() / norm
    assert float(got["loss_objectness"]) == pytest.approx(obj, rel=1e-6)
    assert float(got["loss_rpn_box_reg"]) == pytest.approx(box, rel=1e-5)
    assert box > 1e-4  # positives regress


# ------------------------------------------------------------------------ box head loss
@pytest.mark.parametrize("path, beta", [(DEFAULT, 1.0), (D2, 0.0), (TV, 1 / 9)])
def test_box_head_losses_follow_the_recipe(path, beta):
    cfg = _cfg(path)
    assert cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA == pytest.approx(beta)
    heads = build_roi_heads(cfg, 8, 5)
    g = torch.Generator().manual_seed(1)
    labels = [torch.tensor([2, 4, 0, 0, 0]), torch.tensor([0, 0, 0])]  # positives first
    sampled = []
    for lab in labels:
        s = BoxList(torch.rand(len(lab), 4, generator=g) * 50, (64, 64))
        s.add_field("labels", lab)
        s.add_field("regression_targets", torch.randn(len(lab), 4, generator=g))
        sampled.append(s)
    logits, deltas = torch.randn(8, 5, generator=g), 2 * torch.randn(8, 20, generator=g)
    got = heads.box.losses((logits, deltas), sampled)
    lab = torch.cat(labels).numpy()
    tgt = torch.cat([s.get_field("regression_targets") for s in sampled]).double().numpy()
    d = deltas.double().numpy().reshape(8, 5, 4)[np.arange(8), lab]
    box = smooth_l1(d - tgt, beta).sum(1)[lab > 0].sum() / 8  # all sampled proposals, not the 2 positives
    assert float(got["loss_classifier"]) == pytest.approx(cross_entropy(logits.double().numpy(), lab).mean(), rel=1e-6)
    assert float(got["loss_box_reg"]) == pytest.approx(box, rel=1e-6)


# ----------------------------------------------------------------------- mask head loss
def test_default_mask_targets_are_box_local_binary_cell_centres():
    cfg = _cfg(DEFAULT)
    assert cfg.MODEL.ROI_MASK_HEAD.TARGET_RULE == "center"
    mask = build_roi_heads(cfg, 8, 5).mask
    rects = [[8.3, 6.2, 40.1, 30.7], [30.4, 20.6, 60.2, 57.9]]  # instance = its rectangle (no centre on an edge)
    target = BoxList(torch.tensor(rects), (64, 64))
    target.add_field("masks", InstanceMasks([[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in rects], (64, 64)))
    boxes = np.array([[4.0, 2.0, 36.0, 34.0], [28.0, 18.0, 63.0, 50.0], [10.0, 10.0, 20.0, 20.0]])
    pos = BoxList(torch.tensor(boxes, dtype=torch.float32), (64, 64))
    pos.add_field("labels", torch.tensor([1, 3, 2]))
    pos.add_field("matched_idxs", torch.tensor([0, 1, 0]))
    m = cfg.MODEL.ROI_MASK_HEAD.RESOLUTION
    logits = torch.randn(3, 5, m, m, generator=torch.Generator().manual_seed(2))
    got = mask.losses(logits, [pos], [target])["loss_mask"]
    t = (np.arange(m) + 0.5) / m
    want = []
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        rx1, ry1, rx2, ry2 = rects[[0, 1, 0][k]]
        cx, cy = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
        inside = ((cy[:, None] > ry1) & (cy[:, None] < ry2) & (cx[None] > rx1) & (cx[None] < rx2)).astype(float)
        assert 0 < inside.mean() <= 1
        want.append(bce(logits[k, [1, 3, 2][k]].double().numpy(), inside))
    assert float(got) == pytest.approx(np.mean(want), rel=1e-6)


def _instances(rng, h, w):
    """Polygons (one with two parts, one crossing the right and bottom borders) and an RLE."""
    def star(cx, cy, r0, r1, n):
        a = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(r0, r1, n)
        pts = np.stack([np.clip(cx + r * np.cos(a), 0, w), np.clip(cy + r * np.sin(a), 0, h)], 1)
        return pts.astype(np.float32).astype(np.float64).ravel().tolist()
    polys = [[star(0.3 * w, 0.4 * h, 5, 0.25 * h, 9), star(0.45 * w, 0.3 * h, 3, 0.1 * h, 6)],
             [star(0.9 * w, 0.85 * h, 10, 0.4 * h, 12)], None]
    bitmap = np.zeros((h, w), np.uint8)
    bitmap[h // 3: h // 3 + h // 4, w // 2: w // 2 + w // 5] = 1
    bitmap[h // 2: h // 2 + 5, w // 2 + w // 5: w // 2 + w // 5 + 7] = 1
    return polys, mask_utils.encode(np.asfortranarray(bitmap))


def _random_boxes(rng, h, w, n):
    xy = rng.uniform(0, [w, h], (n, 2))
    b = np.concatenate([xy, xy + rng.uniform(0.5, 0.8 * max(h, w), (n, 2))], 1)
    b[:, 0::2], b[:, 1::2] = b[:, 0::2].clip(0, w), b[:, 1::2].clip(0, h)
    return torch.tensor(b, dtype=torch.float32)


@pytest.mark.parametrize("resize, flip", [(None, False), ((150, 210), False), ((90, 126), True)])
def test_torchvision_mask_targets_equal_project_masks_on_boxes(resize, flip):
    """The box-local rule against torchvision's own function on full-image bitmaps: polygons
    rasterised by pycocotools at the current size; the RLE instance flipped, then resized
    nearest, as torchvision's reference transforms and GeneralizedRCNNTransform do."""
    rng = np.random.default_rng(3)
    h, w = 120, 168
    polys, rle = _instances(rng, h, w)
    masks = InstanceMasks(polys, (h, w), rles=[None, None, rle])
    original = mask_utils.decode(rle)
    size = (h, w)
    if resize is not None:
        masks, size = masks.resize(resize), resize
    if flip:
        masks = masks.flip_horizontal()
        original = original[:, ::-1].copy()
    full = [mask_utils.decode(mask_utils.frPyObjects(
        [masks.points[masks.part_ptr[k]:masks.part_ptr[k + 1]].double().flatten().tolist()
         for k in range(len(masks.part_owner)) if masks.part_owner[k] == i], *size)).any(2) for i in range(2)]
    rle_now = F.interpolate(torch.from_numpy(original)[None, None].float(), size=size)[0, 0].byte().numpy()
    full = torch.from_numpy(np.stack(full + [rle_now]).astype(np.uint8))
    boxes, idx = _random_boxes(rng, *size, 300), torch.tensor(rng.integers(0, 3, 300))
    ours = roi_align_mask_targets([masks], [boxes], [idx], 28)
    theirs = project_masks_on_boxes(full, boxes, idx, 28)
    soft = (theirs > 0) & (theirs < 1)
    assert soft.float().mean() > 0.005 and (theirs == 1).float().mean() > 0.01  # soft edges, full insides
    # Same samples and weights; only float32 rounding of the sample positions differs.
    assert (ours - theirs).abs().max() <= 1e-4
    assert ((ours - theirs).abs() <= 1e-6).float().mean() >= 0.98


def test_torchvision_mask_targets_edge_cases():
    masks = InstanceMasks([[[-5.0, -5.0, 30.0, -5.0, 30.0, 20.0, -5.0, 20.0]], [[0.0, 0.0, 1.0, 0.0]]],
                          (40, 50))
    none = roi_align_mask_targets([masks], [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)], 7)
    assert none.shape == (0, 7, 7)
    boxes = torch.tensor([[0.0, 0.0, 40.0, 30.0], [10.0, 10.0, 20.0, 20.0]])
    out = roi_align_mask_targets([masks], [boxes], [torch.tensor([0, 1])], 14)
    full = torch.from_numpy(mask_utils.decode(mask_utils.frPyObjects(
        [[-5.0, -5.0, 30.0, -5.0, 30.0, 20.0, -5.0, 20.0]], 40, 50)).any(2)[None].astype(np.uint8))
    assert torch.allclose(out[0], project_masks_on_boxes(full, boxes[:1], torch.tensor([0]), 14)[0], atol=1e-6)
    assert out[1].abs().max() == 0  # a part of under 3 points has no area
    assert out.dtype == torch.float32
    assert roi_align_mask_targets([masks], [boxes.double()], [torch.tensor([0, 1])], 14).dtype == torch.float64


# ------------------------------------------------------------------------------ anchors
def detectron2_cell_anchors(size: float, ratios) -> np.ndarray:
    """detectron2's DefaultAnchorGenerator.generate_cell_anchors, as published."""
    out = []
    for ratio in ratios:
        w = math.sqrt(size ** 2.0 / ratio)
        h = ratio * w
        out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return np.array(out)


def test_detectron2_anchors_are_not_rounded():
    d2 = build_rpn(_cfg(D2), 8).anchor_generator
    tv = build_rpn(_cfg(TV), 8).anchor_generator
    assert not d2.rounding and tv.rounding and not d2.strides_from_image
    feats = [torch.zeros(1, 1, math.ceil(128 / s), math.ceil(192 / s)) for s in (4, 8, 16, 32, 64)]
    anchors, counts = d2(feats)
    start, worst = 0, 0.0
    for level, (size, stride, f) in enumerate(zip((32, 64, 128, 256, 512), (4, 8, 16, 32, 64), feats)):
        cells = detectron2_cell_anchors(size, (0.5, 1.0, 2.0)).astype(np.float32)
        assert np.array_equal(d2.cells[level].numpy(), cells)
        ys, xs = np.meshgrid(np.arange(f.shape[-2]) * stride, np.arange(f.shape[-1]) * stride, indexing="ij")
        shifts = np.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4).astype(np.float32)  # offset 0
        assert np.array_equal(anchors[start:start + counts[level]].numpy(), (shifts + cells[None]).reshape(-1, 4))
        start += counts[level]
        diff = (d2.cells[level] - tv.cells[level]).abs()
        assert diff[1].max() == 0 and diff.max() < 0.5  # ratio 1 equal; 0.5 and 2 off by < 0.5 px
        worst = max(worst, float(diff.max()))
    assert worst > 0.45  # size 128, ratio 0.5: half-width 90.51 rounded to 91


def test_torchvision_anchor_strides_come_from_the_padded_image():
    """An 800 x 1066 image padded to 32 (800 x 1088): torchvision's P6 stride is 800 // 13 = 61 down."""
    gen = build_rpn(_cfg(TV), 8).anchor_generator
    assert gen.strides_from_image and not build_rpn(_cfg(DEFAULT), 8).anchor_generator.strides_from_image
    batch = to_image_list([torch.zeros(3, 800, 1066), torch.zeros(3, 700, 1000)], 32)
    ph, pw = batch.tensors.shape[-2:]
    feats = [torch.zeros(2, 1, ph // 4, pw // 4)]
    for _ in range(3):
        feats.append(torch.zeros(2, 1, feats[-1].shape[-2] // 2, feats[-1].shape[-1] // 2))
    feats.append(torch.zeros(2, 1, math.ceil(feats[-1].shape[-2] / 2), math.ceil(feats[-1].shape[-1] / 2)))
    ours, _ = gen(feats)
    theirs = TVAnchorGenerator(sizes=((32,), (64,), (128,), (256,), (512,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)(
        TVImageList(batch.tensors, batch.image_sizes), feats)
    assert torch.equal(ours, theirs[0]) and torch.equal(ours, theirs[1])
    assert (ph // feats[-1].shape[-2], pw // feats[-1].shape[-1]) == (61, 64)
    fixed, _ = build_rpn(_cfg(DEFAULT), 8).anchor_generator(feats)
    assert not torch.equal(fixed, ours)  # the configured stride 64 puts P6's anchors elsewhere


# ------------------------------------------------------------------ detectron2's input
def test_detectron2_input_and_poolers():
    cfg = _cfg(D2)
    rpn = build_rpn(cfg, 8)
    heads = build_roi_heads(cfg, 8, 5)
    model = GeneralizedRCNN(backbone=torch.nn.Identity(), rpn=rpn, roi_heads=heads, pixel_mean=cfg.INPUT.PIXEL_MEAN,
                            pixel_std=cfg.INPUT.PIXEL_STD, to_bgr255=cfg.INPUT.TO_BGR255)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    bgr = image.numpy()[::-1].astype(np.float32) - np.array([103.530, 116.280, 123.675], np.float32)[:, None, None]
    assert np.array_equal(model.preprocess([image]).tensors[0].numpy(), bgr)
    for pooler in (heads.box.pooler, heads.mask.pooler):
        assert pooler.sampling_ratio == 0 and pooler.aligned  # ROIAlignV2, adaptive
    assert rpn.train_selector.post_nms_top_n == 1000 and rpn.train_selector.pre_nms_top_n == 2000
    assert cfg.INPUT.RESIZE_MODE == "pil" and cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800)


def test_detectron2_converter_recommends_the_recipe_file():
    cfg = load_cfg(D2)
    for key, value in RECOMMENDED_CONFIG.items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        assert (list(node) if isinstance(node, (list, tuple)) else node) == value, key


def test_new_choices_agree_with_the_modules():
    assert CHOICES["MODEL.ROI_MASK_HEAD.TARGET_RULE"][0] == TARGET_RULES
    assert CHOICES["MODEL.RPN.LOSS_NORMALIZATION"][0] == RPN_LOSS_NORMALIZERS


def test_strides_from_image_need_a_padded_batch():
    from maskrcnn.config import ConfigError

    with pytest.raises(ConfigError, match="DATALOADER.SIZE_DIVISIBILITY .*MODEL.RPN.ANCHOR_STRIDE"):
        load_cfg(TV, ["DATALOADER.SIZE_DIVISIBILITY", 0])
    assert load_cfg(TV, ["DATALOADER.SIZE_DIVISIBILITY", 64]).MODEL.RPN.ANCHOR_STRIDES_FROM_IMAGE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torchvision_mask_targets_on_cuda_equal_the_cpu_ones():
    rng = np.random.default_rng(4)
    polys, rle = _instances(rng, 120, 168)
    masks = InstanceMasks(polys, (120, 168), rles=[None, None, rle])
    boxes, idx = _random_boxes(rng, 120, 168, 200), torch.tensor(rng.integers(0, 3, 200))
    cpu = roi_align_mask_targets([masks], [boxes], [idx], 28)
    gpu = roi_align_mask_targets([masks.to("cuda")], [boxes.cuda()], [idx.cuda()], 28)
    assert gpu.device.type == "cuda" and (gpu.cpu() - cpu).abs().max() <= 1e-5


def test_instance_windows_are_crops_of_the_full_raster():
    """Each window is exactly the full-image pycocotools raster (RLE: flipped, then nearest-
    resized) on its pixels, and the raster is zero outside the window."""
    from maskrcnn.modeling.roi_heads.mask_head.roi_align_targets import instance_windows

    rng = np.random.default_rng(5)
    for trial in range(6):
        h, w = int(rng.integers(60, 200)), int(rng.integers(60, 200))
        polys, rle = _instances(rng, h, w)
        masks = InstanceMasks(polys, (h, w), rles=[None, None, rle])
        full = [mask_utils.decode(mask_utils.frPyObjects(parts, h, w)).any(2) for parts in polys[:2]]
        full.append(mask_utils.decode(rle).astype(bool))
        if trial % 2:
            masks = masks.flip_horizontal()
            full = [mask_utils.decode(mask_utils.frPyObjects(
                [masks.points[masks.part_ptr[k]:masks.part_ptr[k + 1]].double().flatten().tolist()
                 for k in range(len(masks.part_owner)) if masks.part_owner[k] == i], h, w)).any(2) for i in range(2)]
            full.append(mask_utils.decode(rle)[:, ::-1].astype(bool))
        for (window, x0, y0), bitmap in zip(instance_windows(masks), full):
            wh, ww = window.shape
            assert np.array_equal(window.astype(bool), bitmap[y0:y0 + wh, x0:x0 + ww])
            assert bitmap.sum() == window.sum() > 0
