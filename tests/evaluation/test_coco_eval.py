"""Round-trip tests of evaluate_coco with real pycocotools and files in tmp_path."""
import json
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from maskrcnn.evaluation import evaluate_coco
from maskrcnn.structures.bounding_box import BoxList

METRIC_KEYS = {"AP", "AP50", "AP75", "APs", "APm", "APl"}
# image id -> (height, width); image 2 is 4000 wide, 3000 high
IMAGES = {1: (480, 640), 2: (3000, 4000), 5: (300, 500)}
# (image id, category id, xyxy integer rectangle, kind)
INSTANCES = [
    (1, 3, (10, 20, 110, 220), "polygon"),
    (1, 7, (300, 100, 500, 400), "polygon"),
    (2, 3, (100, 200, 1100, 1700), "polygon"),
    (2, 7, (2000, 1000, 3500, 2600), "rle"),
    (2, 7, (50, 2500, 600, 2900), "crowd"),
    (5, 3, (0, 0, 500, 300), "polygon"),
    (5, 3, (5, 5, 25, 30), "polygon"),      # small (area 500)
    (5, 7, (440, 240, 490, 290), "polygon"),  # medium (area 2500)
]


def rect_mask(size, box):
    mask = np.zeros(size, dtype=np.uint8)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = 1
    return mask


def uncompressed_rle(mask):
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def write_coco_json(path):
    images = [{"id": i, "file_name": f"{i}.jpg", "height": h, "width": w} for i, (h, w) in IMAGES.items()]
    anns = []
    for ann_id, (img_id, cat_id, box, kind) in enumerate(INSTANCES, start=1):
        x1, y1, x2, y2 = box
        ann = {"id": ann_id, "image_id": img_id, "category_id": cat_id, "iscrowd": int(kind == "crowd"),
               "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
        if kind == "polygon":
            ann["segmentation"] = [[x1, y1, x2, y1, x2, y2, x1, y2]]
        elif kind == "rle":
            rle = mask_util.encode(np.asfortranarray(rect_mask(IMAGES[img_id], box)))
            ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("utf-8")}
        else:
            ann["segmentation"] = uncompressed_rle(rect_mask(IMAGES[img_id], box))
        anns.append(ann)
    cats = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "instances.json"
    write_coco_json(path)
    return SimpleNamespace(coco=COCO(str(path)), contiguous_to_category_id={1: 3, 2: 7},
                           class_names=["__background__", "cat", "dog"], name="toy_coco")


def network_size(size, shortest=800):
    scale = shortest / min(size)
    return int(round(size[0] * scale)), int(round(size[1] * scale))


def gt_as_network_predictions(shift_half_width=False):
    """Per image, the non-crowd GT as detections at the network's input scale."""
    preds = {}
    for img_id, size in IMAGES.items():
        items = [(c, b) for i, c, b, k in INSTANCES if i == img_id and k != "crowd"]
        boxes = torch.tensor([b for _, b in items], dtype=torch.float32)
        if shift_half_width:
            boxes[:, 0::2] += (boxes[:, 2:3] - boxes[:, 0:1]) / 2
        net = BoxList(boxes, size).resize(network_size(size))
        net.add_field("scores", torch.linspace(0.9, 0.5, len(items)))
        net.add_field("labels", torch.tensor([{3: 1, 7: 2}[c] for c, _ in items], dtype=torch.int64))
        net.add_field("mask", torch.ones(len(items), 1, 28, 28))
        preds[img_id] = net
    return preds


def to_original_size(preds):
    # Exactly what the inference loop does: BoxList.resize carries scores, labels and M x M masks.
    return {i: b.resize(IMAGES[i]) for i, b in preds.items()}


def test_ground_truth_round_trip_scores_100(dataset, tmp_path, caplog):
    preds = to_original_size(gt_as_network_predictions())
    with caplog.at_level(logging.INFO):
        metrics = evaluate_coco(dataset, preds, output_dir=str(tmp_path / "out"))
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert set(metrics[iou_type]) == METRIC_KEYS
        for key in METRIC_KEYS:
            assert metrics[iou_type][key] == pytest.approx(100.0, abs=1e-6), (iou_type, key)
    assert "cat" in caplog.text and "dog" in caplog.text and "100.00" in caplog.text


def test_predictions_at_wrong_scale_raise(dataset):
    preds = gt_as_network_predictions()  # never resized back to the original size
    with pytest.raises(ValueError, match=r"image id \d.*\(h, w\)"):
        evaluate_coco(dataset, preds)


def test_unknown_image_raises(dataset):
    preds = to_original_size(gt_as_network_predictions())
    preds[99] = BoxList(torch.zeros(0, 4), (10, 10))
    with pytest.raises(ValueError, match="99"):
        evaluate_coco(dataset, preds)


