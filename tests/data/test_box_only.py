"""Box-only annotations (a valid box, no segmentation) on real files written to tmp_path:
kept as box targets for Faster R-CNN, trained and evaluated with pycocotools; their images
left out, with a warning naming the ids, for Mask R-CNN; a clear error when nothing is left."""
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from conftest import write_box_images, write_tiny_config
from maskrcnn.data.datasets.check import check_dataset, parse_annotation
from maskrcnn.data.datasets.coco import COCODataset, MissingMasksError
from maskrcnn.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge
from maskrcnn.evaluation import evaluate_coco
from maskrcnn.structures.bounding_box import BoxList
from maskrcnn.utils.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H, W = 96, 128
CATS = [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]
# image id -> objects (category id, xywh box); each is drawn filled
OBJECTS = {1: [(3, (10, 12, 30, 30)), (7, (60, 20, 50, 16))], 2: [(7, (20, 50, 80, 20))],
           3: [(3, (70, 40, 36, 36))], 4: [(3, (8, 8, 40, 40)), (7, (56, 60, 64, 18))]}
NO_SEGMENTATION = ("missing", None, [])  # the three spellings of "no segmentation"


def _polygon(box):
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _coco(segmented_images):
    """Every object of OBJECTS; those of ``segmented_images`` with a polygon, the others with
    none (cycling through the spellings of NO_SEGMENTATION); annotation ids 1..6 in order."""
    anns, k = [], 0
    for img_id, objects in OBJECTS.items():
        for cat, box in objects:
            ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": list(box),
                   "area": float(box[2] * box[3]), "iscrowd": 0}
            if img_id in segmented_images:
                ann["segmentation"] = _polygon(box)
            elif NO_SEGMENTATION[k % 3] != "missing":
                ann["segmentation"] = NO_SEGMENTATION[k % 3]
            k += img_id not in segmented_images
            anns.append(ann)
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in OBJECTS]
    return {"images": images, "annotations": anns, "categories": CATS}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("boxonly")
    img_dir = base / "images"
    write_box_images(img_dir, OBJECTS, H, W)
    out = {"img_dir": str(img_dir), "base": base}
    for name, segmented in (("box_only", ()), ("mixed", (1, 2))):
        out[name] = str(base / f"{name}.json")
        with open(out[name], "w") as f:
            json.dump(_coco(segmented), f)
    return out


def test_parse_annotation_keeps_a_box_without_segmentation():
    base = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [-4, 2, 20, 10], "iscrowd": 0}
    for seg in NO_SEGMENTATION:
        ann = dict(base) if seg == "missing" else dict(base, segmentation=seg)
        issues = []
        inst = parse_annotation(ann, (H, W), issues)
        assert inst.box == (0.0, 2.0, 16.0, 12.0) and inst.polygons is None and inst.rle is None
        assert not inst.has_mask and [i[1] for i in issues] == ["box clipped"]
    assert parse_annotation(dict(base, segmentation=_polygon((0, 2, 16, 10))), (H, W)).has_mask
    # a segmentation given but empty stays a repair (dropped), not a box-only target
    issues = []
    assert parse_annotation(dict(base, segmentation={"size": [H, W], "counts": ""}), (H, W), issues) is None
    assert [i[1] for i in issues] == ["box clipped", "annotation dropped (empty segmentation)"]
    assert parse_annotation(dict(base, iscrowd=1), (H, W)) is None  # crowd: never a target


def test_check_counts_box_only_apart_from_errors_and_repairs(files, tmp_path):
    data = _coco((1, 2))
    data["annotations"] += [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 8, 8], "iscrowd": 1},
                            {"id": 8, "image_id": 2, "category_id": 3, "bbox": [5, 5, 0, 9], "iscrowd": 0}]
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(data))
    report = check_dataset(str(path), files["img_dir"], "mixed").report
    assert report.errors == [] and report.num("repaired") == 1  # annotation 8: empty box, dropped
    assert report.box_only == {1: [7], 3: [4], 4: [5, 6]} and report.num_box_only == 4  # 7: a crowd
    assert report.summary() == (
        "mixed: 4 images, 8 annotations; 4 box-only annotations (no segmentation) in 3 images, annotation "
        "ids 4, 5, 6, 7: box targets for Faster R-CNN (MODEL.MASK_ON False); Mask R-CNN leaves those images "
        "out; 2 missing areas computed (from the segmentation, else the box); repaired: 1 annotation dropped "
        "(empty box)")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "check_dataset.py"), "--datasets", "mixed",
                           "DATASETS.CATALOG.mixed.ANN_FILE", files["mixed"],
                           "DATASETS.CATALOG.mixed.IMG_DIR", files["img_dir"]],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("mixed: 4 images, 6 annotations; 3 box-only annotations (no segmentation) in 2 images, annotation "
            "ids 4, 5, 6: box targets for Faster R-CNN") in proc.stdout
    assert "error" not in proc.stdout.replace("no errors", "")
    assert proc.stdout.splitlines()[-1] == "1 dataset checked: no errors."


