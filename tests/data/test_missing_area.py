"""COCO files without ``area`` / ``iscrowd`` (detection-only or hand-made exports), on real json and
PNG files in tmp_path: the loader fills both in memory (the area as pycocotools counts it, from the
segmentation, else the box), pycocotools' COCOeval then runs, the summary line and
tools/check_dataset.py count them, and an area that is not a number >= 0 is an error."""
import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import write_box_images, write_tiny_config
from maskrcnn.data.datasets.check import check_dataset, fill_missing_fields
from maskrcnn.data.datasets.coco import COCODataset, DatasetError, load_coco_json
from maskrcnn.evaluation import evaluate_coco
from maskrcnn.structures.bounding_box import BoxList

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H, W = 96, 128
CATS = [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]
# image id -> objects (category id, xywh rectangle, kind); each is drawn filled
OBJECTS = {1: [(3, (10, 12, 30, 30), "polygon"), (7, (60, 20, 50, 16), "rle")],
           2: [(7, (20, 50, 60, 20), "polygon"), (3, (90, 4, 30, 30), "uncompressed")],
           3: [(3, (70, 40, 36, 36), "rle"), (7, (4, 70, 40, 20), "crowd")]}


def _rect_mask(box):
    x, y, w, h = box
    mask = np.zeros((H, W), np.uint8)
    mask[y:y + h, x:x + w] = 1
    return mask


def _uncompressed(mask):
    flat = mask.flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": [H, W], "counts": ([0] + counts) if flat[0] else counts}


def _segmentation(box, kind):
    x, y, w, h = box
    if kind == "polygon":
        return [[x, y, x + w, y, x + w, y + h, x, y + h]]
    if kind == "rle":
        rle = mask_util.encode(np.asfortranarray(_rect_mask(box)))
        return {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    return _uncompressed(_rect_mask(box))  # "uncompressed" and "crowd"


def _coco(with_masks=True):
    """Every object of OBJECTS without ``area`` and, but for the crowd one, without ``iscrowd``
    (annotation 2 spells them null); ids 1..6 in order; ``with_masks`` False: box-only."""
    anns = []
    for img_id, objects in OBJECTS.items():
        for cat, box, kind in objects:
            ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": list(box)}
            if with_masks:
                ann["segmentation"] = _segmentation(box, kind)
            if kind == "crowd":
                ann["iscrowd"] = 1
            anns.append(ann)
    anns[1].update(area=None, iscrowd=None)
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in OBJECTS]
    return {"images": images, "annotations": anns, "categories": CATS}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("noarea")
    img_dir = base / "images"
    write_box_images(img_dir, {i: [(cat, box) for cat, box, _ in objs] for i, objs in OBJECTS.items()}, H, W)
    out = {"img_dir": str(img_dir)}
    for name, with_masks in (("segmented", True), ("box_only", False)):
        out[name] = str(base / f"{name}.json")
        with open(out[name], "w") as f:
            json.dump(_coco(with_masks), f)
    return out


def _pycocotools_area(seg):
    """``maskUtils.area`` of the segmentation as ``COCO.annToRLE`` makes it an RLE."""
    if isinstance(seg, list):
        return float(mask_util.area(mask_util.merge(mask_util.frPyObjects(seg, H, W))))
    rle = mask_util.frPyObjects(seg, H, W) if isinstance(seg["counts"], list) else seg
    return float(mask_util.area(rle))


