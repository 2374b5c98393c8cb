"""tools/convert_voc_to_coco.py on a small VOC tree written here (XML, JPEGs, palette PNGs):
converted, loaded by the project's COCO dataset, and trained for a few iterations."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from maskrcnn.data.datasets.coco import COCODataset
from maskrcnn.utils.visualizer import rasterize_instance_masks
from conftest import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "convert_voc_to_coco.py")
H, W = 120, 160

# image id -> objects (name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult, shape); segmented?
TREE = {
    "2008_000001": ([("cat", (11, 21, 60, 80), 0, "ellipse"), ("dog", (81, 31, 140, 100), 0, "rect"),
                     ("person", (5, 90, 30, 118), 1, "rect")], True),
    "2008_000002": ([("car", (21, 11, 120, 70), 0, "rect"), ("cat", (100, 75, 150, 115), 0, "ellipse")], False),
    "2008_000003": ([("dog", (31, 31, 110, 100), 0, "ellipse")], True),
    "2008_000004": ([("car", (1, 1, 160, 120), 0, "rect")], False),
}
SPLITS = {"train": ["2008_000001", "2008_000002", "2008_000003"], "val": ["2008_000004", "2008_000003"]}


def _xml(vid, objects):
    objs = "".join(
        f"<object><name>{n}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d, _ in objects)
    return (f"<annotation><folder>VOC2012</folder><filename>{vid}.jpg</filename><size><width>{W}</width>"
            f"<height>{H}</height><depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")


def write_voc_tree(root):
    """The tree, and per segmented image the instance-index array its PNG holds."""
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages", "SegmentationObject"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    indices = {}
    for vid, (objects, segmented) in TREE.items():
        image = Image.new("RGB", (W, H), (90, 110, 130))
        index = Image.new("P", (W, H), 0)
        index.putpalette([0, 0, 0] + [200, 50, 50] * 20 + [0] * 3 * 234 + [224, 224, 192])
        for k, (name, (x0, y0, x1, y1), _, shape) in enumerate(objects, start=1):
            rect = (x0 - 1, y0 - 1, x1 - 1, y1 - 1)  # pixel indices, inclusive
            draw = getattr(ImageDraw.Draw(image), "ellipse" if shape == "ellipse" else "rectangle")
            draw(rect, fill=(40 * k, 200, 255 - 40 * k))
            idraw = getattr(ImageDraw.Draw(index), "ellipse" if shape == "ellipse" else "rectangle")
            idraw(rect, fill=255)  # the void border: the outline ring
            idraw((rect[0] + 2, rect[1] + 2, rect[2] - 2, rect[3] - 2), fill=k)
        image.save(os.path.join(root, "JPEGImages", f"{vid}.jpg"), quality=95)
        with open(os.path.join(root, "Annotations", f"{vid}.xml"), "w") as f:
            f.write(_xml(vid, objects))
        if segmented:
            index.save(os.path.join(root, "SegmentationObject", f"{vid}.png"))
            indices[vid] = np.array(index)
    for split, ids in SPLITS.items():
        with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
    return indices


def convert(root, out, *extra, check=True):
    proc = subprocess.run([sys.executable, TOOL, str(root), "--out", str(out), *extra], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
        return json.loads(open(out).read()), proc
    return None, proc


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    base = tmp_path_factory.mktemp("voc")
    root = base / "VOC2012"
    return {"base": base, "root": root, "indices": write_voc_tree(str(root))}


def test_converted_json_boxes_masks_difficult_and_categories(voc):
    data, proc = convert(voc["root"], voc["base"] / "train.json", "--split", "train")
    assert "3 images (2 with SegmentationObject masks, 1 boxes only)" in proc.stdout
    assert "--masks-only" in proc.stdout  # the note on box-only images
    assert [c["name"] for c in data["categories"]][:3] == ["aeroplane", "bicycle", "bird"]
    assert [c["id"] for c in data["categories"]] == list(range(1, 21))
    ids = {c["name"]: c["id"] for c in data["categories"]}
    assert ids["cat"] == 8 and ids["tvmonitor"] == 20
    assert [i["file_name"] for i in data["images"]] == [f"{v}.jpg" for v in SPLITS["train"]]
    anns = {(a["image_id"], a["category_id"]): a for a in data["annotations"]}
    cat = anns[(1, ids["cat"])]
    assert cat["bbox"] == [10.0, 20.0, 50.0, 60.0] and cat["iscrowd"] == 0  # xmin 11..xmax 60 -> x 10, w 50
    expected = voc["indices"]["2008_000001"] == 1  # the void ring (255) is not part of the object
    assert np.array_equal(mask_utils.decode(cat["segmentation"]).astype(bool), expected)
    assert cat["area"] == float(expected.sum())
    assert anns[(1, ids["person"])]["iscrowd"] == 1  # difficult
    car = anns[(2, ids["car"])]
    assert "segmentation" not in car and car["area"] == 100.0 * 60.0  # box-only: no rectangle polygon
    assert car["bbox"] == [20.0, 10.0, 100.0, 60.0]
    # no annotation is written with a polygon (a box as mask would teach Mask R-CNN rectangles)
    assert all(isinstance(a["segmentation"], dict) for a in data["annotations"] if "segmentation" in a)
    assert sorted(a["id"] for a in data["annotations"] if "segmentation" not in a) == [4, 5]  # image 2
    assert data["info"]["difficult"] == "crowd" and data["info"]["box_only_images"] == 1

    skipped, _ = convert(voc["root"], voc["base"] / "skip.json", "--split", "train", "--difficult", "skip")
    assert len(skipped["annotations"]) == len(data["annotations"]) - 1
    masks_only, _ = convert(voc["root"], voc["base"] / "seg.json", "--split", "train", "--masks-only")
    assert [i["file_name"] for i in masks_only["images"]] == ["2008_000001.jpg", "2008_000003.jpg"]
    assert all(isinstance(a["segmentation"], dict) for a in masks_only["annotations"])


def test_the_project_loads_it_with_the_masks_of_the_pngs(voc, caplog):
    convert(voc["root"], voc["base"] / "train.json", "--split", "train")
    args = (str(voc["base"] / "train.json"), str(voc["root"] / "JPEGImages"), "voc_train")
    ds = COCODataset(*args, check="full", require_masks=False)  # Faster R-CNN
    assert len(ds) == 3 and ds.class_names[8] == "cat" and ds.num_classes == 20
    target = ds.get_target(0)  # 2008_000001: cat, dog as targets; the difficult person is a crowd
    assert ds.contiguous_to_category_id[int(target.get_field("labels")[0])] == 8
    assert len(target) == 2
    dense = rasterize_instance_masks(target.get_field("masks"), target.bbox)
    for k in range(2):
        assert torch.equal(dense[k], torch.from_numpy(voc["indices"]["2008_000001"] == k + 1))
    box_only = ds.get_target(1)  # the box-only image keeps its objects, as boxes without masks
    assert len(box_only) == 2 and not box_only.has_field("masks")
    assert box_only.bbox.tolist() == [[20, 10, 120, 70], [99, 74, 150, 115]]
    with caplog.at_level(logging.WARNING, logger="maskrcnn.data.datasets.coco"):
        masked = COCODataset(*args, require_masks=True)  # Mask R-CNN: the box-only image is left out
    assert [masked.get_img_info(i)["file_name"] for i in range(len(masked))] == ["2008_000001.jpg",
                                                                                 "2008_000003.jpg"]
    assert "1 image left out (training and evaluation): 2 of its annotations (ids 4, 5)" in caplog.text


def test_errors_name_the_file(voc, tmp_path):
    _, proc = convert(voc["root"], tmp_path / "x.json", "--split", "nope", check=False)
    assert proc.returncode == 3 and "ImageSets/Main/nope.txt" in proc.stderr.replace(os.sep, "/")
    other = tmp_path / "VOCx"
    write_voc_tree(str(other))
    xml = other / "Annotations" / "2008_000002.xml"
    xml.write_text(xml.read_text().replace("<name>car</name>", "<name>zebra</name>"))
    _, proc = convert(other, tmp_path / "x.json", "--split", "train", check=False)
    assert proc.returncode == 3 and "2008_000002.xml" in proc.stderr and "'zebra'" in proc.stderr
    assert "--classes found" in proc.stderr and "Traceback" not in proc.stderr
    found, _ = convert(other, tmp_path / "found.json", "--split", "train", "--classes", "found")
    assert [c["name"] for c in found["categories"]] == ["cat", "dog", "person", "zebra"]


def _train(voc, tmp_path, ann_train, mask_on, test):
    catalog = {"voc_train": (ann_train, voc["root"] / "JPEGImages"),
               "voc_val": (voc["base"] / "val.json", voc["root"] / "JPEGImages")}
    cfg = write_tiny_config(tmp_path / "cfg.yaml", catalog, ["voc_train"], test, tmp_path / "out", mask_on=mask_on)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", cfg],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp_path / "out", proc


def test_faster_rcnn_trains_and_evaluates_on_converted_voc(voc, tmp_path):
    convert(voc["root"], voc["base"] / "train.json", "--split", "train")
    convert(voc["root"], voc["base"] / "val.json", "--split", "val")
    out, proc = _train(voc, tmp_path, voc["base"] / "train.json", mask_on=False, test=["voc_val"])
    assert (out / "model_final.pth").is_file()
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert ckpt["model"]["roi_heads.box.predictor.cls_score.weight"].shape[0] == 21  # 20 VOC classes + bg
    metrics = json.loads((out / "inference" / "voc_val" / "metrics.json").read_text())
    assert "bbox" in metrics and "segm" not in metrics
    log = (out / "log.txt").read_text()
    # the box-only objects (2008_000002 in train, 2008_000004 in val) are targets and ground truth
    assert "voc_train: 3 images, 6 annotations; 2 box-only annotations (no segmentation) in 1 image: kept as " \
           "box targets without masks" in log
    assert "voc_val: 2 images, 2 annotations; 1 box-only annotation (no segmentation) in 1 image" in log
    assert "left out" not in log


def test_mask_rcnn_trains_on_the_segmented_images(voc, tmp_path):
    convert(voc["root"], voc["base"] / "seg.json", "--split", "train", "--masks-only")
    out, proc = _train(voc, tmp_path, voc["base"] / "seg.json", mask_on=True, test=[])
    assert "loss_mask" in (out / "log.txt").read_text()
    assert (out / "model_final.pth").is_file()
