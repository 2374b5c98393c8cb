"""COCODataset and image decoding on real files written to tmp_path."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from maskrcnn.data.datasets.coco import COCODataset, DatasetError
from maskrcnn.data.image_io import read_image_rgb

CATEGORIES = [{"id": 9, "name": "apple"}, {"id": 5, "name": "zebra"}]


def _rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _write_images(root):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(np.full((50, 30), 77, np.uint8), mode="L").save(root / "gray.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 150, 128
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    stored = np.zeros((24, 40, 3), np.uint8)  # stored (h, w) = (24, 40); displayed (40, 24)
    stored[:12] = (255, 0, 0)  # top half red -> right half once rotated 90 deg clockwise
    stored[12:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "photo.jpg", exif=exif, quality=95)
    pal = Image.new("P", (28, 20))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.paste(1, (0, 0, 28, 20))
    pal.save(root / "palette.png")


def _rle_of_box(h, w, box, compressed=True):
    m = np.zeros((h, w), np.uint8, order="F")
    m[box[1]:box[3], box[0]:box[2]] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    if compressed:
        rle["counts"] = rle["counts"].decode("ascii")
        return rle
    flat = m.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [h, w], "counts": counts}


def _annotations():
    return [
        {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 5, 20, 10], "iscrowd": 0, "area": 200,
         "segmentation": [_rect(10, 5, 30, 15)]},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [40, 20, 30, 30], "iscrowd": 0, "area": 300,
         "segmentation": _rle_of_box(40, 60, (40, 20, 60, 40))},
        {"id": 3, "image_id": 1, "category_id": 5, "bbox": [0, 0, 5, 5], "iscrowd": 1, "area": 25,
         "segmentation": _rle_of_box(40, 60, (0, 0, 5, 5), compressed=False)},
        {"id": 4, "image_id": 2, "category_id": 9, "bbox": [2, 2, 10, 10], "iscrowd": 0, "area": 100,
         "segmentation": [[1, 2, 3], [2, 2, 12, 2, 12, 12]]},
        {"id": 5, "image_id": 2, "category_id": 5, "bbox": [5, 20, 10, 10], "iscrowd": 0, "area": 100,
         "segmentation": _rle_of_box(50, 30, (5, 20, 15, 30), compressed=False)},
        {"id": 6, "image_id": 3, "category_id": 5, "bbox": [1, 1, 4, 4], "iscrowd": 1, "area": 16,
         "segmentation": _rle_of_box(32, 32, (1, 1, 5, 5))},
        {"id": 7, "image_id": 4, "category_id": 5, "bbox": [2, 3, 10, 20], "iscrowd": 0, "area": 200,
         "segmentation": [_rect(2, 3, 12, 23)]},
        {"id": 8, "image_id": 5, "category_id": 5, "bbox": [2, 3, 0, 5], "iscrowd": 0, "area": 0,
         "segmentation": [_rect(2, 3, 2, 8)]},
        {"id": 9, "image_id": 5, "category_id": 9, "bbox": [2, 3, 4, 5], "iscrowd": 0, "area": 20,
         "segmentation": [[1, 2, 3, 4]]},
    ]


def _coco_dict():
    images = [{"id": 1, "file_name": "rgb.png", "height": 40, "width": 60},
              {"id": 2, "file_name": "gray.png", "height": 50, "width": 30},
              {"id": 3, "file_name": "rgba.png", "height": 32, "width": 32},
              {"id": 4, "file_name": "photo.jpg", "height": 40, "width": 24},
              {"id": 5, "file_name": "palette.png", "height": 20, "width": 28}]
    return {"images": images, "annotations": _annotations(), "categories": CATEGORIES}


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture()
def coco_files(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    _write_images(img_dir)
    return _write_json(tmp_path / "ann.json", _coco_dict()), str(img_dir)


def test_categories_and_filtering(coco_files, caplog):
    with caplog.at_level(logging.INFO):
        train = COCODataset(*coco_files, "toy", is_train=True)
    assert train.category_id_to_contiguous == {5: 1, 9: 2}
    assert train.contiguous_to_category_id == {1: 5, 2: 9}
    assert train.class_names == ["__background__", "zebra", "apple"]
    assert train.num_classes == 2 and train.name == "toy"
    assert train.ids == [1, 2, 4]  # image 3: only crowd; image 5: only dropped annotations
    assert ("toy: 5 images, 9 annotations; 2 images without usable annotations (training leaves them "
            "out); repaired: 1 annotation dropped (empty box), 1 annotation "
            "dropped (no valid polygon), 1 box clipped, 1 polygon part dropped (< 3 points), 1 polygon "
            "part dropped (odd coordinate count); converted: 1 EXIF-rotated, 1 RGBA, 1 grayscale, "
            "1 palette") in caplog.text
    assert "removed 2 of 5" in caplog.text
    test = COCODataset(*coco_files, "toy", is_train=False)
    assert test.ids == [1, 2, 3, 4, 5] and len(test) == 5
    assert test.get_img_info(3) == {"id": 4, "height": 40, "width": 24, "file_name": "photo.jpg"}
    assert COCODataset(*coco_files, "toy", is_train=True, filter_empty=False).ids == [1, 2, 3, 4, 5]


def test_getitem_targets(coco_files):
    ds = COCODataset(*coco_files, "toy", is_train=True)
    image, target, info = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 40, 60)
    assert info == {"image_id": 1, "height": 40, "width": 60, "file_name": "rgb.png"}
    assert target.size == (40, 60)
    assert target.get_field("labels").tolist() == [1, 2]  # crowd annotation excluded
    assert target.get_field("labels").dtype == torch.int64
    # xywh -> xyxy, second box clipped to the image (x2 = 70 -> 60, y2 = 50 -> 40)
    assert target.bbox.tolist() == [[10, 5, 30, 15], [40, 20, 60, 40]]
    masks = target.get_field("masks")
    assert len(masks) == 2
    m = masks.crop_and_resize(target.bbox, torch.arange(2), 7)
    assert m.sum().item() == 2 * 49
    _, target2, _ = ds[1]  # one malformed part dropped, uncompressed RLE kept
    assert target2.get_field("labels").tolist() == [2, 1] and len(target2.get_field("masks")) == 2
    m2 = target2.get_field("masks").crop_and_resize(target2.bbox, torch.arange(2), 5)
    assert m2[1].sum().item() == 25


def test_image_modes(coco_files):
    ds = COCODataset(*coco_files, "toy", is_train=False)
    gray = ds[1][0]
    assert gray.shape == (3, 50, 30) and (gray == 77).all()
    rgba = ds[2][0]
    assert rgba.shape == (3, 32, 32) and rgba[1].eq(150).all() and rgba[0].eq(0).all()
    photo, target, info = ds[3]
    assert photo.shape == (3, 40, 24) and (info["height"], info["width"]) == (40, 24)
    right, left = photo[:, :, 14:].float().mean((1, 2)), photo[:, :, :10].float().mean((1, 2))
    assert right[0] > 200 and right[2] < 60 and left[2] > 200 and left[0] < 60
    pal = ds[4][0]
    assert pal.shape == (3, 20, 28) and pal[:, 0, 0].tolist() == [10, 200, 30]
    assert len(ds[4][1]) == 0 and ds[4][1].get_field("labels").dtype == torch.int64


def test_read_image_16bit_and_cmyk(tmp_path):
    arr16 = np.full((6, 5), 0x8000, np.uint16)
    arr16[0, 0] = 0xFFFF
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    out = read_image_rgb(tmp_path / "deep.png")
    assert out.shape == (6, 5, 3) and out.dtype == np.uint8
    assert out[1, 1].tolist() == [128] * 3 and out[0, 0].tolist() == [255] * 3
    Image.new("CMYK", (8, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    cmyk = read_image_rgb(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (4, 8, 3) and cmyk[..., 0].min() > 200 and cmyk[..., 1:].max() < 60


def test_transforms_applied(coco_files):
    from maskrcnn.data.transforms import Compose, ResizeShortestEdge
    ds = COCODataset(*coco_files, "toy", transforms=Compose([ResizeShortestEdge((80,), 1000)]))
    image, target, info = ds[0]
    assert image.shape == (3, 80, 120) and target.size == (80, 120)
    assert target.bbox[0].tolist() == [20, 10, 60, 30]
    assert (info["height"], info["width"]) == (40, 60)


def test_missing_and_invalid_annotation_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="nope.json"):
        COCODataset(str(missing), str(tmp_path), "x")
    with pytest.raises(FileNotFoundError):
        COCODataset(str(missing), str(tmp_path), "x")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        COCODataset(str(bad), str(tmp_path), "x")


def test_unknown_category(tmp_path, coco_files):
    data = _coco_dict()
    data["annotations"][0]["category_id"] = 77
    ann = _write_json(tmp_path / "badcat.json", data)
    with pytest.raises(ValueError, match=r"annotation id 1 .*category id 77"):
        COCODataset(ann, coco_files[1], "x")


def test_size_mismatch(tmp_path, coco_files):
    data = _coco_dict()
    data["images"][3]["height"], data["images"][3]["width"] = 24, 40  # stored, not displayed size
    ann = _write_json(tmp_path / "mismatch.json", data)
    with pytest.raises(DatasetError, match=r"image id 4 .*photo\.jpg.*\(40, 24\).*\(24, 40\)"):
        COCODataset(ann, coco_files[1], "x", is_train=False)
    # Without the header check, the image that disagrees fails when it is loaded.
    ds = COCODataset(ann, coco_files[1], "x", is_train=False, check="annotations")
    with pytest.raises(ValueError, match=r"image id 4 .*photo\.jpg.*\(40, 24\).*\(24, 40\)"):
        ds[3]


def test_missing_image_file(tmp_path, coco_files):
    data = _coco_dict()
    data["images"][0]["file_name"] = "ghost.png"
    ann = _write_json(tmp_path / "ghost.json", data)
    with pytest.raises(DatasetError, match=r"missing image file: image id 1 \(.*ghost\.png\)"):
        COCODataset(ann, coco_files[1], "x")
    ds = COCODataset(ann, coco_files[1], "x", check="annotations")
    with pytest.raises(FileNotFoundError, match="ghost.png"):
        ds[0]
