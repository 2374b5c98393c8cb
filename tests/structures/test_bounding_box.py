"""BoxList geometry, indexing and concatenation; box_iou against torchvision."""
import pytest
import torch
from torchvision.ops import box_area as tv_box_area
from torchvision.ops import box_iou as tv_box_iou

from maskrcnn.structures.bounding_box import BoxList, box_iou, boxlist_iou, cat_boxlist
from maskrcnn.structures.segmentation_mask import InstanceMasks


def random_boxes(gen, n, h, w, min_side=1.0):
    x1 = torch.rand(n, generator=gen) * (w - min_side)
    y1 = torch.rand(n, generator=gen) * (h - min_side)
    bw = min_side + torch.rand(n, generator=gen) * (w - x1 - min_side)
    bh = min_side + torch.rand(n, generator=gen) * (h - y1 - min_side)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], 1)


def make_boxlist(n=6, size=(60, 90), seed=0):
    gen = torch.Generator().manual_seed(seed)
    bl = BoxList(random_boxes(gen, n, *size), size)
    bl.add_field("labels", torch.arange(1, n + 1))
    bl.add_field("scores", torch.rand(n, generator=gen))
    return bl


def rect_masks(boxes, size):
    """InstanceMasks whose instance i is the rectangle boxes[i] (as a polygon)."""
    polys = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes.tolist()]
    return InstanceMasks(polys, size)


# ----------------------------------------------------------------- construction
def test_constructor_normalises_and_validates():
    bl = BoxList([[1, 2, 3, 4]], (10, 20))
    assert bl.bbox.dtype == torch.float32 and bl.size == (10, 20)
    assert BoxList(torch.tensor([[1, 2, 3, 4]]), (10, 20)).bbox.is_floating_point()
    assert BoxList(torch.zeros(0), (10, 20)).bbox.shape == (0, 4)
    with pytest.raises(ValueError):
        BoxList(torch.zeros(3, 5), (10, 20))


# -------------------------------------------------------------------- geometry
def test_resize_non_uniform_scale():
    bl = BoxList(torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 100.0, 50.0]]), (50, 100))
    bl.add_field("labels", torch.tensor([3, 4]))
    out = bl.resize((100, 300))  # sy = 2, sx = 3
    assert out.size == (100, 300)
    torch.testing.assert_close(out.bbox, torch.tensor([[30.0, 40.0, 90.0, 80.0], [0.0, 0.0, 300.0, 100.0]]))
    assert torch.equal(out.get_field("labels"), torch.tensor([3, 4]))
    # the original is untouched
    torch.testing.assert_close(bl.bbox, torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 100.0, 50.0]]))


def test_resize_carries_predicted_mask_tensor_unchanged():
    bl = make_boxlist(4, (60, 90))
    pred = torch.rand(4, 1, 28, 28)
    bl.add_field("mask", pred)
    out = bl.resize((120, 45))
    assert out.get_field("mask").shape == (4, 1, 28, 28)
    assert torch.equal(out.get_field("mask"), pred)
    out = bl.flip_horizontal().crop((5, 5, 50, 40))
    assert torch.equal(out.get_field("mask"), pred)


def test_resize_resizes_instance_masks_field():
    boxes = torch.tensor([[10.0, 10.0, 20.0, 30.0]])
    bl = BoxList(boxes, (40, 40))
    bl.add_field("masks", rect_masks(boxes, (40, 40)))
    out = bl.resize((80, 120))
    masks = out.get_field("masks")
    assert masks.size == (80, 120)
    t = masks.crop_and_resize(torch.tensor([[0.0, 0.0, 120.0, 80.0]]), torch.tensor([0]), 40)[0]
    # the rectangle scaled by (3, 2) is x in [30, 60), y in [20, 60): cells of 3 x 2 pixels
    expected = torch.zeros(40, 40)
    expected[10:30, 10:20] = 1
    assert torch.equal(t, expected)


def test_flip_horizontal_values_and_involution():
    bl = BoxList(torch.tensor([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 90.0, 60.0]]), (60, 90))
    bl.add_field("labels", torch.tensor([1, 2]))
    f = bl.flip_horizontal()
    torch.testing.assert_close(f.bbox, torch.tensor([[60.0, 5.0, 80.0, 25.0], [0.0, 0.0, 90.0, 60.0]]))
    assert f.size == bl.size
    assert torch.equal(f.get_field("labels"), bl.get_field("labels"))
    rand = make_boxlist(10, (60, 90), seed=3)
    torch.testing.assert_close(rand.flip_horizontal().flip_horizontal().bbox, rand.bbox)
    torch.testing.assert_close(rand.flip_horizontal().area(), rand.area())


