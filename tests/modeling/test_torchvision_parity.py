"""This project computes what torchvision's Mask R-CNN computes, given the same weights.

torchvision's ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` gets seeded
random weights, adjusted to make confident detections (``tests/peers.py``); its state
dict goes through the torchvision converter into this project's model built from
``configs/torchvision/maskrcnn_resnet50_fpn.yaml``. Both run on the same images (several
sizes; batches of 1 and 2) and must agree: RPN proposals, final boxes (<= 0.01 px), scores
(<= 1e-4), labels (equal; >= 20 distinct ones per image), masks (every pixel not within 1e-5
of the threshold, IoU >= 0.99 per instance of >= 200 pixels, at the original resolution);
then the same through ``Predictor`` and through ``tools/test_net.py`` (COCO AP within 0.2).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn.config import get_cfg
from maskrcnn.data.transforms import ResizeShortestEdge
from maskrcnn.layers.mask_ops import paste_masks_in_image
from maskrcnn.modeling import build_model
from maskrcnn.predictor import Predictor
from maskrcnn.checkpoint.convert import convert_state_dict
from peers import make_confident, smooth_images, torchvision_maskrcnn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "configs", "torchvision", "maskrcnn_resnet50_fpn.yaml")
SIZES = [(480, 640), (600, 500), (333, 517)]  # (H, W): landscape, portrait, odd sizes
BOX_TOL, SCORE_TOL, MASK_IOU = 0.01, 1e-4, 0.99
TIE = 1e-5  # torchvision's pasted value this close to 0.5: float rounding decides the pixel


def _cfg():
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu"])
    return cfg


@pytest.fixture(scope="module")
def models():
    tv = make_confident(torchvision_maskrcnn(frozen_bn=False))
    state, report = convert_state_dict(tv.state_dict(), "torchvision")
    ours = build_model(_cfg()).eval()
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return tv, ours, state


@pytest.fixture(scope="module")
def images():
    return smooth_images(SIZES, seed=3)


@pytest.fixture(scope="module")
def runs(models, images):
    """Both models on batches [0] and [1, 2]: (tv proposals, tv detections, ours proposals, ours detections)."""
    tv, ours, _ = models
    resize = ResizeShortestEdge(800, 1333, "torchvision")
    out = []
    for batch in ([images[0]], [images[1], images[2]]):
        with torch.no_grad():
            floats = [im.float() / 255 for im in batch]
            image_list, _ = tv.transform(floats)
            features = tv.backbone(image_list.tensors)
            tv_props, _ = tv.rpn(image_list, features)
            tv_dets = tv(floats)
            resized = [resize(im)[0] for im in batch]
            b = ours.preprocess(resized)
            assert b.image_sizes == image_list.image_sizes
            our_props = ours.rpn.inference(ours.rpn(ours.backbone(b.tensors)), b.image_sizes)
            our_dets = ours.predict(resized)
        out.append((tv_props, tv_dets, our_props, our_dets))
    return out


def _check_masks(ours: torch.Tensor, values: torch.Tensor) -> None:
    """``ours`` (N, H, W) bool against torchvision's pasted probabilities ``values`` (N, H, W):
    every pixel whose value is farther than TIE from the 0.5 threshold is the same, and
    masks of >= 200 pixels have IoU >= 0.99.

    Pixels whose interpolated value is at the threshold (common with saturated probabilities:
    whole rows of a small mask can land on 0.5) are decided by float32 rounding in
    torchvision and float64 tap positions here, so they may go either way.
    """
    theirs = values > 0.5
    wrong = ((ours != theirs) & ((values - 0.5).abs() > TIE)).flatten(1).sum(1)
    assert not wrong.any(), f"pixels away from the threshold differ: {wrong.tolist()}"
    inter, union = (ours & theirs).flatten(1).sum(1), (ours | theirs).flatten(1).sum(1)
    large = theirs.flatten(1).sum(1) >= 200
    assert (inter[large] >= MASK_IOU * union[large]).all()


def _pair(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, d_tv: dict) -> list:
    """For each torchvision detection, in order, the index of ours with the same label, the
    box within BOX_TOL and the score within SCORE_TOL: the same position, except that
    detections whose scores are tied within SCORE_TOL may come in either order."""
    assert len(boxes) == len(d_tv["boxes"])
    free = torch.ones(len(boxes), dtype=torch.bool)
    pairs = []
    for box, score, label in zip(d_tv["boxes"], d_tv["scores"], d_tv["labels"]):
        ok = (free & (labels == label) & ((boxes - box).abs().amax(1) <= BOX_TOL)
              & ((scores - score).abs() <= SCORE_TOL))
        assert ok.any(), (box.tolist(), float(score), int(label))
        pairs.append(int(ok.nonzero()[0]))
        free[pairs[-1]] = False
    return pairs


def test_detections_are_confident(runs):
    # The adjusted random model must make a full set of detections with spread-out scores
    # and many classes (>= 20 labels in every compared image), otherwise the comparisons
    # below would be vacuous: a label swap between two classes could go unnoticed.
    for _, tv_dets, _, _ in runs:
        for d in tv_dets:
            assert len(d["scores"]) == 100
            assert d["scores"].max() > 0.4 and d["scores"].min() < 0.3
            assert len(d["labels"].unique()) >= 20


def test_rpn_proposals_match(runs):
    """The 1000 proposals per image are the same boxes (<= 0.01 px). Objectness values that
    agree to ~1e-6 can still swap two near-tied proposals in the order, or at the top-k /
    NMS boundary, so the sets are compared: at least 99.5% of each side has a partner."""
    for tv_props, _, our_props, _ in runs:
        for p_tv, p_ours in zip(tv_props, our_props):
            assert len(p_tv) == len(p_ours) == 1000
            close = (p_tv[:, None, :] - p_ours.bbox[None, :, :]).abs().amax(-1) <= BOX_TOL
            assert close.any(1).float().mean() >= 0.995 and close.any(0).float().mean() >= 0.995
            same_place = (p_tv - p_ours.bbox).abs().amax(-1) <= BOX_TOL
            assert same_place.float().mean() >= 0.9  # and mostly in the same order


def test_final_detections_match(runs, images):
    k = 0
    for _, tv_dets, _, our_dets in runs:
        for d_tv, d in zip(tv_dets, our_dets):
            h, w = images[k].shape[1:]
            k += 1
            d = d.resize((h, w))
            pairs = _pair(d.bbox, d.get_field("scores"), d.get_field("labels"), d_tv)
            ours = paste_masks_in_image(d.get_field("mask"), d.bbox, (h, w), rule="torchvision")
            _check_masks(ours[pairs], d_tv["masks"][:, 0])
            assert (d_tv["masks"][:, 0] > 0.5).flatten(1).any(1).sum() > 50  # most masks are non-empty


def test_predictor_matches(models, images, runs, tmp_path):
    tv, _, state = models
    weights = tmp_path / "converted.pth"
    torch.save({"model": state}, weights)
    predictor = Predictor.from_config(CONFIG, str(weights), opts=["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu"])
    out = predictor(images[0].permute(1, 2, 0).numpy())
    d_tv = runs[0][1][0]
    pairs = _pair(out["boxes"], out["scores"], out["labels"], d_tv)
    assert out["masks"].shape == d_tv["masks"][:, 0].shape
    _check_masks(out["masks"][pairs], d_tv["masks"][:, 0])


def _write_dataset(root, images, tv_dets):
    """A COCO dataset whose ground truth is derived from torchvision's detections.

    Ground truth = torchvision's detections scoring >= 0.3, boxes jittered and masks shifted
    by a few pixels (so AP is neither 0 nor 100 and depends on exact boxes, scores and masks). Categories
    1..90 so that label i is category id i (torchvision's COCO layout).
    """
    rng = np.random.default_rng(0)
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": f"c{i}"} for i in range(1, 91)]}
    for i, (im, det) in enumerate(zip(images, tv_dets)):
        h, w = im.shape[1:]
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(root / f"{i}.png")
        coco["images"].append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w})
        masks = (det["masks"][:, 0] > 0.5).numpy()
        for box, label, score, m in zip(det["boxes"], det["labels"], det["scores"], masks):
            if score < 0.3 or not m.any():
                continue
            x1, y1, x2, y2 = (box + torch.from_numpy(rng.uniform(-3, 3, 4)).float()).tolist()
            shifted = np.roll(m, 2, axis=1)  # masks moved by 2 px: segm AP below 100 too
            rle = mask_util.encode(np.asfortranarray(shifted.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                        "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                        "area": float(m.sum()), "iscrowd": 0, "segmentation": rle})
    (root / "ann.json").write_text(json.dumps(coco))
    return coco


def _tv_results(dets):
    results = []
    for i, det in enumerate(dets):
        masks = (det["masks"][:, 0] > 0.5).numpy()
        for box, label, score, m in zip(det["boxes"], det["labels"], det["scores"], masks):
            x1, y1, x2, y2 = box.tolist()
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": i + 1, "category_id": int(label), "score": float(score),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": rle})
    return results


def _pycocotools_ap(ann_file, results, iou_type: str) -> float:
    gt = COCO(ann_file)
    ev = COCOeval(gt, gt.loadRes(results), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0] * 100)


def test_test_net_gives_torchvision_ap(models, images, tmp_path):
    """tools/test_net.py with torchvision's own .pth as MODEL.WEIGHT (converted on load)."""
    tv, _, _ = models
    with torch.no_grad():
        dets = [tv([im.float() / 255])[0] for im in images[:2]]
    coco = _write_dataset(tmp_path, images[:2], dets)
    assert len(coco["annotations"]) >= 5
    expected = {t: _pycocotools_ap(str(tmp_path / "ann.json"), _tv_results(dets), t) for t in ("bbox", "segm")}
    tv_file = tmp_path / "torchvision_maskrcnn.pth"
    torch.save(tv.state_dict(), tv_file)  # exactly as torchvision saves it
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "test_net.py"), "--config-file", CONFIG,
           "MODEL.WEIGHT", str(tv_file), "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out),
           "DATASETS.TEST", "('parity',)", "TEST.IMS_PER_BATCH", "1",
           "DATASETS.CATALOG.parity.ANN_FILE", str(tmp_path / "ann.json"),
           "DATASETS.CATALOG.parity.IMG_DIR", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    metrics = json.loads(next(out.rglob("metrics.json")).read_text())
    got = metrics["parity"] if "parity" in metrics else metrics
    for iou_type in ("bbox", "segm"):
        exp_ap, got_ap = expected[iou_type], got[iou_type]["AP"]
        assert 5 < exp_ap < 99, expected  # a meaningful AP, not a trivial one
        assert abs(got_ap - exp_ap) <= 0.2, (iou_type, got_ap, exp_ap)