def test_shifted_boxes_score_low(dataset):
    preds = to_original_size(gt_as_network_predictions(shift_half_width=True))
    metrics = evaluate_coco(dataset, preds)
    assert metrics["bbox"]["AP"] < 50 and metrics["segm"]["AP"] < 50
    assert metrics["bbox"]["AP50"] < 50 and metrics["segm"]["AP50"] < 50


def test_output_files(dataset, tmp_path):
    out = tmp_path / "eval"
    metrics = evaluate_coco(dataset, to_original_size(gt_as_network_predictions()), output_dir=str(out))
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) == {"bbox", "segm"}
    assert all(set(v) == METRIC_KEYS for v in saved.values())
    assert saved["bbox"]["AP"] == pytest.approx(metrics["bbox"]["AP"])
    results = json.loads((out / "coco_instances_results.json").read_text())
    assert len(results) == sum(k != "crowd" for *_, k in INSTANCES)
    assert {r["category_id"] for r in results} == {3, 7}
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"}
        assert r["segmentation"]["size"] == list(IMAGES[r["image_id"]])
        assert isinstance(r["segmentation"]["counts"], str) and len(r["bbox"]) == 4
        # pasted all-ones masks reproduce the GT rectangles: exactly for boxes up to
        # ~2.4 * 28 px, otherwise up to small corner triangles (see mask_ops docs)
        gts = [a for a in dataset.coco.imgToAnns[r["image_id"]]
               if a["category_id"] == r["category_id"] and not a["iscrowd"]]
        iou = max(mask_util.iou([r["segmentation"]], [dataset.coco.annToRLE(a)], [0])[0, 0] for a in gts)
        small = max(r["bbox"][2], r["bbox"][3]) < 2.4 * 28
        assert iou == 1.0 if small else iou > 0.999


def test_no_predictions_gives_zero(dataset, tmp_path):
    metrics = evaluate_coco(dataset, {}, output_dir=str(tmp_path))
    assert set(metrics) == {"bbox"}  # no masks anywhere: segm skipped
    assert metrics["bbox"]["AP"] == 0.0
    assert all(v == 0.0 or math.isnan(v) for v in metrics["bbox"].values())
    empty = {}
    for img_id, size in IMAGES.items():
        b = BoxList(torch.zeros(0, 4), size)
        b.add_field("scores", torch.zeros(0))
        b.add_field("labels", torch.zeros(0, dtype=torch.int64))
        b.add_field("mask", torch.zeros(0, 1, 28, 28))
        empty[img_id] = b
    metrics = evaluate_coco(dataset, empty, output_dir=str(tmp_path))
    assert metrics["bbox"]["AP"] == 0.0 and metrics["segm"]["AP"] == 0.0
    assert json.loads((tmp_path / "coco_instances_results.json").read_text()) == []


def test_boxes_only_skip_segm(dataset):
    preds = to_original_size(gt_as_network_predictions())
    for b in preds.values():
        del b.extra_fields["mask"]
    metrics = evaluate_coco(dataset, preds)
    assert set(metrics) == {"bbox"} and metrics["bbox"]["AP"] == pytest.approx(100.0)


def test_mask_threshold_changes_the_evaluated_masks(dataset, tmp_path):
    """MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD reaches the pasted masks that are scored:
    probabilities 0.7 on the left half of every mask, 1 on the right half."""
    preds = to_original_size(gt_as_network_predictions())
    for b in preds.values():
        mask = torch.ones(len(b), 1, 28, 28)
        mask[..., :14] = 0.7
        b.add_field("mask", mask)
    low = evaluate_coco(dataset, preds, output_dir=str(tmp_path / "low"))
    high = evaluate_coco(dataset, preds, output_dir=str(tmp_path / "high"), mask_threshold=0.8)
    assert high["bbox"] == low["bbox"]
    assert low["segm"]["AP75"] == pytest.approx(100.0) and high["segm"]["AP75"] == 0.0

    def areas(folder):
        results = json.loads((tmp_path / folder / "coco_instances_results.json").read_text())
        return np.array([mask_util.area(r["segmentation"]) for r in results], dtype=float)

    ratio = areas("high") / areas("low")
    assert ((ratio > 0.4) & (ratio < 0.6)).all(), ratio


def test_evaluate_refuses_a_mask_threshold_below_one_half():
    from maskrcnn.engine.inference import evaluate

    with pytest.raises(ValueError, match="POSTPROCESS_MASKS_THRESHOLD is 0.3"):
        evaluate(None, [], "", paste_rule="center", mask_threshold=0.3)
