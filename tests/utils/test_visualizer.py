"""The shared drawing: PNGs are written, decoded and checked for the pixels that were drawn."""
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from maskrcnn.structures.segmentation_mask import InstanceMasks
from maskrcnn.utils.visualizer import (class_color, draw_ground_truth, draw_instances, draw_predictions,
                                       rasterize_instance_masks, save_png, side_by_side, style_for,
                                       to_chw_uint8)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = {1: "circle", 2: "square", 3: "triangle"}


def _scene(h, w):
    """A grey image, two boxes (fractions of the image) and their masks (the box interiors)."""
    image = np.full((h, w, 3), 128, np.uint8)
    boxes = torch.tensor([[0.1, 0.3, 0.5, 0.9], [0.55, 0.4, 0.95, 0.95]]) * torch.tensor([w, h, w, h])
    masks = torch.zeros((2, h, w), dtype=torch.bool)
    inset = max(3, w // 50)  # clear of the box outline
    for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        masks[i, y0 + inset:y1 - inset, x0 + inset:x1 - inset] = True
    return image, boxes, torch.tensor([1, 2]), masks


def _label_rect_height(drawn, box, color):
    """Height of the run of ``color`` pixels right above ``box``'s top-left corner (the label)."""
    x = int(box[0])  # the label's padding column: no text there
    y = int(box[1]) - 1
    col = drawn[:, :, x].permute(1, 0)  # (H, 3)
    run = 0
    while y - run >= 0 and tuple(col[y - run].tolist()) == color:
        run += 1
    return run


def test_class_colours_are_fixed_distinct_and_stable_across_processes():
    assert class_color(1) == (85, 131, 242)
    assert class_color(2) == (141, 242, 0)
    colours = [np.array(class_color(k), float) for k in range(1, 21)]
    dists = [np.abs(a - b).sum() for i, a in enumerate(colours) for b in colours[i + 1:]]
    assert min(dists) > 40  # every pair of the 20 VOC classes is told apart
    code = "from maskrcnn.utils.visualizer import class_color; print([class_color(k) for k in range(30)])"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                           env=dict(os.environ, PYTHONHASHSEED=seed), check=True).stdout for seed in ("1", "2")}
    assert len(outs) == 1 and outs.pop().strip() == str([class_color(k) for k in range(30)])


def test_style_scales_with_the_image():
    assert style_for(200, 200) == (10, 2)
    font, line = style_for(3000, 4000)
    assert font >= 45 and line >= 7
    assert style_for(800, 1333)[0] < font


