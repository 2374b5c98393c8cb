"""InstanceMasks: mask targets against pycocotools and an exact point-in-polygon oracle."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maskrcnn.structures import mask_targets as mask_targets_module
from maskrcnn.structures.segmentation_mask import InstanceMasks

# pycocotools' decode triggers a NumPy 2 deprecation warning on every call
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


# ----------------------------------------------------------------- helpers
def coco_raster(parts, h, w):
    """pycocotools rasterisation of one instance given as polygon parts."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, h, w)))


def rle_of(mask):
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def full_target(masks, index, side):
    """Target of one instance over the whole (side x side) image at m = side."""
    box = torch.tensor([[0.0, 0.0, float(side), float(side)]])
    return masks.crop_and_resize(box, torch.tensor([index]), side)[0]


def star_polygon(rng, side, n, convex):
    cx, cy = rng.uniform(0.3 * side, 0.7 * side, 2)
    ang = rng.uniform(0, 2 * np.pi, n)
    if convex:
        ang = np.sort(ang)
        r = np.full(n, rng.uniform(0.1 * side, 0.3 * side))
    else:
        ang = np.sort(ang)
        r = rng.uniform(0.05 * side, 0.3 * side, n)  # star-shaped, generally non-convex
    return np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).ravel().tolist()


def stair_polygon(rng, side):
    """Random non-convex rectilinear polygon with integer vertices (a staircase)."""
    k = int(rng.integers(1, 5))
    xs = np.sort(rng.choice(np.arange(0, side + 1), k + 1, replace=False))
    bottom = int(rng.integers(0, side // 2))
    tops = rng.integers(bottom + 1, side + 1, k)
    pts = [(xs[0], bottom), (xs[-1], bottom)]
    for i in range(k - 1, -1, -1):
        pts += [(xs[i + 1], tops[i]), (xs[i], tops[i])]
    return np.asarray(pts, dtype=float).ravel().tolist()


def exact_inside(parts, xs, ys):
    """float64 even-odd point-in-polygon per part, union over parts; also the distance
    of each point to the nearest edge (to skip points that sit on an edge)."""
    inside = np.zeros(xs.shape, bool)
    dist = np.full(xs.shape, np.inf)
    for part in parts:
        p = np.asarray(part, np.float64).reshape(-1, 2)
        q = np.roll(p, -1, 0)
        odd = np.zeros(xs.shape, bool)
        for (x0, y0), (x1, y1) in zip(p, q):
            crosses = (y0 > ys) != (y1 > ys)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_at = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
            odd ^= crosses & (xs < x_at)
            dx, dy = x1 - x0, y1 - y0
            ll = dx * dx + dy * dy
            t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / (ll if ll > 0 else 1.0), 0, 1)
            dist = np.minimum(dist, np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy)))
        inside |= odd
    return inside, dist


def random_instances(rng, side, n):
    polys = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            polys.append([star_polygon(rng, side, int(rng.integers(3, 10)), True)])
        elif kind == 1:
            polys.append([star_polygon(rng, side, int(rng.integers(5, 14)), False)])
        else:  # multi-part instance
            polys.append([star_polygon(rng, side, int(rng.integers(3, 9)), bool(j % 2))
                          for j in range(int(rng.integers(2, 4)))])
    return polys


# ---------------------------------------------- polygons vs pycocotools / oracle
@pytest.mark.parametrize("seed", range(3))
def test_rectilinear_polygons_equal_pycocotools_exactly(seed):
    """Integer-vertex rectilinear polygons (non-convex, multi-part, overlapping parts):
    the full-image target at m = side equals pycocotools' rasterisation."""
    rng = np.random.default_rng(seed)
    side = 48
    polys = [[stair_polygon(rng, side) for _ in range(int(rng.integers(1, 4)))] for _ in range(30)]
    masks = InstanceMasks(polys, (side, side))
    box = torch.tensor([[0.0, 0.0, side, side]]).repeat(len(polys), 1)
    targets = masks.crop_and_resize(box, torch.arange(len(polys)), side)
    for i, parts in enumerate(polys):
        ref = coco_raster(parts, side, side)
        assert ref.any()
        np.testing.assert_array_equal(targets[i].numpy(), ref)