def test_without_masks_required_box_only_annotations_are_targets(files, caplog):
    flip = Compose([ResizeShortestEdge((48,), 1000), RandomHorizontalFlip(1.0)])
    with caplog.at_level(logging.INFO, logger="maskrcnn.data.datasets.coco"):
        ds = COCODataset(files["mixed"], files["img_dir"], "mixed", transforms=flip, require_masks=False)
    assert ("mixed: 4 images, 6 annotations; 3 box-only annotations (no segmentation) in 2 images: kept as "
            "box targets without masks; no problems") in caplog.text
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert ds.ids == [1, 2, 3, 4] and sorted(ds.coco.imgs) == [1, 2, 3, 4] and len(ds.coco.anns) == 6
    segmented, box_only = ds.get_target(0), ds.get_target(3)
    assert len(segmented.get_field("masks")) == 2
    assert not box_only.has_field("masks") and box_only.get_field("labels").tolist() == [1, 2]
    assert box_only.bbox.tolist() == [[8, 8, 48, 48], [56, 60, 120, 78]]
    image, target, _ = ds[3]  # resized to 48 x 64 and flipped: boxes follow, no masks appear
    assert image.shape == (3, 48, 64) and target.size == (48, 64) and not target.has_field("masks")
    assert target.bbox.tolist() == [[40, 4, 60, 24], [4, 30, 36, 39]]
    assert ds[0][1].has_field("masks")
    assert COCODataset(files["box_only"], files["img_dir"], "b", require_masks=False).ids == [1, 2, 3, 4]


def test_box_only_ground_truth_gives_bbox_ap_with_pycocotools(files):
    ds = COCODataset(files["box_only"], files["img_dir"], "box_only", is_train=False, require_masks=False)
    predictions = {}
    for i in range(len(ds)):
        target = ds.get_target(i)
        boxes = BoxList(target.bbox.clone(), target.size)
        boxes.add_field("labels", target.get_field("labels"))
        boxes.add_field("scores", torch.ones(len(target)))
        predictions[ds.ids[i]] = boxes
    metrics = evaluate_coco(ds, predictions)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0) and "segm" not in metrics
    first = predictions[1]
    predictions[1] = BoxList(first.bbox[:1], first.size)  # one ground-truth box missed
    for name in ("labels", "scores"):
        predictions[1].add_field(name, first.get_field(name)[:1])
    assert evaluate_coco(ds, predictions)["bbox"]["AP"] < 100.0


@pytest.mark.parametrize("is_train", [True, False])
def test_masks_required_leaves_the_box_only_images_out_with_a_warning(files, caplog, is_train):
    with caplog.at_level(logging.INFO, logger="maskrcnn.data.datasets.coco"):
        ds = COCODataset(files["mixed"], files["img_dir"], "mixed", is_train=is_train, require_masks=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert ("mixed: 4 images, 6 annotations; 2 images left out (training and evaluation): 3 of their "
            "annotations (ids 4, 5, 6) have no segmentation, which Mask R-CNN (MODEL.MASK_ON True) needs; add "
            "segmentations to them, or set MODEL.MASK_ON False to train a box-only detector (Faster R-CNN)"
            ) in warnings[0] and files["mixed"] in warnings[0]
    # the segmented images are kept, with their masks; evaluation's ground truth is the same images
    assert ds.ids == [1, 2] and sorted(ds.coco.imgs) == [1, 2]
    assert sorted(ds.coco.anns) == [1, 2, 3]
    assert [len(ds.get_target(i).get_field("masks")) for i in range(2)] == [2, 1]


@pytest.mark.parametrize("is_train", [True, False])
def test_masks_required_and_nothing_left_is_one_clear_error(files, is_train):
    with pytest.raises(MissingMasksError) as info:
        COCODataset(files["box_only"], files["img_dir"], "box_only", is_train=is_train, require_masks=True)
    msg = str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
    assert msg.startswith(f"dataset 'box_only' ({files['box_only']}): no annotated image is left for Mask R-CNN")
    assert "6 box-only annotations in 4 images, ids 1, 2, 3, 4, 5 and 1 more" in msg
    assert "Set MODEL.MASK_ON False" in msg and "add segmentations" in msg


def _train(files, tmp_path, train, test, mask_on):
    catalog = {n: (files[n], files["img_dir"]) for n in ("box_only", "mixed")}
    cfg = write_tiny_config(tmp_path / "cfg.yaml", catalog, [train], [test], tmp_path / "out", mask_on=mask_on,
                            MAX_ITER=3)
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", cfg],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_faster_rcnn_trains_and_evaluates_bbox_ap_on_box_only_data(files, tmp_path):
    proc = _train(files, tmp_path, "box_only", "box_only", mask_on=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "model_final.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "loss_box_reg" in log and "loss_mask" not in log
    metrics = json.loads((out / "inference" / "box_only" / "metrics.json").read_text())
    assert set(metrics) == {"bbox"}
    assert metrics["bbox"]["AP"] is not None  # null: pycocotools found no ground truth


def test_mask_rcnn_trains_and_evaluates_on_the_segmented_images_of_mixed_data(files, tmp_path):
    proc = _train(files, tmp_path, "mixed", "mixed", mask_on=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    log = (out / "log.txt").read_text()
    assert "loss_mask" in log
    assert log.count("2 images left out (training and evaluation): 3 of their annotations (ids 4, 5, 6)") == 2
    metrics = json.loads((out / "inference" / "mixed" / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert metrics["bbox"]["AP"] is not None and metrics["segm"]["AP"] is not None
    assert "no predictions entry" not in log  # evaluation's ground truth holds the kept images only


def test_mask_rcnn_on_box_only_data_refuses_to_train(files, tmp_path):
    proc = _train(files, tmp_path, "box_only", "box_only", mask_on=True)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "MissingMasksError" in proc.stderr or "data error" in proc.stderr
    assert "no annotated image is left for Mask R-CNN" in proc.stderr and "Traceback" not in proc.stderr
    assert "ids 1, 2, 3, 4, 5 and 1 more" in proc.stderr and "Set MODEL.MASK_ON False" in proc.stderr
    assert not list((tmp_path / "out").glob("model_*.pth"))
