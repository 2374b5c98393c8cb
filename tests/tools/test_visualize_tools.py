"""tools/visualize_data.py and tools/visualize_results.py as subprocesses on a real COCO-format
dataset; the PNGs are decoded and checked where the drawing must be."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from maskrcnn.data.datasets.shapes import ensure_shapes_dataset
from maskrcnn.data.transforms import get_resize_size
from maskrcnn.utils.visualizer import class_color, style_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")


def run(args, check=True):
    proc = subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("vis")
    ann, img_dir = ensure_shapes_dataset(str(base / "data"), "train", 5, 3)
    cfg = {"DATASETS": {"CATALOG": {"toy": {"ANN_FILE": ann, "IMG_DIR": img_dir}}, "TRAIN": ["toy"], "TEST": []},
           "INPUT": {"MIN_SIZE_TRAIN": [200], "MAX_SIZE_TRAIN": 400, "HORIZONTAL_FLIP_PROB_TRAIN": 1.0},
           "DATALOADER": {"NUM_WORKERS": 0}, "SOLVER": {"IMS_PER_BATCH": 2}, "SEED": 3,
           "OUTPUT_DIR": str(base / "out")}
    path = base / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return {"base": base, "cfg": str(path), "ann": ann, "img_dir": img_dir, "coco": json.loads(open(ann).read())}


def _panel(path, height):
    """The image part of a PNG written under a title strip: its last ``height`` rows."""
    arr = np.array(Image.open(path).convert("RGB"))
    return arr[-height:]


def _has_colour_near(arr, x, y, color, radius=2):
    patch = arr[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1].reshape(-1, 3)
    return any(tuple(p) == color for p in patch.tolist())


def _anns_of(coco, image_id):
    return [a for a in coco["annotations"] if a["image_id"] == image_id and not a.get("iscrowd")]


def test_annotation_source_draws_every_instance_at_original_size(data):
    out = data["base"] / "vis_ann"
    proc = run([os.path.join(TOOLS, "visualize_data.py"), "--config-file", data["cfg"], "--num", "3",
                "--output", str(out)])
    assert "toy: 3 images" in proc.stdout
    pngs = sorted(os.listdir(out / "toy"))
    assert len(pngs) == 3
    by_name = {os.path.splitext(img["file_name"])[0] + ".png": img for img in data["coco"]["images"]}
    for name in pngs:
        img = by_name[name]
        arr = _panel(out / "toy" / name, img["height"])
        original = np.array(Image.open(os.path.join(data["img_dir"], img["file_name"])).convert("RGB"))
        assert Image.open(out / "toy" / name).size[0] == img["width"]
        for ann in _anns_of(data["coco"], img["id"]):
            x, y, w, h = ann["bbox"]
            color = class_color(ann["category_id"])
            assert _has_colour_near(arr, int(x), int(y + h / 2), color), (name, ann)  # left edge of the box
            cy, cx = int(y + h / 2), int(x + w / 2)
            assert (arr[cy, cx] != original[cy, cx]).any()  # the mask is blended over the object


def test_dataloader_source_draws_resized_and_flipped_targets(data):
    out = data["base"] / "vis_loader"
    proc = run([os.path.join(TOOLS, "visualize_data.py"), "--config-file", data["cfg"], "--source", "dataloader",
                "--num", "3", "--output", str(out)])
    assert "3 images" in proc.stdout
    files = sorted(os.listdir(out / "dataloader"))
    assert len(files) == 3 and files[0].startswith("0000_")
    by_stem = {os.path.splitext(img["file_name"])[0]: img for img in data["coco"]["images"]}
    for name in files:
        img = by_stem[os.path.splitext(name)[0][5:]]
        new_h, new_w = get_resize_size(img["height"], img["width"], 200, 400)
        assert Image.open(out / "dataloader" / name).size[0] == new_w
        arr = _panel(out / "dataloader" / name, new_h)
        s = new_w / img["width"]
        for ann in _anns_of(data["coco"], img["id"]):
            x, y, w, h = ann["bbox"]
            right_after_flip = new_w - x * s  # the box's left edge is its right edge once flipped
            color = class_color(ann["category_id"])
            _, line = style_for(new_h, new_w)
            assert _has_colour_near(arr, int(right_after_flip) - 1, int((y + h / 2) * s), color, radius=line + 1)


def test_results_side_by_side_and_no_detection_message(data):
    coco = data["coco"]
    images = sorted(coco["images"], key=lambda i: i["id"])
    results = []
    for a in coco["annotations"]:  # perfect predictions for all but the last image, a weak one there
        score = 0.1 if a["image_id"] == images[-1]["id"] else 0.9
        results.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                        "score": score})
    res_file = data["base"] / "results.json"
    res_file.write_text(json.dumps(results))
    out = data["base"] / "vis_res"
    proc = run([os.path.join(TOOLS, "visualize_results.py"), "--results", str(res_file), "--ann-file", data["ann"],
                "--img-dir", data["img_dir"], "--output", str(out), "--side-by-side", "--score-thr", "0.5"])
    assert f"{len(images)} images" in proc.stdout
    last = images[-1]
    assert f"{last['file_name']}: no detections with score >= 0.5" in proc.stdout
    for img in images:
        arr = np.array(Image.open(out / (os.path.splitext(img["file_name"])[0] + ".png")).convert("RGB"))
        assert arr.shape[1] > 2 * img["width"]
        right = arr[-img["height"]:, -img["width"]:]
        left = arr[-img["height"]:, :img["width"]]
        original = np.array(Image.open(os.path.join(data["img_dir"], img["file_name"])).convert("RGB"))
        if img is last:
            assert (right[:8, :40] == (40, 40, 40)).all(axis=-1).any()  # the message box
            assert (right[img["height"] // 2:] == original[img["height"] // 2:]).all()  # nothing else
            assert (left != original).any()  # the ground truth is drawn
        else:
            for ann in _anns_of(coco, img["id"]):
                x, y, w, h = ann["bbox"]
                assert _has_colour_near(right, int(x), int(y + h / 2), class_color(ann["category_id"]))


def test_results_for_another_annotation_file_are_refused(data):
    bad = data["base"] / "bad.json"
    bad.write_text(json.dumps([{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]))
    proc = run([os.path.join(TOOLS, "visualize_results.py"), "--results", str(bad), "--ann-file", data["ann"],
                "--img-dir", data["img_dir"], "--output", str(data["base"] / "x")], check=False)
    assert proc.returncode == 3  # a data error (maskrcnn/utils/errors.py)
    assert "image id 999" in proc.stderr and "--ann-file" in proc.stderr


def test_unknown_dataset_is_one_readable_error(data):
    proc = run([os.path.join(TOOLS, "visualize_data.py"), "--config-file", data["cfg"], "--datasets", "nope",
                "--output", str(data["base"] / "y")], check=False)
    assert proc.returncode == 3
    assert "Unknown dataset 'nope'" in proc.stderr and "Traceback" not in proc.stderr