@pytest.mark.parametrize("seed", range(3))
def test_random_polygons_match_exact_point_in_polygon(seed):
    """Convex, non-convex and multi-part instances sampled at pixel centres."""
    rng = np.random.default_rng(100 + seed)
    side = 64
    polys = random_instances(rng, side, 24)
    masks = InstanceMasks(polys, (side, side))
    box = torch.tensor([[0.0, 0.0, side, side]]).repeat(len(polys), 1)
    targets = masks.crop_and_resize(box, torch.arange(len(polys)), side).numpy()
    ys, xs = np.mgrid[0:side, 0:side] + 0.5
    for i, parts in enumerate(polys):
        inside, dist = exact_inside(parts, xs, ys)
        clear = dist > 1e-3
        assert clear.mean() > 0.99
        np.testing.assert_array_equal(targets[i][clear], inside[clear].astype(np.float32))


@pytest.mark.parametrize("seed", range(3))
def test_random_polygons_agree_with_pycocotools_up_to_boundary_pixels(seed):
    """pycocotools quantises vertices to 1/5 pixel; any disagreement must be a pixel whose
    centre lies within a quarter pixel of the polygon outline, and there must be few."""
    rng = np.random.default_rng(200 + seed)
    side = 64
    polys = random_instances(rng, side, 24)
    masks = InstanceMasks(polys, (side, side))
    ys, xs = np.mgrid[0:side, 0:side] + 0.5
    total_diff = total_area = 0
    for i, parts in enumerate(polys):
        ref = coco_raster(parts, side, side)
        got = full_target(masks, i, side).numpy()
        diff = got != ref
        _, dist = exact_inside(parts, xs, ys)
        assert (dist[diff] < 0.25).all()
        total_diff += diff.sum()
        total_area += ref.sum()
    assert total_diff < 0.02 * total_area


def test_half_integer_rectangle_tie_rule():
    """Pixel centres on an edge: the library counts the left and top edges as inside, the right
    and bottom ones as outside, so the pixel count equals the area."""
    side = 16
    masks = InstanceMasks([[[4.5, 2.5, 10.5, 2.5, 10.5, 8.5, 4.5, 8.5]]], (side, side))
    expected = np.zeros((side, side), np.float32)
    expected[2:8, 4:10] = 1
    np.testing.assert_array_equal(full_target(masks, 0, side).numpy(), expected)


def test_sub_box_targets_sample_cell_centres():
    """A box of 2m x m pixels samples every other column centre of the rectangle."""
    masks = InstanceMasks([[[4.0, 2.0, 20.0, 2.0, 20.0, 12.0, 4.0, 12.0]]], (32, 32))
    t = masks.crop_and_resize(torch.tensor([[0.0, 0.0, 32.0, 16.0]]), torch.tensor([0]), 16)[0]
    # cell (i, j) centre: x = 2 j + 1, y = i + 0.5
    expected = torch.zeros(16, 16)
    expected[2:12, 2:10] = 1
    assert torch.equal(t, expected)


# --------------------------------------------------------------------- RLE
def test_rle_instances_equal_pycocotools_decode_exactly():
    rng = np.random.default_rng(5)
    side = 40
    dense = [(rng.random((side, side)) < p).astype(np.uint8) for p in (0.1, 0.5, 0.9)]
    polys = random_instances(rng, side, 3)
    dense += [coco_raster(parts, side, side) for parts in polys]
    rles = [rle_of(m) for m in dense]
    rles[1] = dict(rles[1], counts=rles[1]["counts"].decode("ascii"))  # str counts
    # uncompressed (list counts) RLE, as COCO stores crowd annotations
    flat = dense[2].ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    rles[2] = {"size": [side, side], "counts": ([0] if flat[0] else []) + runs}
    masks = InstanceMasks([None] * len(rles), (side, side), rles=rles)
    box = torch.tensor([[0.0, 0.0, side, side]]).repeat(len(rles), 1)
    targets = masks.crop_and_resize(box, torch.arange(len(rles)), side)
    for i, ref in enumerate(dense):
        np.testing.assert_array_equal(targets[i].numpy(), ref)


