"""Synthetic shapes dataset, dataset catalog and the train/test loaders built from a config."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from maskrcnn.data import build_test_loaders, build_train_loader
from maskrcnn.data.datasets import catalog
from maskrcnn.data.datasets.catalog import UnknownDatasetError, resolve_dataset
from maskrcnn.data.datasets.coco import COCODataset
from maskrcnn.data.datasets.shapes import ensure_shapes_dataset


class Node(dict):
    """Minimal dict-with-attributes config node (like the real config)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def _cfg(data_dir, catalog_entries=None, workers=0, grouping=True):
    return Node(
        DATASETS=Node(TRAIN=("toy_train",), TEST=("toy_val",), DATA_DIR=str(data_dir),
                      CHECK="header", CATALOG=Node(catalog_entries or {})),
        INPUT=Node(MIN_SIZE_TRAIN=(64, 80, 96), MAX_SIZE_TRAIN=160, MIN_SIZE_TEST=80,
                   MAX_SIZE_TEST=160, HORIZONTAL_FLIP_PROB_TRAIN=0.5, RESIZE_MODE="antialias",
                   BRIGHTNESS=0.0, CONTRAST=0.0, SATURATION=0.0, HUE=0.0, VERTICAL_FLIP_PROB_TRAIN=0.0,
                   MIN_SIZE_TRAIN_SAMPLING="choice"),
        DATALOADER=Node(NUM_WORKERS=workers, ASPECT_RATIO_GROUPING=grouping,
                        FILTER_EMPTY_ANNOTATIONS=True),
        SOLVER=Node(IMS_PER_BATCH=4, MAX_ITER=5), TEST=Node(IMS_PER_BATCH=3), SEED=7,
        MODEL=Node(DEVICE="cpu", MASK_ON=True))  # pinned memory for a CUDA model only; masks needed


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ensure_shapes_dataset(str(root), "train", 16, seed=3)
    ensure_shapes_dataset(str(root), "val", 7, seed=4)
    return root


def _entries(root):
    base = os.path.join(str(root), "shapes")
    return {"toy_train": {"ANN_FILE": os.path.join(base, "instances_train.json"),
                          "IMG_DIR": os.path.join(base, "train")},
            "toy_val": {"ANN_FILE": os.path.join(base, "instances_val.json"),
                        "IMG_DIR": os.path.join(base, "val")}}


def test_deterministic_across_directories(tmp_path):
    a = ensure_shapes_dataset(str(tmp_path / "a"), "train", 6, seed=11)
    b = ensure_shapes_dataset(str(tmp_path / "b"), "train", 6, seed=11)
    assert open(a[0], "rb").read() == open(b[0], "rb").read()
    names = sorted(os.listdir(a[1]))
    assert len(names) == 6 and names == sorted(os.listdir(b[1]))
    for n in names:
        assert open(os.path.join(a[1], n), "rb").read() == open(os.path.join(b[1], n), "rb").read()
    other = ensure_shapes_dataset(str(tmp_path / "c"), "val", 6, seed=11)
    assert open(other[0], "rb").read() != open(a[0], "rb").read()


def test_content(shapes_root):
    ann_file = os.path.join(str(shapes_root), "shapes", "instances_train.json")
    data = json.load(open(ann_file))
    assert [c["name"] for c in data["categories"]] == ["circle", "square", "triangle"]
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    sizes = {(im["height"], im["width"]) for im in data["images"]}
    assert len(sizes) > 3 and all(96 <= s <= 160 for hw in sizes for s in hw)
    per_image = {}
    for ann in data["annotations"]:
        im = data["images"][ann["image_id"] - 1]
        pts = np.asarray(ann["segmentation"][0]).reshape(-1, 2)
        n_pts = {1: range(24, 33), 2: [4], 3: [3]}[ann["category_id"]]
        assert len(pts) in n_pts and ann["iscrowd"] == 0 and ann["area"] > 40
        assert pts.min() >= 0 and (pts[:, 0] <= im["width"]).all() and (pts[:, 1] <= im["height"]).all()
        x, y, w, h = ann["bbox"]
        assert np.allclose([x, y, x + w, y + h], [*pts.min(0), *pts.max(0)], atol=0.011)
        assert 10 < max(w, h) < 90
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        # painted pixels agree with the polygon as pycocotools rasterises it
        rgb = np.asarray(Image.open(os.path.join(str(shapes_root), "shapes", "train", im["file_name"])))
        m = mask_utils.decode(mask_utils.frPyObjects(ann["segmentation"], im["height"], im["width"]))
        colours = rgb[m[..., 0].astype(bool)]
        modal = (colours == np.median(colours, axis=0)).all(1).mean()
        assert modal > 0.97
    assert len(per_image) == 16 and all(1 <= n <= 4 for n in per_image.values())