def test_flip_vertical_values_and_involution():
    bl = BoxList(torch.tensor([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 90.0, 60.0]]), (60, 90))
    f = bl.flip_vertical()
    torch.testing.assert_close(f.bbox, torch.tensor([[10.0, 35.0, 30.0, 55.0], [0.0, 0.0, 90.0, 60.0]]))
    rand = make_boxlist(10, (60, 90), seed=4)
    torch.testing.assert_close(rand.flip_vertical().flip_vertical().bbox, rand.bbox)
    torch.testing.assert_close(rand.flip_vertical().area(), rand.area())


def test_crop_shifts_and_clips():
    bl = BoxList(torch.tensor([[10.0, 10.0, 50.0, 40.0],    # partly outside on the right/bottom
                               [25.0, 22.0, 30.0, 28.0],    # inside
                               [0.0, 0.0, 5.0, 5.0]]),      # fully outside (top-left)
                 (60, 90))
    bl.add_field("labels", torch.tensor([1, 2, 3]))
    out = bl.crop((20, 15, 40, 35))
    assert out.size == (20, 20)
    torch.testing.assert_close(out.bbox, torch.tensor([[0.0, 0.0, 20.0, 20.0],
                                                       [5.0, 7.0, 10.0, 13.0],
                                                       [0.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(out.get_field("labels"), torch.tensor([1, 2, 3]))
    assert out.nonempty().tolist() == [True, True, False]


def test_crop_shifts_instance_masks():
    boxes = torch.tensor([[10.0, 10.0, 20.0, 30.0]])
    bl = BoxList(boxes, (40, 40))
    bl.add_field("masks", rect_masks(boxes, (40, 40)))
    out = bl.crop((5, 8, 25, 28))
    masks = out.get_field("masks")
    assert masks.size == (20, 20)
    t = masks.crop_and_resize(torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([0]), 20)[0]
    expected = torch.zeros(20, 20)
    expected[2:20, 5:15] = 1
    assert torch.equal(t, expected)


def test_clip_to_image_remove_empty():
    bl = BoxList(torch.tensor([[-10.0, -5.0, 20.0, 30.0],   # clipped
                               [95.0, 10.0, 120.0, 20.0],   # right of the image -> empty
                               [10.0, 10.0, 10.0, 20.0],    # zero width
                               [30.0, 50.0, 100.0, 80.0]]), # clipped
                 (60, 90))
    bl.add_field("labels", torch.tensor([1, 2, 3, 4]))
    kept = bl.clip_to_image(remove_empty=True)
    torch.testing.assert_close(kept.bbox, torch.tensor([[0.0, 0.0, 20.0, 30.0], [30.0, 50.0, 90.0, 60.0]]))
    assert kept.get_field("labels").tolist() == [1, 4]
    allb = bl.clip_to_image(remove_empty=False)
    assert len(allb) == 4
    assert allb.get_field("labels").tolist() == [1, 2, 3, 4]
    torch.testing.assert_close(allb.bbox[1], torch.tensor([90.0, 10.0, 90.0, 20.0]))
    assert (allb.bbox[:, 0::2] <= 90).all() and (allb.bbox[:, 1::2] <= 60).all()
    assert (allb.bbox >= 0).all()


def test_area_and_nonempty():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0], [2.0, 3.0, 2.5, 9.0], [5.0, 5.0, 5.0, 9.0],
                          [4.0, 4.0, 1.0, 1.0]])
    bl = BoxList(boxes, (20, 20))
    torch.testing.assert_close(bl.area(), torch.tensor([50.0, 3.0, 0.0, 0.0]))
    assert bl.nonempty().tolist() == [True, True, False, False]
    assert bl.nonempty(min_size=1.0).tolist() == [True, False, False, False]
    rand = make_boxlist(20, (60, 90), seed=7)
    torch.testing.assert_close(rand.area(), tv_box_area(rand.bbox))


# ------------------------------------------------------------------- indexing
def _check_aligned(sub, bl, idx):
    torch.testing.assert_close(sub.bbox, bl.bbox[idx])
    assert torch.equal(sub.get_field("labels"), bl.get_field("labels")[idx])
    assert torch.equal(sub.get_field("scores"), bl.get_field("scores")[idx])
    assert sub.size == bl.size


@pytest.mark.parametrize("kind", ["bool", "long", "slice", "int"])
def test_indexing_keeps_fields_aligned(kind):
    bl = make_boxlist(6)
    bl.add_field("masks", rect_masks(bl.bbox, bl.size))
    if kind == "bool":
        item = torch.tensor([True, False, True, True, False, False])
        idx = torch.tensor([0, 2, 3])
    elif kind == "long":
        item = torch.tensor([4, 1, 5])
        idx = item
    elif kind == "slice":
        item = slice(1, 5, 2)
        idx = torch.tensor([1, 3])
    else:
        item = 3
        idx = torch.tensor([3])
    sub = bl[item]
    assert len(sub) == idx.numel()
    _check_aligned(sub, bl, idx)
    # the mask field follows the same selection: each instance is the rectangle of its box
    masks = sub.get_field("masks")
    assert len(masks) == idx.numel()
    full = torch.tensor([[0.0, 0.0, 90.0, 60.0]]).repeat(len(sub), 1)
    got = masks.crop_and_resize(full, torch.arange(len(sub)), 30)
    want = bl.get_field("masks").crop_and_resize(full, idx, 30)
    assert torch.equal(got, want)


def test_negative_int_index():
    bl = make_boxlist(5)
    last = bl[-1]
    assert len(last) == 1
    torch.testing.assert_close(last.bbox, bl.bbox[-1:])
    assert last.get_field("labels").tolist() == [5]


def test_to_moves_tensor_fields():
    bl = make_boxlist(3)
    bl.add_field("masks", rect_masks(bl.bbox, bl.size))
    bl.add_field("note", "x")
    meta = bl.to("meta")
    assert meta.bbox.device.type == "meta"
    assert meta.get_field("labels").device.type == "meta"
    assert meta.get_field("scores").device.type == "meta"
    masks = meta.get_field("masks")  # polygon points move; part tables and RLEs stay on the host
    assert masks.points.device.type == "meta" and masks.part_ptr.device.type == "cpu"
    assert masks.rles == bl.get_field("masks").rles and masks.size == bl.size
    assert meta.get_field("note") == "x"
    assert meta.size == bl.size
    back = bl.to(torch.device("cpu"))
    assert torch.equal(back.bbox, bl.bbox) and back.fields() == bl.fields()


# ------------------------------------------------------------------------ cat
def test_cat_boxlist_concatenates_fields():
    a, b = make_boxlist(3, seed=1), make_boxlist(4, seed=2)
    out = cat_boxlist([a, b])
    assert len(out) == 7 and out.size == a.size
    torch.testing.assert_close(out.bbox, torch.cat([a.bbox, b.bbox]))
    assert torch.equal(out.get_field("labels"), torch.cat([a.get_field("labels"), b.get_field("labels")]))
    assert torch.equal(out.get_field("scores"), torch.cat([a.get_field("scores"), b.get_field("scores")]))
    assert sorted(out.fields()) == ["labels", "scores"]


def test_cat_boxlist_errors():
    a = make_boxlist(3, (60, 90))
    with pytest.raises(ValueError):
        cat_boxlist([a, make_boxlist(3, (61, 90))])
    b = make_boxlist(3, (60, 90))
    b.add_field("extra", torch.zeros(3))
    with pytest.raises(ValueError):
        cat_boxlist([a, b])
    c = make_boxlist(3, (60, 90))
    c.extra_fields.pop("scores")
    with pytest.raises(ValueError):
        cat_boxlist([a, c])
    with pytest.raises(ValueError):
        cat_boxlist([])
    d, e = BoxList(torch.zeros(1, 4), (5, 5)), BoxList(torch.zeros(1, 4), (5, 5))
    d.add_field("f", object())
    e.add_field("f", object())
    with pytest.raises(TypeError):
        cat_boxlist([d, e])


# ------------------------------------------------------------------------ IoU
def test_box_iou_matches_torchvision():
    gen = torch.Generator().manual_seed(0)
    a = random_boxes(gen, 40, 100, 120)
    b = random_boxes(gen, 55, 100, 120)
    b[:5] = a[:5]  # identical boxes give 1
    got = box_iou(a, b)
    torch.testing.assert_close(got, tv_box_iou(a, b))
    torch.testing.assert_close(got[range(5), range(5)], torch.ones(5))
    assert (got > 0).any() and (got == 0).any()


def test_box_iou_degenerate_boxes_are_zero_not_nan():
    a = torch.tensor([[5.0, 5.0, 5.0, 5.0],      # a point
                      [1.0, 1.0, 1.0, 8.0],      # zero width
                      [0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 1.0, 8.0], [0.0, 0.0, 10.0, 10.0],
                      [2.0, 2.0, 4.0, 2.0]])
    iou = box_iou(a, b)
    assert not torch.isnan(iou).any()
    expected = torch.zeros(3, 4)
    expected[2, 2] = 1.0
    torch.testing.assert_close(iou, expected)
    # torchvision agrees wherever it is defined
    tv = tv_box_iou(a, b)
    defined = ~torch.isnan(tv)
    torch.testing.assert_close(iou[defined], tv[defined])


def test_box_iou_empty_inputs():
    assert box_iou(torch.zeros(0, 4), torch.rand(3, 4)).shape == (0, 3)
    assert box_iou(torch.rand(2, 4), torch.zeros(0, 4)).shape == (2, 0)


def test_boxlist_iou_checks_sizes():
    a, b = make_boxlist(4, (60, 90), 1), make_boxlist(5, (60, 90), 2)
    torch.testing.assert_close(boxlist_iou(a, b), tv_box_iou(a.bbox, b.bbox))
    with pytest.raises(ValueError):
        boxlist_iou(a, make_boxlist(5, (90, 60), 2))
