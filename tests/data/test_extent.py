"""Where a segmentation lies: polygon parts clipped to the image, RLE extents (pycocotools)."""
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from maskrcnn.data.datasets.extent import clip_polygon, overlaps, rle_extent, union_extent


def _area(part):
    xs, ys = part[0::2], part[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def _raster(part, h, w):
    rle = mask_utils.frPyObjects([part], h, w)
    return mask_utils.decode(mask_utils.merge(rle))


def test_part_inside_is_kept_as_it_is():
    part = [1.5, 2.0, 9.0, 2.0, 9.0, 7.25]
    out, extent, clipped = clip_polygon(part, 10, 8)
    assert out == part and extent == (1.5, 2.0, 9.0, 7.25) and not clipped


@pytest.mark.parametrize("part,expected_area,expected_extent", [
    ([-5, -5, 5, -5, 5, 5, -5, 5], 25, (0, 0, 5, 5)),  # across the top-left corner
    ([-10, 10, 10, -10, 10, 10], 100, (0, 0, 10, 10)),  # triangle of area 200 cut along both axes
    ([-100, -100, 100, -100, 100, 100, -100, 100], 60 * 40, (0, 0, 60, 40)),  # covers the image
    ([55, 35, 70, 35, 70, 50, 55, 50], 25, (55, 35, 60, 40)),  # across the bottom-right corner
])
def test_part_across_the_border_is_clipped_with_its_area_inside(part, expected_area, expected_extent):
    out, extent, clipped = clip_polygon(part, 60, 40)
    assert clipped and extent == pytest.approx(expected_extent)
    assert _area(out) == pytest.approx(expected_area)
    # the pixels inside the image are those of the unclipped polygon
    assert np.array_equal(_raster(out, 40, 60), _raster(part, 40, 60))


@pytest.mark.parametrize("part,crossed", [
    ([100, 100, 110, 100, 110, 110], True),  # wholly outside
    ([-20, 5, -10, 5, -10, 30], True),  # left of the image
    ([-5, -5, 10, -5, 20, -1], True),  # above it, crossing x = 0 only
    ([1, 1, 5, 1, 9, 1], False),  # flat, inside
    ([3, 1, 3, 5, 3, 9], False),  # flat, vertical
    ([-5, 10, 5, 10, 15, 10], True),  # flat, crossing: no area left
])
def test_part_without_area_in_the_image_is_none(part, crossed):
    assert clip_polygon(part, 60, 40) == (None, None, crossed)


def test_extents_overlap_only_with_an_area():
    assert overlaps((0, 0, 5, 5), (4, 4, 9, 9))
    assert not overlaps((0, 0, 5, 5), (5, 0, 9, 5))  # touching edges
    assert not overlaps((0, 0, 5, 5), (6, 6, 9, 9))
    assert union_extent([(1, 2, 3, 4), (0, 3, 2, 8)]) == (0, 2, 3, 8)


def test_rle_extent_compressed_uncompressed_and_empty():
    m = np.zeros((10, 12), np.uint8, order="F")
    m[2:5, 3:7] = 1
    rle = mask_utils.encode(m)
    assert rle_extent({"size": [10, 12], "counts": rle["counts"].decode()}, 10, 12) == (3, 2, 7, 5)
    assert rle_extent(rle, 10, 12) == (3, 2, 7, 5)
    counts = [22, 3, 7, 3, 7, 3, 7, 3, 65]  # column-major runs of 3 (y 2..4) in columns x 2..5
    assert rle_extent({"size": [10, 12], "counts": counts}, 10, 12) == (2, 2, 6, 5)
    assert rle_extent({"size": [10, 12], "counts": [120]}, 10, 12) is None
    with pytest.raises(ValueError, match="summing to height \\* width = 120"):
        rle_extent({"size": [10, 12], "counts": [5, 10]}, 10, 12)
    with pytest.raises(ValueError, match="counts is a dict"):
        rle_extent({"size": [10, 12], "counts": {}}, 10, 12)