@pytest.mark.parametrize("h, w", [(200, 200), (3000, 4000)])
def test_predictions_draw_masks_boxes_and_filled_labels_that_scale(h, w, tmp_path):
    image, boxes, labels, masks = _scene(h, w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = draw_predictions(image, boxes, labels, torch.tensor([0.9, 0.8]), NAMES, masks, 0.5)
    path = save_png(drawn, tmp_path / "out.png")
    decoded = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)
    assert torch.equal(decoded, drawn) and decoded.shape == (3, h, w)
    font, line = style_for(h, w)
    for box, label in zip(boxes.tolist(), labels.tolist()):
        color = class_color(label)
        x0, y0, x1, y1 = (int(v) for v in box)
        # The box outline, `line` pixels wide, in the class colour.
        edge = decoded[:, (y0 + y1) // 2, x0:x0 + line].T
        assert all(tuple(p) == color for p in edge.tolist())
        # Mask: blended towards the class colour inside, grey outside, a darker outline.
        inside = decoded[:, (y0 + y1) // 2 + 1, (x0 + x1) // 2].tolist()
        assert inside != [128, 128, 128] and np.argmax(inside) == np.argmax(color)
        i = labels.tolist().index(label)
        row = (y0 + y1) // 2 + 1
        first = int(torch.nonzero(masks[i, row]).min())
        assert decoded[:, row, first].tolist() == [int(v * 0.55) for v in color]
        # The label: a filled rectangle of the class colour above the box, as tall as the font,
        # with text pixels of another colour inside it.
        height = _label_rect_height(decoded, box, color)
        assert font * 0.8 <= height <= font * 2.0, (height, font)
        strip = decoded[:, y0 - height:y0, x0:x0 + 3 * font].reshape(3, -1).T
        assert any(tuple(p) != color for p in strip.tolist())
    assert decoded[:, 1, w - 2].tolist() == [128, 128, 128]  # nothing drawn far from the instances


def test_no_detections_is_said_on_the_image_and_in_the_log(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("maskrcnn"), "propagate", True)  # setup_logger elsewhere may clear it
    image, boxes, labels, masks = _scene(200, 200)
    with caplog.at_level(logging.INFO, logger="maskrcnn"):
        drawn = draw_predictions(image, boxes, labels, torch.tensor([0.3, 0.1]), NAMES, masks, 0.5,
                                 image_name="a.jpg")
    assert "a.jpg: no detections with score >= 0.5" in caplog.text
    corner = drawn[:, :8, :60].reshape(3, -1).T.tolist()
    assert (40, 40, 40) in [tuple(p) for p in corner]  # the message's filled background
    assert any(p[0] > 200 for p in corner)  # its white text
    assert drawn[:, 150, 100].tolist() == [128, 128, 128]  # no mask or box was drawn
    gt = draw_ground_truth(image, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), NAMES)
    assert (gt[:, :8, :60] != 128).any()  # "no annotations"


def test_overlapping_masks_show_the_top_instance_not_black():
    image = np.full((100, 100, 3), 128, np.uint8)
    masks = torch.zeros((2, 100, 100), dtype=torch.bool)
    masks[0, 20:80, 20:80] = True
    masks[1, 40:90, 40:90] = True
    boxes = torch.tensor([[20.0, 20, 80, 80], [40.0, 40, 90, 90]])
    drawn = draw_predictions(image, boxes, torch.tensor([1, 2]), torch.tensor([0.6, 0.9]), NAMES, masks)
    overlap = drawn[:, 60, 60].tolist()
    alone = drawn[:, 85, 85].tolist()
    assert overlap == alone  # the higher-scoring instance (drawn last) is on top


def test_labels_of_boxes_sharing_a_corner_do_not_cover_each_other():
    from maskrcnn.utils.visualizer import _place_label

    box = [20.0, 30.0, 120.0, 150.0]
    assert _place_label(box, 50, 12, (200, 200), []) == (20.0, 18.0)  # above the box
    assert _place_label(box, 50, 12, (200, 200), [(20, 18, 70, 30)]) == (20.0, 30.0)  # inside its top
    assert _place_label(box, 50, 12, (200, 200), [(20, 18, 70, 30), (20, 30, 70, 42)]) == (20.0, 150.0)
    assert _place_label([0.0, 0.0, 200.0, 200.0], 50, 12, (200, 200), []) == (0.0, 0.0)  # no room outside
    assert _place_label([180.0, 5.0, 199.0, 20.0], 50, 12, (200, 200), []) == (150.0, 5.0)  # kept in the image


def test_side_by_side_panels_with_titles():
    a = draw_ground_truth(*_scene(120, 160)[:3], NAMES)
    b = torch.zeros((3, 100, 200), dtype=torch.uint8)
    out = side_by_side([a, b], ["ground truth", "predictions"])
    font, _ = style_for(120, 200)
    assert out.shape[1] > 120 and out.shape[2] >= 160 + 200 + 4
    strip = out[:, : out.shape[1] - 120, :160]
    assert (strip < 100).any() and (strip == 255).any()  # black title on white
    assert torch.equal(out[:, -120:, :160], a)
    # A title that wraps onto several lines keeps the panels lined up.
    c = torch.zeros((3, 120, 100), dtype=torch.uint8)
    out = side_by_side([a, c], ["gt", "predictions with a title far too long for one line"])
    assert torch.equal(out[:, -120:, :160], a) and torch.equal(out[:, -120:, -100:], c)
    assert (out[:, : out.shape[1] - 120, -100:] < 100).sum() > (out[:, : out.shape[1] - 120, :100] < 100).sum()
    with pytest.raises(ValueError, match="2 titles for 1 panels"):
        side_by_side([a], ["x", "y"])


def test_image_layouts_and_errors():
    hwc = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    chw = to_chw_uint8(hwc)
    assert chw.shape == (3, 6, 5) and torch.equal(to_chw_uint8(chw), chw)
    assert torch.equal(to_chw_uint8(torch.from_numpy(hwc)), chw)  # an (H, W, 3) tensor
    assert to_chw_uint8(np.zeros((6, 5), np.uint8)).shape == (3, 6, 5)
    assert to_chw_uint8(torch.full((3, 2, 2), 300.0)).max() == 255
    with pytest.raises(ValueError, match="one entry per instance"):
        draw_instances(hwc, torch.zeros((2, 4)), torch.zeros(1))
    with pytest.raises(TypeError, match="torch.Tensor"):
        to_chw_uint8([[1, 2]])


def test_rasterized_masks_match_the_polygon_and_rle_they_come_from():
    h, w = 60, 80
    rect = [[10.0, 12.0, 50.0, 12.0, 50.0, 40.0, 10.0, 40.0]]
    dense = np.zeros((h, w), np.uint8)
    dense[5:30, 55:75] = 1
    dense[20:28, 60:62] = 0
    rle = mask_utils.encode(np.asfortranarray(dense))
    rle["counts"] = rle["counts"].decode()
    masks = InstanceMasks([rect, None], (h, w), rles=[None, rle])
    boxes = torch.tensor([[10.0, 12, 50, 40], [55.0, 5, 75, 30]])
    out = rasterize_instance_masks(masks, boxes)
    expected_rect = torch.zeros((h, w), dtype=torch.bool)
    expected_rect[12:40, 10:50] = True
    assert torch.equal(out[0], expected_rect)
    assert torch.equal(out[1], torch.from_numpy(dense.astype(bool)))
    flipped = rasterize_instance_masks(masks.flip_horizontal(), torch.tensor([[30.0, 12, 70, 40], [5.0, 5, 25, 30]]))
    assert torch.equal(flipped, out.flip(-1))


def test_drawing_prints_no_warning_under_W_error(tmp_path):
    """The demo's drawing path in a fresh interpreter with every warning an error."""
    code = textwrap.dedent(f"""
        import numpy as np, torch
        from maskrcnn.utils.visualizer import draw_predictions, draw_ground_truth, side_by_side, save_png
        img = np.full((300, 400, 3), 90, np.uint8)
        img.setflags(write=False)  # as numpy arrays from some readers are
        boxes = torch.tensor([[10., 20., 200., 250.], [-5., 100., 420., 310.]])
        masks = torch.zeros((2, 300, 400), dtype=torch.bool); masks[:, 50:100, 50:100] = True
        p = draw_predictions(img, boxes, torch.tensor([1, 7]), torch.tensor([0.9, 0.6]), ["bg", "a"], masks)
        e = draw_predictions(img, boxes, torch.tensor([1, 7]), torch.tensor([0.1, 0.2]), None, None)
        g = draw_ground_truth(img, boxes[:0], torch.zeros(0, dtype=torch.long))
        save_png(side_by_side([g, p, e], ["gt", "pred", "empty"]), {str(tmp_path / 'w.png')!r})
    """)
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert Image.open(tmp_path / "w.png").size[1] > 300
