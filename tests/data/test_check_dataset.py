"""Dataset checks on real files in tmp_path: the library, tools/check_dataset.py, and training
refusing to start on a broken dataset. Images are written with PIL, masks with pycocotools."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageFile
from pycocotools import mask as mask_utils

from maskrcnn.data.datasets.check import check_dataset, parse_annotation
from maskrcnn.data.datasets.coco import COCODataset, DatasetError
from maskrcnn.data.datasets.shapes import ensure_shapes_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "check_dataset.py")
CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def _rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _ann(ann_id, image_id, bbox, seg="rect", cat=1, crowd=0):
    if seg == "rect":
        x, y, w, h = bbox
        seg = [_rect(x, y, x + w, y + h)]
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": crowd,
            "area": 1.0, "segmentation": seg}


def _rle(h, w, empty=False):
    m = np.zeros((h, w), np.uint8, order="F")
    m[2:6, 3:9] = 0 if empty else 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _exif_rotated(path, orientation, fmt):
    """Stored (h, w) = (24, 40); displayed (40, 24) once rotated by 90 degrees."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.full((24, 40, 3), 90, np.uint8)).save(path, fmt, exif=exif)


def _truncated(path, fmt):
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # header intact, pixel stream cut


def _write_images(d):
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(d / "good.png")
    Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(d / "wrongsize.png")
    Image.fromarray(np.full((30, 20), 77, np.uint8), mode="L").save(d / "gray.png")
    Image.fromarray(np.full((16, 16, 4), 200, np.uint8), mode="RGBA").save(d / "rgba.png")
    pal = Image.new("P", (28, 20))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(d / "palette.png")
    Image.fromarray(np.full((6, 5), 40000, np.uint16)).save(d / "deep.png")  # mode I;16
    Image.new("CMYK", (8, 4), (0, 255, 255, 0)).save(d / "cmyk.jpg")
    _exif_rotated(d / "rotated.jpg", 6, "JPEG")
    _exif_rotated(d / "rotated.png", 8, "PNG")
    (d / "notimage.png").write_text("not an image")
    (d / "empty.png").write_bytes(b"")
    _truncated(d / "truncated.jpg", "JPEG")
    _truncated(d / "truncated.png", "PNG")


def _img(img_id, name, h, w):
    return {"id": img_id, "file_name": name, "height": h, "width": w}


def _fixable():
    """Only safe repairs and conversions."""
    images = [_img(1, "good.png", 40, 60), _img(2, "gray.png", 30, 20), _img(3, "rgba.png", 16, 16),
              _img(4, "palette.png", 20, 28), _img(5, "deep.png", 6, 5), _img(6, "cmyk.jpg", 4, 8),
              _img(7, "rotated.jpg", 40, 24), _img(8, "rotated.png", 40, 24)]  # size after EXIF
    anns = [_ann(10, 1, [10, 5, 20, 10]), _ann(11, 1, [50, 30, 20, 20]), _ann(12, 1, [5, 5, 0, 10]),
            _ann(13, 1, [5, 5, 10, -3]), _ann(14, 1, [100, 100, 5, 5]),
            _ann(15, 1, [1, 1, 9, 9], [_rect(1, 1, 10, 10), [1, 2, 3, 4]]),
            _ann(16, 1, [1, 1, 9, 9], [_rect(1, 1, 10, 10), [1, 2, 3, 4, 5, 6, 7]]),
            _ann(17, 1, [1, 1, 9, 9], [[1, 2, 3, 4]]),
            _ann(18, 1, [1, 1, 9, 9], {"size": [40, 60], "counts": ""}),  # [] would be box-only
            _ann(19, 1, [0, 0, 0, 0], _rle(40, 60), crowd=1), _ann(20, 2, [3, 2, 6, 4], _rle(30, 20)),
            _ann(21, 7, [2, 30, 20, 8]),
            _ann(22, 1, [2, 2, 6, 6], [_rect(2, 2, 8, 8), _rect(70, 10, 80, 20)]),  # 2nd part outside
            _ann(23, 1, [1, 1, 8, 8], [_rect(1, 1, 9, 9), [1, 1, 5, 1, 9, 1]]),  # 2nd part flat
            _ann(24, 1, [3, 2, 6, 4], _rle(40, 60, empty=True))]
    return {"images": images, "annotations": anns, "categories": CATS}