def bilinear_at(mask, xs, ys):
    """Bilinear value of a dense mask at continuous image points (pixel i centred at i + 0.5),
    edge values replicated; xs (m,), ys (m,) -> (m, m) indexed [y, x]."""
    h, w = mask.shape
    u = np.clip(np.asarray(xs, np.float64) - 0.5, 0, w - 1)
    v = np.clip(np.asarray(ys, np.float64) - 0.5, 0, h - 1)
    u0 = np.minimum(np.floor(u).astype(int), w - 1)
    v0 = np.minimum(np.floor(v).astype(int), h - 1)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    fu, fv = u - u0, v - v0
    mk = mask.astype(np.float64)
    top = mk[v0][:, u0] * (1 - fu) + mk[v0][:, u1] * fu
    bot = mk[v1][:, u0] * (1 - fu) + mk[v1][:, u1] * fu
    return top * (1 - fv)[:, None] + bot * fv[:, None]


def test_rle_target_is_thresholded_bilinear_sample_at_cell_centres():
    """Cells of 4 x 4 pixels: the centre sits between pixels 4j+1 and 4j+2, so the target is 1
    when at least two of the central 2 x 2 pixels are set (bilinear value >= 0.5)."""
    rng = np.random.default_rng(8)
    side, m = 32, 8
    dense = (rng.random((side, side)) < 0.5).astype(np.uint8)
    masks = InstanceMasks([None], (side, side), rles=[rle_of(dense)])
    t = masks.crop_and_resize(torch.tensor([[0.0, 0.0, side, side]]), torch.tensor([0]), m)[0].numpy()
    centre = dense.reshape(m, 4, m, 4)[:, 1:3, :, 1:3].sum((1, 3))
    np.testing.assert_array_equal(t, (centre >= 2).astype(np.float32))
    assert (centre == 2).any()


@pytest.mark.parametrize("transform", ["none", "flip", "resize", "flip_resize_crop"])
def test_rle_targets_for_arbitrary_boxes(transform):
    rng = np.random.default_rng(9)
    h, w = 30, 44
    dense = [(rng.random((h, w)) < p).astype(np.uint8) for p in (0.3, 0.7)]
    blobs = np.zeros((h, w), np.uint8)
    blobs[5:20, 8:30] = 1
    blobs[10:14, 12:16] = 0
    dense.append(blobs)
    masks = InstanceMasks([None] * 3, (h, w), rles=[rle_of(d) for d in dense])
    # map from current image coordinates back to the original ones
    fx = lambda x: x  # noqa: E731
    fy = lambda y: y  # noqa: E731
    if transform == "flip":
        masks = masks.flip_horizontal()
        fx = lambda x: w - x  # noqa: E731
    elif transform == "resize":
        masks = masks.resize((2 * h + 7, 3 * w))
        fx = lambda x: x / 3.0  # noqa: E731
        fy = lambda y: y * h / (2 * h + 7)  # noqa: E731
    elif transform == "flip_resize_crop":
        masks = masks.flip_horizontal().resize((2 * h, 2 * w)).crop((6.0, 4.0, 70.0, 50.0))
        fx = lambda x: w - (x + 6.0) / 2  # noqa: E731
        fy = lambda y: (y + 4.0) / 2  # noqa: E731
    ch, cw = masks.size
    k, m = 40, 14
    xy = rng.uniform(0, 0.6, (k, 2)) * [cw, ch]
    wh = rng.uniform(0.05, 0.4, (k, 2)) * [cw, ch]
    boxes = np.concatenate([xy, xy + wh], 1)
    idx = rng.integers(0, 3, k)
    t = masks.crop_and_resize(torch.tensor(boxes, dtype=torch.float32), torch.from_numpy(idx), m).numpy()
    b32 = boxes.astype(np.float32).astype(np.float64)
    checked = 0
    for row in range(k):
        c = (np.arange(m) + 0.5) / m
        xs = b32[row, 0] + c * (b32[row, 2] - b32[row, 0])
        ys = b32[row, 1] + c * (b32[row, 3] - b32[row, 1])
        val = bilinear_at(dense[idx[row]], fx(xs), fy(ys))
        clear = np.abs(val - 0.5) > 1e-3
        np.testing.assert_array_equal(t[row][clear], (val[clear] >= 0.5).astype(np.float32))
        checked += clear.sum()
    assert checked > 0.95 * k * m * m