def test_missing_area_is_pycocotools_area_of_the_segmentation_in_memory_only(files):
    before = open(files["segmented"], "rb").read()
    shapes = {"size": [H, W], "counts": mask_util.encode(np.asfortranarray(  # a disc: not its box's area
        (np.hypot(*np.mgrid[:H, :W] - np.array([[[40]], [[60]]])) < 25).astype(np.uint8)))["counts"].decode()}
    data = json.loads(before)
    data["annotations"] += [  # a triangle, two parts with one degenerate, a part crossing the border, a disc
        {"id": 7, "image_id": 1, "category_id": 3, "bbox": [10, 50, 30, 30],
         "segmentation": [[10, 50, 40, 80, 10, 80]]},
        {"id": 8, "image_id": 1, "category_id": 3, "bbox": [50, 50, 40, 20],
         "segmentation": [[50, 50, 70, 50, 70, 70, 50, 70], [80, 50, 90, 70], [75, 50, 90, 50, 82, 70]]},
        {"id": 9, "image_id": 2, "category_id": 7, "bbox": [100, 60, 28, 36],
         "segmentation": [[100, 60, 150, 60, 150, 120, 100, 120]]},
        {"id": 10, "image_id": 3, "category_id": 7, "bbox": [35, 15, 50, 50], "segmentation": shapes}]
    filled = fill_missing_fields(data)
    assert all("area" not in a for a in data["annotations"][2:])  # the parsed dict is not modified
    anns = {a["id"]: a for a in filled["annotations"]}
    for ann in data["annotations"]:
        expected = _pycocotools_area([p for p in ann["segmentation"] if len(p) >= 6]
                                     if isinstance(ann["segmentation"], list) else ann["segmentation"])
        assert anns[ann["id"]]["area"] == expected, ann["id"]
    assert anns[1]["area"] == 900 and anns[7]["area"] != 450 and anns[9]["area"] == 28 * 36
    assert abs(anns[10]["area"] - math.pi * 25 ** 2) < 60 and anns[10]["area"] != 2500
    assert [a["iscrowd"] for a in filled["annotations"]] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    ds = COCODataset(files["segmented"], files["img_dir"], "segmented", is_train=False)
    assert {i: a["area"] for i, a in ds.coco.anns.items()} == {i: anns[i]["area"] for i in range(1, 7)}
    assert [a["iscrowd"] for a in ds.coco.dataset["annotations"]] == [0, 0, 0, 0, 0, 1]
    assert load_coco_json(files["segmented"]).anns[2]["area"] == 50 * 16
    assert open(files["segmented"], "rb").read() == before  # never written back


def test_box_only_annotations_get_the_box_area(files):
    ds = COCODataset(files["box_only"], files["img_dir"], "box_only", is_train=False, require_masks=False)
    boxes = [box for objects in OBJECTS.values() for _, box, _ in objects]
    assert [ds.coco.anns[i + 1]["area"] for i in range(6)] == [float(w * h) for _, _, w, h in boxes]
    assert [ds.coco.anns[i + 1]["iscrowd"] for i in range(6)] == [0, 0, 0, 0, 0, 1]


def _perfect_predictions(ds, masks):
    """Each image's ground truth as detections, all-ones masks reproducing the rectangles."""
    predictions = {}
    for i in range(len(ds)):
        target = ds.get_target(i)
        boxes = BoxList(target.bbox.clone(), target.size)
        boxes.add_field("labels", target.get_field("labels"))
        boxes.add_field("scores", torch.linspace(0.9, 0.5, len(target)))
        if masks:
            boxes.add_field("mask", torch.ones(len(target), 1, 28, 28))
        predictions[ds.ids[i]] = boxes
    return predictions