def _broken():
    images = [_img(1, "good.png", 40, 60), _img(2, "missing.png", 10, 10), _img(3, "notimage.png", 10, 10),
              _img(4, "wrongsize.png", 30, 30), _img(5, "rotated.jpg", 24, 40),  # stored size: wrong
              _img(1, "gray.png", 30, 20), _img(6, "truncated.jpg", 48, 64), _img(7, "truncated.png", 48, 64),
              _img(8, "empty.png", 10, 10), _img(9, "GOOD.PNG", 40, 60)]  # good.png exists
    anns = [_ann(30, 1, [1, 1, 5, 5], cat=7), _ann(31, 99, [1, 1, 5, 5]), _ann(32, 1, [1, 1, 5, 5]),
            _ann(32, 1, [2, 2, 5, 5]), _ann(33, 1, [1, float("nan"), 3, 4], [_rect(1, 1, 4, 5)]),
            _ann(34, 1, [1, 1, float("inf"), 4], [_rect(1, 1, 4, 5)]),
            _ann(35, 1, [1, 1, 5, 5], [1, 1, 6, 1, 6, 6]), _ann(36, 1, [1, 1, 5, 5], _rle(10, 10)),
            _ann(37, 1, [1, 1, 5, 5], [[1, 1, 6, float("nan"), 6, 6]]),
            _ann(38, 1, [1, 1, 5, 5], [_rect(100, 100, 110, 110)]),  # box inside, polygon outside
            _ann(39, 1, [1, 1, 5, 5], [_rect(30, 20, 40, 30)]),  # polygon in the image, not in the box
            _ann(40, 1, [30, 20, 5, 5], _rle(40, 60)),  # RLE (x 3..9, y 2..6) not in the box
            _ann(41, 1, [1, 1, 5, 5], {"size": [40, 60], "counts": [5, 10]})]  # counts sum != 2400
    return {"images": images, "annotations": anns, "categories": CATS + [{"id": 2, "name": "dup"}]}


# (kind, image id, annotation id, file name) of every error in _broken()
BROKEN_ERRORS = {
    ("duplicate category id", None, None, "broken.json"), ("duplicate image id", 1, None, "gray.png"),
    ("unknown category id", 1, 30, "good.png"), ("annotation of a missing image", 99, 31, "broken.json"),
    ("duplicate annotation id", 1, 32, "good.png"), ("non-finite box", 1, 33, "good.png"),
    ("non-finite box", 1, 34, "good.png"), ("malformed segmentation", 1, 35, "good.png"),
    ("RLE size mismatch", 1, 36, "good.png"), ("non-finite polygon", 1, 37, "good.png"),
    ("segmentation outside the image", 1, 38, "good.png"),
    ("segmentation outside its box", 1, 39, "good.png"), ("segmentation outside its box", 1, 40, "good.png"),
    ("malformed RLE", 1, 41, "good.png"),
    ("missing image file", 2, None, "missing.png"), ("unreadable image", 3, None, "notimage.png"),
    ("image size mismatch", 4, None, "wrongsize.png"), ("image size mismatch", 5, None, "rotated.jpg"),
    ("empty image file", 8, None, "empty.png"), ("missing image file", 9, None, "GOOD.PNG")}
TRUNCATED_ERRORS = {("unreadable image", 6, None, "truncated.jpg"),
                    ("unreadable image", 7, None, "truncated.png")}
FIXABLE_REPAIRS = {"box clipped": [11], "polygon part clipped": [11],
                   "annotation dropped (empty box)": [12, 13],
                   "annotation dropped (box outside the image)": [14],
                   "polygon part dropped (< 3 points)": [15, 17],
                   "polygon part dropped (odd coordinate count)": [16],
                   "annotation dropped (no valid polygon)": [17],
                   "annotation dropped (empty segmentation)": [18, 24],
                   "polygon part dropped (outside the image)": [22], "polygon part dropped (no area)": [23]}
FIXABLE_CONVERSIONS = {"grayscale": [2], "RGBA": [3], "palette": [4], "16-bit": [5], "CMYK": [6],
                       "EXIF-rotated": [7, 8]}
FIXABLE_SUMMARY = ("fixable: 8 images, 15 annotations; 5 images without usable annotations (training leaves "
                   "them out); repaired: 2 annotations dropped (empty box), 2 annotations dropped (empty "
                   "segmentation), 2 polygon parts dropped (< 3 points), 1 annotation dropped (box outside "
                   "the image), 1 annotation dropped (no valid polygon), 1 box clipped, 1 polygon part "
                   "clipped, 1 polygon part dropped (no area), 1 polygon part dropped (odd coordinate "
                   "count), 1 polygon part dropped (outside the image); converted: "
                   "2 EXIF-rotated, 1 16-bit, 1 CMYK, 1 RGBA, 1 grayscale, 1 palette")