def test_mixed_polygon_and_rle_instances():
    rng = np.random.default_rng(6)
    side = 48
    parts_a = [stair_polygon(rng, side)]
    parts_c = [stair_polygon(rng, side), stair_polygon(rng, side)]
    dense_b = (rng.random((side, side)) < 0.3).astype(np.uint8)
    masks = InstanceMasks([parts_a, None, parts_c], (side, side), rles=[None, rle_of(dense_b), None])
    idx = torch.tensor([2, 1, 0, 1])
    box = torch.tensor([[0.0, 0.0, side, side]]).repeat(4, 1)
    t = masks.crop_and_resize(box, idx, side).numpy()
    refs = [coco_raster(parts_a, side, side), dense_b, coco_raster(parts_c, side, side)]
    for row, i in enumerate(idx.tolist()):
        np.testing.assert_array_equal(t[row], refs[i])


def test_constructor_validation():
    with pytest.raises(ValueError):
        InstanceMasks([None], (10, 10))
    with pytest.raises(ValueError):
        InstanceMasks([[[0, 0, 1, 0, 1, 1]]], (10, 10), rles=[None, None])


# ------------------------------------------ transforms: polygon == RLE version
def _poly_and_rle(rng, side, n):
    """The same instances twice: as integer rectilinear polygons and as their RLE."""
    polys = [[stair_polygon(rng, side) for _ in range(int(rng.integers(1, 3)))] for _ in range(n)]
    rles = [mask_utils.merge(mask_utils.frPyObjects(p, side, side)) for p in polys]
    return InstanceMasks(polys, (side, side)), InstanceMasks([None] * n, (side, side), rles=rles)


def _square_boxes(rng, h, w, m, k):
    """Integer boxes of m x m pixels inside an (h, w) image, plus the full image when square."""
    x = rng.integers(0, w - m + 1, k)
    y = rng.integers(0, h - m + 1, k)
    return torch.tensor(np.stack([x, y, x + m, y + m], 1), dtype=torch.float32)


@pytest.mark.parametrize("ops", [
    ("flip",), ("resize2",), ("flip", "resize2"), ("resize2", "flip"),
    ("resize_h2",), ("flip", "crop"), ("resize2", "crop", "flip"),
    ("vflip",), ("vflip", "resize_h2", "crop"), ("flip", "vflip"),
])
def test_polygon_and_rle_targets_identical_after_transforms(ops):
    rng = np.random.default_rng(sum(map(ord, "".join(ops))))
    side = 40
    poly, rle = _poly_and_rle(rng, side, 6)
    for op in ops:
        if op == "flip":
            poly, rle = poly.flip_horizontal(), rle.flip_horizontal()
        elif op == "vflip":
            poly, rle = poly.flip_vertical(), rle.flip_vertical()
        elif op == "resize2":
            h, w = poly.size
            poly, rle = poly.resize((2 * h, 2 * w)), rle.resize((2 * h, 2 * w))
        elif op == "resize_h2":
            h, w = poly.size
            poly, rle = poly.resize((2 * h, w)), rle.resize((2 * h, w))
        elif op == "crop":
            h, w = poly.size
            box = (3, 5, w - 2, h - 4)
            poly, rle = poly.crop(box), rle.crop(box)
    assert poly.size == rle.size
    h, w = poly.size
    m = 16
    boxes = _square_boxes(rng, h, w, m, 30)
    idx = torch.from_numpy(rng.integers(0, 6, 30))
    tp = poly.crop_and_resize(boxes, idx, m)
    tr = rle.crop_and_resize(boxes, idx, m)
    assert tp.sum() > 0
    assert torch.equal(tp, tr)


def test_flip_matches_flipped_raster():
    rng = np.random.default_rng(11)
    side = 40
    poly, rle = _poly_and_rle(rng, side, 4)
    for i in range(4):
        ref = np.ascontiguousarray(full_target(poly, i, side).numpy()[:, ::-1])
        np.testing.assert_array_equal(full_target(poly.flip_horizontal(), i, side).numpy(), ref)
        np.testing.assert_array_equal(full_target(rle.flip_horizontal(), i, side).numpy(), ref)
        # flipping twice is the identity
        np.testing.assert_array_equal(full_target(poly.flip_horizontal().flip_horizontal(), i, side).numpy(),
                                      full_target(poly, i, side).numpy())
        ref = np.ascontiguousarray(full_target(poly, i, side).numpy()[::-1, :])
        np.testing.assert_array_equal(full_target(poly.flip_vertical(), i, side).numpy(), ref)
        np.testing.assert_array_equal(full_target(rle.flip_vertical(), i, side).numpy(), ref)