def test_cocoeval_scores_perfect_predictions_100(files, caplog):
    with pytest.raises(KeyError):  # what the fill-in prevents: pycocotools on the file itself
        gt = COCO(files["segmented"])
        evaluation = COCOeval(gt, gt.loadRes([{"image_id": 1, "category_id": 3, "bbox": [10, 12, 30, 30],
                                               "score": 1.0}]), "bbox")
        evaluation.evaluate()
    with caplog.at_level(logging.INFO, logger="maskrcnn.data.datasets.coco"):
        ds = COCODataset(files["segmented"], files["img_dir"], "segmented", is_train=False)
    assert ("segmented: 3 images, 6 annotations; 6 missing areas computed (from the segmentation, else "
            "the box), 5 missing iscrowd set to 0; no problems") in caplog.text
    assert all(r.levelno == logging.INFO for r in caplog.records)
    metrics = evaluate_coco(ds, _perfect_predictions(ds, masks=True))
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(100.0), iou_type
        # the computed areas sort the objects by size: 3 small (900, 800, 900 px), 2 medium, no large
        assert metrics[iou_type]["APs"] == pytest.approx(100.0) and metrics[iou_type]["APm"] == pytest.approx(100.0)
        assert math.isnan(metrics[iou_type]["APl"]), iou_type
    box_only = COCODataset(files["box_only"], files["img_dir"], "box_only", is_train=False, require_masks=False)
    metrics = evaluate_coco(box_only, _perfect_predictions(box_only, masks=False))
    assert set(metrics) == {"bbox"} and metrics["bbox"]["AP"] == pytest.approx(100.0)
    worse = _perfect_predictions(box_only, masks=False)
    first = worse[1]
    worse[1] = BoxList(first.bbox[:1], first.size)  # one ground-truth box missed
    for name in ("labels", "scores"):
        worse[1].add_field(name, first.get_field(name)[:1])
    assert evaluate_coco(box_only, worse)["bbox"]["AP"] < 100.0


def _refused(files, tmp_path, key, value):
    """Annotation 4 given ``key: value``, written to a file; loading it must fail.
    Returns the data, the file and the error message."""
    data = _coco()
    data["annotations"][3][key] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        COCODataset(str(path), files["img_dir"], "bad")
    return data, path, str(info.value)


@pytest.mark.parametrize("area", ["900", -1, -0.5, float("nan"), float("inf"), True, [900]])
def test_an_area_that_is_not_a_number_at_least_0_is_an_error(files, tmp_path, area):
    data, path, msg = _refused(files, tmp_path, "area", area)
    assert f"dataset 'bad' has 1 problem to fix before it can be used (annotations: {path}" in msg
    assert (f"invalid area: annotation id 4 (image id 2, {os.path.join(files['img_dir'], '2.png')}): "
            f"area {area!r} is not a number >= 0") in msg
    assert "remove the key to have it computed" in msg
    data["annotations"][3]["area"] = 0  # zero is an area
    path.write_text(json.dumps(data))
    assert check_dataset(str(path), files["img_dir"], "zero").report.errors == []


def test_check_dataset_tool_counts_the_filled_fields(files):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "check_dataset.py"), "--datasets", "s",
                           "DATASETS.CATALOG.s.ANN_FILE", files["segmented"],
                           "DATASETS.CATALOG.s.IMG_DIR", files["img_dir"]],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == ("s: 3 images, 6 annotations; 6 missing areas computed (from the "
                                           "segmentation, else the box), 5 missing iscrowd set to 0; no problems")


def test_mask_rcnn_trains_and_evaluates_a_file_without_area_and_iscrowd(files, tmp_path):
    cfg = write_tiny_config(tmp_path / "cfg.yaml", {"s": (files["segmented"], files["img_dir"])}, ["s"], ["s"],
                            tmp_path / "out")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", cfg],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "inference" / "s" / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert metrics["bbox"]["AP"] is not None and metrics["segm"]["AP"] is not None


@pytest.mark.parametrize("crowd", ["yes", "0", 2, -1, 0.5, float("nan"), [0]])
def test_an_iscrowd_other_than_0_or_1_is_an_error(files, tmp_path, crowd):
    data, path, msg = _refused(files, tmp_path, "iscrowd", crowd)
    assert (f"invalid iscrowd: annotation id 4 (image id 2, {os.path.join(files['img_dir'], '2.png')}): "
            f"iscrowd {crowd!r} is not 0 or 1") in msg
    for fine in (0, 1, 0.0, False, True):  # pycocotools reads each with int()
        data["annotations"][3]["iscrowd"] = fine
        path.write_text(json.dumps(data))
        assert check_dataset(str(path), files["img_dir"], "fine").report.errors == [], fine