@pytest.fixture()
def files(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    _write_images(img_dir)
    out = {"img_dir": str(img_dir)}
    for name, data in (("fixable", _fixable()), ("broken", _broken())):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))  # NaN / Infinity written as JSON tokens
        out[name] = str(path)
    return out


def _extent(polygons):
    xs = [x for p in polygons for x in p[0::2]]
    ys = [y for p in polygons for y in p[1::2]]
    return min(xs), min(ys), max(xs), max(ys)


def _area(part):
    xs, ys = part[0::2], part[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def _keys(findings):
    return {(f.kind, f.image_id, f.ann_id, os.path.basename(f.file)) for f in findings}


def test_repairs_and_conversions_are_counted_not_errors(files, caplog):
    report = check_dataset(files["fixable"], files["img_dir"], "fixable").report
    assert report.errors == []
    repaired = {}
    for f in report.findings["repaired"]:
        repaired.setdefault(f.kind, []).append(f.ann_id)
        assert f.image_id == 1 and os.path.basename(f.file) == "good.png"
    assert repaired == FIXABLE_REPAIRS
    converted = {}
    for f in report.findings["converted"]:
        converted.setdefault(f.kind, []).append(f.image_id)
    assert converted == FIXABLE_CONVERSIONS
    assert report.summary() == FIXABLE_SUMMARY
    with caplog.at_level(logging.INFO, logger="maskrcnn.data.datasets.coco"):
        ds = COCODataset(files["fixable"], files["img_dir"], "fixable")
    assert sum(FIXABLE_SUMMARY in r.getMessage() for r in caplog.records) == 1
    assert ds.ids == [1, 2, 7]
    target = ds.get_target(0)  # annotations 10, 11 (clipped), 15, 16, 22 and 23 (a part dropped each)
    assert target.bbox.tolist() == [[10, 5, 30, 15], [50, 30, 60, 40], [1, 1, 10, 10], [1, 1, 10, 10],
                                    [2, 2, 8, 8], [1, 1, 9, 9]]
    assert ds[2][0].shape == (3, 40, 24)  # EXIF-rotated, as the JSON says
    # training uses the repaired polygons: clipped to the image, the part outside left out, and
    # no target has an all-zero mask inside its box
    anns = {a["id"]: a for a in _fixable()["annotations"]}
    polygons = [parse_annotation(anns[i], (40, 60)).polygons for i in (11, 22)]
    assert _extent(polygons[0]) == (50, 30, 60, 40) and _area(polygons[0][0]) == 100
    assert polygons[1] == [_rect(2, 2, 8, 8)]
    for index in range(len(ds)):
        target = ds.get_target(index)
        cells = target.get_field("masks").crop_and_resize(target.bbox, torch.arange(len(target)), 28)
        assert (cells.flatten(1).sum(1) > 0).all(), ds.ids[index]


@pytest.mark.parametrize("level", ["header", "full"])
def test_every_error_is_found_with_its_ids_and_file(files, level):
    report = check_dataset(files["broken"], files["img_dir"], "broken", images=level).report
    expected = BROKEN_ERRORS | (TRUNCATED_ERRORS if level == "full" else set())
    assert _keys(report.errors) == expected and len(report.errors) == len(expected)
    rotated = next(f for f in report.errors if f.image_id == 5)
    assert "(40, 24) after EXIF orientation" in rotated.detail and "stored size before EXIF" in rotated.detail
    truncated = [f for f in report.errors if f.image_id in (6, 7)]
    assert all("truncated" in f.detail for f in truncated)


def test_segmentation_outside_the_image_or_its_box_is_an_error_that_says_where(files, tmp_path):
    """Issue 10 #4: a polygon outside the image with its box inside was accepted, and training
    learnt an all-zero mask inside a real box. Training refuses it now, like the tool."""
    report = check_dataset(files["broken"], files["img_dir"], "broken", images="annotations").report
    detail = {f.ann_id: f.detail for f in report.errors if f.ann_id in (38, 39, 40)}
    assert detail[38].startswith("no polygon part has an area inside the 60x40 image, but the box "
                                 "[1, 1, 6, 6] is inside it")
    assert detail[39].startswith("the segmentation spans [30, 20, 40, 30] and the box [1, 1, 6, 6]")
    assert detail[40].startswith("the segmentation spans [3, 2, 9, 6] and the box [30, 20, 35, 25]")
    data = _fixable()
    data["annotations"].append(_ann(50, 7, [2, 2, 10, 10], [_rect(-30, 2, -20, 12), _rect(2, 50, 12, 60)]))
    path = tmp_path / "outside.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"(?s)has 1 problem to fix.*segmentation outside the image: "
                                           r"annotation id 50 \(image id 7, .*rotated\.jpg\)"):
        COCODataset(str(path), files["img_dir"], "outside", check="annotations")


