"""Checks of the image files of a dataset (maskrcnn/data/datasets/image_check.py) that need
files of their own: names whose letter case differs from the file on disk, empty files."""
import json

import numpy as np
import pytest
from PIL import Image

from maskrcnn.data.datasets.check import check_dataset

CATS = [{"id": 1, "name": "a"}]


def _img(img_id, name, h, w):
    return {"id": img_id, "file_name": name, "height": h, "width": w}


def test_missing_file_names_the_file_with_other_letter_case(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ("sub/pic.png", "sub/deeper/IMG_1.jpg", "a.png"):
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / name)
    if (tmp_path / "A.PNG").exists():
        pytest.skip("case-insensitive file system: IMG_1.JPG opens img_1.jpg")
    names = ["SUB/Pic.PNG", "sub/DEEPER/img_1.JPG", "sub/nope.png", "nodir/a.png", "./A.png", "a.png"]
    images = [_img(i + 1, name, 4, 6) for i, name in enumerate(names)]
    path = tmp_path / "case.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": CATS}))
    report = check_dataset(str(path), str(tmp_path), "case").report
    assert {f.image_id: f.detail for f in report.errors} == {
        1: "no such file: SUB/Pic.PNG; did you mean sub/pic.png?",
        2: "no such file: sub/DEEPER/img_1.JPG; did you mean sub/deeper/IMG_1.jpg?",
        3: "no such file", 4: "no such file", 5: "no such file: ./A.png; did you mean a.png?"}
    assert report.summary() == "case: 6 images, 0 annotations; 6 images without usable annotations " \
                               "(training leaves them out); 5 errors"


def test_empty_file_is_reported_as_empty_not_as_a_decode_error(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"images": [_img(1, "zero.jpg", 4, 6), _img(2, "junk.jpg", 4, 6)],
                                "categories": CATS}))
    for level in ("header", "full"):
        report = check_dataset(str(path), str(tmp_path), "e", images=level).report
        errors = {f.image_id: f for f in report.errors}
        assert (errors[1].kind, errors[1].detail) == ("empty image file", "empty file (0 bytes)")
        assert errors[2].kind == "unreadable image" and "cannot" in errors[2].detail
