"""Predictor takes what people have: a path, RGB / grayscale / BGR arrays, PIL images of any mode,
uint8 tensors, and lists of them (one forward pass); every form agrees with the RGB array."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_cfg
from maskrcnn.data.transforms import ResizeShortestEdge
from maskrcnn.modeling import build_model
from maskrcnn.predictor import Predictor, to_rgb_tensor

CATEGORIES = [{"id": 11, "name": "a"}, {"id": 22, "name": "b"}, {"id": 33, "name": "c"}]


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    with torch.no_grad():
        model.roi_heads.box.predictor.cls_score.bias[2] = 10.0  # confident: everything is class 2
    return Predictor(model, transform=ResizeShortestEdge(64, 100), categories=CATEGORIES)


def _rgb(h=90, w=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).numpy()


def _same(a, b):
    assert set(a) == set(b) == {"boxes", "scores", "labels", "masks"}
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(predictor):
    out = predictor(_rgb())
    assert len(out["boxes"]) > 0 and out["masks"].shape[1:] == (90, 120)  # something to compare
    return out


def test_path_pil_tensor_and_bgr_agree_with_the_rgb_array(predictor, reference, tmp_path):
    rgb = _rgb()
    path = tmp_path / "image.png"
    Image.fromarray(rgb).save(path)
    _same(predictor(str(path)), reference)
    _same(predictor(path), reference)  # a pathlib.Path
    _same(predictor(Image.fromarray(rgb)), reference)
    _same(predictor(Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]))), reference)  # RGBA
    _same(predictor(torch.from_numpy(rgb).permute(2, 0, 1)), reference)
    _same(predictor(rgb[..., ::-1], bgr=True), reference)  # cv2.imread order, a negative-stride view
    _same(predictor(torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1), bgr=True), reference)
    assert not torch.equal(predictor(rgb[..., ::-1])["scores"], reference["scores"])  # bgr matters


def test_grayscale_forms_agree_with_the_gray_rgb_array(predictor):
    gray = _rgb()[..., 0]
    expected = predictor(np.repeat(gray[..., None], 3, axis=2))
    assert len(expected["boxes"]) > 0
    _same(predictor(gray), expected)
    _same(predictor(gray[..., None]), expected)
    _same(predictor(Image.fromarray(gray)), expected)  # mode L
    _same(predictor(Image.fromarray(gray.astype(np.uint16) * 257)), expected)  # 16-bit: scaled to 8 bits
    _same(predictor(torch.from_numpy(gray)[None]), expected)
    _same(predictor(gray, bgr=True), expected)  # no channels to swap


def test_pil_palette_and_exif_rotation(predictor, tmp_path):
    palette = Image.fromarray(_rgb()).convert("P")
    _same(predictor(palette), predictor(np.asarray(palette.convert("RGB"))))
    rgb = _rgb()
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, displayed rotated by 90 degrees
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    with Image.open(path) as pil:
        from_pil = predictor(pil)
    from_path = predictor(path)
    assert from_path["masks"].shape[1:] == (120, 90)  # displayed (h, w), as image files in datasets
    _same(from_pil, from_path)


def test_a_list_is_one_forward_pass_of_images_of_different_sizes(predictor, tmp_path, monkeypatch):
    arrays = [_rgb(90, 120, 1), _rgb(70, 64, 2), _rgb(100, 80, 3)]
    Image.fromarray(arrays[0]).save(tmp_path / "a.png")
    calls = []
    real = predictor.model.predict
    monkeypatch.setattr(predictor.model, "predict", lambda images: calls.append(len(images)) or real(images))
    mixed = predictor([str(tmp_path / "a.png"), Image.fromarray(arrays[1]), torch.from_numpy(arrays[2]).permute(2, 0, 1)])
    expected = predictor(arrays)
    assert calls == [3, 3]
    assert isinstance(mixed, list) and len(mixed) == 3
    for out, ref, arr in zip(mixed, expected, arrays):
        _same(out, ref)
        h, w = arr.shape[:2]
        assert out["masks"].shape[1:] == (h, w)
        assert (out["boxes"][:, 2] <= w).all() and (out["boxes"][:, 3] <= h).all()
    for out, ref in zip(predictor(tuple(arrays)), expected):  # a tuple is a batch too
        _same(out, ref)
    assert predictor([]) == [] and calls == [3, 3, 3]


@pytest.mark.parametrize("bad, words", [
    (np.zeros((20, 30, 3), np.float32), "float32 array of shape (20, 30, 3)"),
    (np.zeros((20, 30, 3), np.uint16), "uint16 array"),
    (np.zeros((20, 30, 4), np.uint8), "alpha"),
    (np.zeros((20, 30, 2), np.uint8), "shape (20, 30, 2)"),
    (np.zeros((2, 20, 30, 3), np.uint8), "shape (2, 20, 30, 3)"),
    (torch.zeros(3, 20, 30), "torch.float32 tensor of shape (3, 20, 30)"),
    (torch.zeros(20, 30, 3, dtype=torch.uint8), "channels first"),
    (42, "got int"),
    (None, "got NoneType"),
])
def test_anything_else_is_a_clear_value_error(predictor, bad, words):
    with pytest.raises(ValueError) as info:
        predictor(bad)
    assert words in str(info.value) and "RGB uint8 array (H, W, 3)" in str(info.value)
    with pytest.raises(ValueError, match="got int"):
        predictor([_rgb(), 42])  # one bad image in a list


def test_bgr_with_a_file_or_pil_image_is_refused(predictor, tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(_rgb()).save(path)
    for image in (str(path), Image.open(path)):
        with pytest.raises(ValueError, match="bgr=True is for arrays and tensors"):
            predictor(image, bgr=True)
    with pytest.raises(ValueError, match="not found"):
        predictor(str(tmp_path / "missing.png"))


def test_to_rgb_tensor_shapes_and_copies():
    rgb = _rgb(5, 7)
    t = to_rgb_tensor(rgb)
    assert t.shape == (3, 5, 7) and t.dtype == torch.uint8 and t.is_contiguous()
    t[0, 0, 0] = 255 - t[0, 0, 0]
    assert int(t[0, 0, 0]) != int(rgb[0, 0, 0])  # a copy: the caller's array is untouched
    assert torch.equal(to_rgb_tensor(rgb[..., ::-1], bgr=True), to_rgb_tensor(rgb))