def test_header_level_reads_no_pixels(files, monkeypatch):
    def no_decoding(self):
        raise AssertionError(f"decoded {self.filename}")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    report = check_dataset(files["fixable"], files["img_dir"], "fixable", images="header").report
    assert report.errors == [] and report.num("converted") == 7


def test_dataset_error_lists_problems_with_ids_files_total_and_advice(files, tmp_path):
    with pytest.raises(DatasetError) as info:
        COCODataset(files["broken"], files["img_dir"], "broken")
    msg = str(info.value)
    img = files["img_dir"]
    assert msg.startswith(f"dataset 'broken' has {len(BROKEN_ERRORS)} problems to fix")
    assert f"  - unknown category id: annotation id 30 (image id 1, {img}/good.png): category id 7" in msg
    assert f"  - missing image file: image id 2 ({img}/missing.png)" in msg
    assert f"  - annotation of a missing image: annotation id 31 (image id 99, {files['broken']})" in msg
    assert "tools/check_dataset.py" in msg and isinstance(info.value, ValueError)
    data = _fixable()
    data["annotations"] = [_ann(100 + i, 1, [1, 1, 5, 5], cat=50 + i) for i in range(25)]
    many = tmp_path / "many.json"
    many.write_text(json.dumps(data))
    with pytest.raises(DatasetError) as info:
        COCODataset(str(many), files["img_dir"], "many")
    msg = str(info.value)
    assert msg.count("  - unknown category id") == 20 and "annotation id 119 " in msg
    assert "annotation id 120 " not in msg and "... and 5 more (25 in total)" in msg


def test_invalid_json_and_missing_keys(tmp_path):
    bad = tmp_path / "syntax.json"
    bad.write_text('{\n  "images": [],\n  "categories": [,]\n}\n')
    with pytest.raises(DatasetError, match=r"invalid JSON: .*syntax\.json: not valid JSON at line 3, column 18"):
        COCODataset(str(bad), str(tmp_path), "syntax")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"annotations": []}))
    report = check_dataset(str(keys), str(tmp_path), "keys").report
    assert [(f.kind, f.detail) for f in report.errors] == [("missing top-level key", "no 'images' list"),
                                                           ("missing top-level key", "no 'categories' list")]


def run_tool(*args, cwd=ROOT):
    proc = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    return proc.returncode, proc.stdout + proc.stderr


def _catalog(files, *names):
    opts = []
    for name in names:
        opts += [f"DATASETS.CATALOG.{name}.ANN_FILE", files[name], f"DATASETS.CATALOG.{name}.IMG_DIR",
                 files["img_dir"]]
    return opts


def test_tool_on_a_fixable_dataset_exits_0_with_the_summary(files):
    code, out = run_tool("--datasets", "fixable", *_catalog(files, "fixable"))
    assert code == 0, out
    assert FIXABLE_SUMMARY in out.splitlines()
    assert f"  repaired: box clipped: annotation id 11 (image id 1, {files['img_dir']}/good.png)" in out
    assert f"  converted: CMYK: image id 6 ({files['img_dir']}/cmyk.jpg)" in out
    assert "  error: " not in out and out.splitlines()[-1] == "1 dataset checked: no errors."


@pytest.mark.parametrize("full", [False, True])
def test_tool_reports_every_error_and_exits_1(files, tmp_path, full):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"DATASETS": {"TRAIN": ["fixable"], "TEST": ["broken"]}}))
    code, out = run_tool("--config-file", str(cfg), *(["--full-decode"] if full else []),
                         *_catalog(files, "fixable", "broken"))
    assert code == 1, out
    assert FIXABLE_SUMMARY in out  # both DATASETS.TRAIN and DATASETS.TEST are checked
    expected = BROKEN_ERRORS | (TRUNCATED_ERRORS if full else set())
    # image 1 keeps annotation 32; the 8 other well-formed images have none usable
    assert (f"broken: 10 images, 13 annotations; 8 images without usable annotations (training leaves "
            f"them out); {len(expected)} errors") in out
    error_lines = [line for line in out.splitlines() if line.startswith("  error: ")]
    assert len(error_lines) == len(expected)
    for kind, image_id, ann_id, name in expected:
        path = files["broken"] if name == "broken.json" else os.path.join(files["img_dir"], name)
        if ann_id is not None:
            where = f"annotation id {ann_id} (image id {image_id}, {path})"
        else:
            where = f"image id {image_id} ({path})" if image_id is not None else path
        assert any(line.startswith(f"  error: {kind}: {where}") for line in error_lines), (kind, where)
    assert ("truncated.jpg" in out) == full
    assert (f"  error: missing image file: image id 9 ({files['img_dir']}/GOOD.PNG): no such file: GOOD.PNG; "
            "did you mean good.png?") in error_lines
    assert (f"  error: empty image file: image id 8 ({files['img_dir']}/empty.png): "
            "empty file (0 bytes)") in error_lines
    assert "1 of 2 datasets have errors (broken)" in out