def test_reuse_and_regeneration(tmp_path):
    ann, img_dir = ensure_shapes_dataset(str(tmp_path), "val", 4, seed=1)
    before = os.stat(ann).st_mtime_ns
    assert ensure_shapes_dataset(str(tmp_path), "val", 4, seed=1) == (ann, img_dir)
    assert os.stat(ann).st_mtime_ns == before
    ensure_shapes_dataset(str(tmp_path), "val", 5, seed=1)  # different meta -> regenerated
    assert len(json.load(open(ann))["images"]) == 5 and len(os.listdir(img_dir)) == 5
    os.remove(os.path.join(str(tmp_path), "shapes", ".val.stamp.json"))  # "interrupted" run
    open(ann, "w").write("{truncated")
    ensure_shapes_dataset(str(tmp_path), "val", 5, seed=1)
    assert len(json.load(open(ann))["images"]) == 5
    assert not [n for n in os.listdir(os.path.join(str(tmp_path), "shapes")) if n.startswith(".tmp")]


def test_catalog(tmp_path, monkeypatch, shapes_root):
    monkeypatch.chdir(tmp_path)
    spec = resolve_dataset("mine", Node(CATALOG=Node(mine=Node(ANN_FILE="a/x.json", IMG_DIR="imgs"))))
    assert spec == {"ann_file": str(tmp_path / "a" / "x.json"), "img_dir": str(tmp_path / "imgs"),
                    "kind": "coco"}
    monkeypatch.setitem(catalog.SHAPES_SPLITS, "shapes_val", ("val", 7, 4))
    spec = resolve_dataset("shapes_val", Node(DATA_DIR=str(shapes_root), CATALOG=Node()))
    assert spec["kind"] == "shapes" and len(COCODataset(spec["ann_file"], spec["img_dir"], "v")) == 7
    with pytest.raises(KeyError) as err:
        resolve_dataset("nonexistent", Node(DATA_DIR="d", CATALOG=Node()))
    assert isinstance(err.value, UnknownDatasetError)
    msg = str(err.value)
    assert "coco_2017_train" in msg and "shapes_train" in msg and "CATALOG" in msg and "ANN_FILE" in msg
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        resolve_dataset("coco_2017_val", Node(DATA_DIR=str(tmp_path), CATALOG=Node()))


def _batches(loader):
    return [(imgs, tgts, infos) for imgs, tgts, infos in loader]


def _same(a, b):
    assert len(a) == len(b)
    for (ia, ta, fa), (ib, tb, fb) in zip(a, b):
        assert fa == fb and all(torch.equal(x, y) for x, y in zip(ia, ib))
        assert all(torch.equal(x.bbox, y.bbox) and x.size == y.size for x, y in zip(ta, tb))


def test_train_loader_deterministic_across_workers_and_resume(shapes_root):
    entries = _entries(shapes_root)
    single = _batches(build_train_loader(_cfg(shapes_root, entries, workers=0)))
    assert len(single) == 5 and all(len(b[0]) == 4 for b in single)
    for imgs, tgts, infos in single:
        assert all(i.dtype == torch.uint8 and i.shape[0] == 3 for i in imgs)
        assert all(t.size == tuple(i.shape[1:]) and len(t) > 0 for i, t in zip(imgs, tgts))
        assert len({f["height"] < f["width"] for f in infos}) <= 2
    _same(single, _batches(build_train_loader(_cfg(shapes_root, entries, workers=2))))
    _same(single[2:], _batches(build_train_loader(_cfg(shapes_root, entries), start_iter=2)))
    loader = build_train_loader(_cfg(shapes_root, entries, grouping=False))
    assert loader.dataset.class_names == ["__background__", "circle", "square", "triangle"]


def test_test_loaders(shapes_root):
    (name, loader), = build_test_loaders(_cfg(shapes_root, _entries(shapes_root)))
    assert name == "toy_val"
    batches = _batches(loader)
    assert [len(b[0]) for b in batches] == [3, 3, 1]
    assert [f["image_id"] for b in batches for f in b[2]] == list(range(1, 8))
    for imgs, _, infos in batches:
        for img, info in zip(imgs, infos):
            assert min(img.shape[1:]) == 80 or max(img.shape[1:]) == 160