def test_resize_by_two_is_nearest_upsampling():
    rng = np.random.default_rng(12)
    side = 24
    poly, rle = _poly_and_rle(rng, side, 3)
    for masks in (poly, rle):
        big = masks.resize((2 * side, 2 * side))
        assert big.size == (2 * side, 2 * side)
        for i in range(3):
            small = full_target(masks, i, side)
            up = small.repeat_interleave(2, 0).repeat_interleave(2, 1)
            assert torch.equal(full_target(big, i, 2 * side), up)


# ---------------------------------------------------------------- indexing
def test_indexing_selects_instances():
    rng = np.random.default_rng(13)
    side = 32
    polys = [[stair_polygon(rng, side)] for _ in range(3)] + [None] + [[stair_polygon(rng, side)]]
    dense = (rng.random((side, side)) < 0.4).astype(np.uint8)
    masks = InstanceMasks(polys, (side, side), rles=[None, None, None, rle_of(dense), None])
    assert len(masks) == 5
    refs = [coco_raster(p, side, side) if p is not None else dense for p in polys]

    def check(sub, chosen):
        assert len(sub) == len(chosen)
        for new, old in enumerate(chosen):
            np.testing.assert_array_equal(full_target(sub, new, side).numpy(), refs[old])

    check(masks[torch.tensor([True, False, True, True, False])], [0, 2, 3])
    check(masks[torch.tensor([4, 0, 3])], [4, 0, 3])
    check(masks[torch.tensor([1])], [1])
    check(masks[1:4], [1, 2, 3])
    check(masks[2], [2])
    check(masks[torch.tensor([3, 1])][torch.tensor([1])], [1])
    empty = masks[torch.zeros(5, dtype=torch.bool)]
    assert len(empty) == 0
    assert empty.crop_and_resize(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 8).shape == (0, 8, 8)
    with pytest.raises(ValueError):
        masks[torch.tensor([1, 1])]


def test_indexing_after_transform_keeps_geometry():
    rng = np.random.default_rng(14)
    side = 32
    poly, rle = _poly_and_rle(rng, side, 4)
    for masks in (poly, rle):
        f = masks.flip_horizontal()
        sub = f[torch.tensor([2, 0])]
        for new, old in ((0, 2), (1, 0)):
            assert torch.equal(full_target(sub, new, side), full_target(f, old, side))


# ------------------------------------------------------------ empty / batched
def test_zero_instances_and_zero_boxes():
    masks = InstanceMasks([], (20, 30))
    assert len(masks) == 0
    out = masks.crop_and_resize(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 28)
    assert out.shape == (0, 28, 28) and out.dtype == torch.float32
    masks = InstanceMasks([[[1, 1, 5, 1, 5, 5]]], (20, 30))
    out = masks.crop_and_resize(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 28)
    assert out.shape == (0, 28, 28)
    # a transformed empty set still works
    e = InstanceMasks([], (20, 30)).resize((40, 60)).flip_horizontal().crop((0, 0, 10, 10))
    assert len(e) == 0 and e.size == (10, 10)


def test_batched_equals_one_at_a_time(monkeypatch):
    rng = np.random.default_rng(15)
    side = 64
    polys = random_instances(rng, side, 40)
    polys[7] = None
    dense = (rng.random((side, side)) < 0.5).astype(np.uint8)
    rles = [None] * 40
    rles[7] = rle_of(dense)
    masks = InstanceMasks(polys, (side, side), rles=rles)
    k, m = 120, 28
    idx = torch.from_numpy(rng.integers(0, 40, k))
    xy = torch.from_numpy(rng.uniform(0, side * 0.7, (k, 2))).float()
    wh = torch.from_numpy(rng.uniform(2, side * 0.6, (k, 2))).float()
    boxes = torch.cat([xy, xy + wh], 1)
    batched = masks.crop_and_resize(boxes, idx, m)
    assert batched.shape == (k, m, m)
    single = torch.stack([masks.crop_and_resize(boxes[i:i + 1], idx[i:i + 1], m)[0] for i in range(k)])
    assert torch.equal(batched, single)
    assert batched.sum() > 0
    # the same with the point-in-polygon test split into many small chunks
    monkeypatch.setattr(mask_targets_module, "_MAX_ELEMS", 3 * m * m * 14)
    assert torch.equal(masks.crop_and_resize(boxes, idx, m), batched)