def test_tool_invalid_json_and_unknown_name(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    code, out = run_tool("--datasets", "bad", "nope", "DATASETS.CATALOG.bad.ANN_FILE", str(bad),
                         "DATASETS.CATALOG.bad.IMG_DIR", str(tmp_path))
    assert code == 1
    assert f"  error: invalid JSON: {bad}: not valid JSON at line 1, column 13" in out
    assert "nope: error: Unknown dataset 'nope'" in out


# ------------------------------------------------------------------ training refuses to start
def _tiny_train_yaml(tmp_path, train, val):
    cfg = {
        "MODEL": {"DEVICE": "cpu", "BACKBONE": {"CONV_BODY": "R-18-FPN", "OUT_CHANNELS": 32},
                  "RESNETS": {"NORM": "GN", "STEM_OUT_CHANNELS": 16, "RES2_OUT_CHANNELS": 16},
                  "GROUP_NORM": {"NUM_GROUPS": 4}, "ROI_HEADS": {"BATCH_SIZE_PER_IMAGE": 32},
                  "ROI_BOX_HEAD": {"MLP_HEAD_DIM": 32}, "ROI_MASK_HEAD": {"CONV_LAYERS": [16, 16]}},
        "INPUT": {"MIN_SIZE_TRAIN": [64], "MAX_SIZE_TRAIN": 96, "MIN_SIZE_TEST": 64, "MAX_SIZE_TEST": 96},
        "DATASETS": {"CATALOG": {"t_train": {"ANN_FILE": train[0], "IMG_DIR": train[1]},
                                 "t_val": {"ANN_FILE": val[0], "IMG_DIR": val[1]}},
                     "TRAIN": ["t_train"], "TEST": ["t_val"]},
        "DATALOADER": {"NUM_WORKERS": 0},
        "SOLVER": {"IMS_PER_BATCH": 2, "MAX_ITER": 2, "CHECKPOINT_PERIOD": 1, "LOG_PERIOD": 1},
        "TEST": {"IMS_PER_BATCH": 2}, "OUTPUT_DIR": str(tmp_path / "out"), "SEED": 0}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _break_shapes(ann_file, img_dir, out_json):
    """A copy of a shapes split whose image 1 is gone and whose first annotation has category 42."""
    data = json.load(open(ann_file))
    data["annotations"][0]["category_id"] = 42
    os.remove(os.path.join(img_dir, data["images"][0]["file_name"]))
    with open(out_json, "w") as f:
        json.dump(data, f)
    return data


@pytest.mark.parametrize("broken_split", ["train", "val"])
def test_training_refuses_to_start_on_an_erroneous_dataset(tmp_path, broken_split):
    train = ensure_shapes_dataset(str(tmp_path / "data"), "train", 4, 0)
    val = ensure_shapes_dataset(str(tmp_path / "data"), "val", 2, 1)
    split = train if broken_split == "train" else val
    bad_json = str(tmp_path / "bad.json")
    data = _break_shapes(split[0], split[1], bad_json)
    split_files = (bad_json, split[1])
    cfg = _tiny_train_yaml(tmp_path, split_files if broken_split == "train" else train,
                           split_files if broken_split == "val" else val)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", cfg],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode != 0
    name = "t_train" if broken_split == "train" else "t_val"
    first_img, first_ann = data["images"][0], data["annotations"][0]
    assert f"DatasetError: dataset '{name}' has 2 problems to fix" in proc.stderr, proc.stderr[-3000:]
    assert (f"missing image file: image id {first_img['id']} "
            f"({os.path.join(split[1], first_img['file_name'])})") in proc.stderr
    assert f"unknown category id: annotation id {first_ann['id']} (image id {first_ann['image_id']}," in proc.stderr
    out = tmp_path / "out"
    assert not list(out.glob("model_*.pth")) and not (out / "last_checkpoint").exists()
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert "iter:" not in log and "iter: 1" not in proc.stdout + proc.stderr
