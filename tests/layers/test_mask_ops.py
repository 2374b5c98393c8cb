"""Tests of the mask pasting rule and of the window-only RLE encoder."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks_in_image

from maskrcnn.layers.mask_ops import masks_to_rle, paste_masks_in_image

REPO_ROOT = Path(__file__).resolve().parents[2]


def reference_paste(mask: torch.Tensor, box, height: int, width: int) -> torch.Tensor:
    """Oracle: grid_sample over the full image, float64; returns (H, W) values."""
    x1, y1, x2, y2 = [float(v) for v in box]
    if not np.all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        return torch.zeros((height, width), dtype=torch.float64)
    gx = 2 * (torch.arange(width, dtype=torch.float64) + 0.5 - x1) / (x2 - x1) - 1
    gy = 2 * (torch.arange(height, dtype=torch.float64) + 0.5 - y1) / (y2 - y1) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]  # (1, H, W, 2)
    src = mask.reshape(1, 1, *mask.shape[-2:]).double()
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0, 0]


def random_boxes(gen: torch.Generator, n: int, height: int, width: int) -> torch.Tensor:
    """Boxes of many kinds: inside, partly outside, tiny, empty, huge, full image."""
    kinds = torch.randint(0, 6, (n,), generator=gen)
    cx = torch.rand(n, generator=gen) * width * 1.4 - 0.2 * width
    cy = torch.rand(n, generator=gen) * height * 1.4 - 0.2 * height
    bw = torch.rand(n, generator=gen) * width * 0.6
    bh = torch.rand(n, generator=gen) * height * 0.6
    bw = torch.where(kinds == 1, torch.rand(n, generator=gen) * 0.9, bw)  # < 1 px
    bh = torch.where(kinds == 1, torch.rand(n, generator=gen) * 0.9, bh)
    bw = torch.where(kinds == 2, torch.zeros(n), bw)  # empty
    bw = torch.where(kinds == 3, width * (1 + torch.rand(n, generator=gen)), bw)  # huge
    bh = torch.where(kinds == 3, height * (1 + torch.rand(n, generator=gen)), bh)
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    full = torch.tensor([0.0, 0.0, float(width), float(height)])
    boxes[kinds == 4] = full
    return boxes


def random_masks(gen: torch.Generator, n: int, m: int, dtype: torch.dtype) -> torch.Tensor:
    masks = torch.rand(n, 1, m, m, generator=gen)
    kinds = torch.randint(0, 4, (n,), generator=gen)
    masks[kinds == 0] = 0.0
    masks[kinds == 1] = 1.0
    return masks.to(dtype)


def coco_encode(mask: torch.Tensor) -> dict:
    return mask_util.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))


def check_rle_against_pycocotools(gen: torch.Generator, height: int, width: int, n: int, m: int,
                                  dtype: torch.dtype) -> None:
    boxes = random_boxes(gen, n, height, width)
    masks = random_masks(gen, n, m, dtype)
    pasted = paste_masks_in_image(masks, boxes, (height, width))
    rles = masks_to_rle(masks, boxes, (height, width))
    assert pasted.shape == (n, height, width) and pasted.dtype == torch.bool
    assert len(rles) == n
    for i in range(n):
        expected = coco_encode(pasted[i])
        assert rles[i]["size"] == [height, width]
        assert rles[i]["counts"] == expected["counts"].decode("utf-8")
    json.dumps(rles)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rle_matches_pycocotools_encode(seed, dtype):
    """Random image sizes, 1 to 25 masks of several sizes (no mask at all: see
    test_custom_threshold_and_validation)."""
    gen = torch.Generator().manual_seed(seed)
    height, width = [int(v) for v in torch.randint(1, 90, (2,), generator=gen)]
    check_rle_against_pycocotools(gen, height, width, [1, 3, 25][seed % 3], [28, 14, 5][seed % 3], dtype)


@pytest.mark.parametrize("height,width", [(1, 1), (1, 2), (2, 1), (1, 73), (73, 1), (2, 57)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rle_matches_pycocotools_on_thin_images(height, width, dtype):
    """1x1, 1xN and Nx1 images: windows of one row or one column, runs that cross every image
    column (height 1), a window spanning the full height."""
    gen = torch.Generator().manual_seed(height * 1000 + width)
    check_rle_against_pycocotools(gen, height, width, 30, 7, dtype)
    masks = torch.ones(3, 1, 28, 28, dtype=dtype)  # full boxes: every pixel set
    boxes = torch.tensor([[0.0, 0.0, width, height], [-5.0, -5.0, width + 5.0, height + 5.0],
                          [0.2, 0.1, 0.8, 0.9]])
    pasted = paste_masks_in_image(masks, boxes, (height, width))
    assert pasted[0].all() and pasted[1].all()
    assert [r["counts"] for r in masks_to_rle(masks, boxes, (height, width))] == \
        [coco_encode(m)["counts"].decode("utf-8") for m in pasted]


def test_rle_full_height_and_edge_cases():
    height, width = 40, 30
    boxes = torch.tensor([[0.0, 0.0, 30.0, 40.0], [-50.0, -50.0, 100.0, 100.0],
                          [3.0, 0.0, 9.0, 40.0], [29.6, 39.6, 29.9, 39.9],
                          [5.0, 5.0, 5.0, 20.0], [float("nan"), 0.0, 3.0, 3.0],
                          [0.0, 0.0, float("inf"), 3.0], [10.0, 10.0, 4.0, 20.0],
                          [100.0, 100.0, 120.0, 130.0], [2.0, 3.0, 8.0, 9.0]])
    masks = torch.ones(len(boxes), 28, 28)
    pasted = paste_masks_in_image(masks, boxes, (height, width))
    assert pasted[0].all() and pasted[1].all() and pasted[2][:, 3:9].all()
    assert not pasted[4:9].any()
    for rle, mask in zip(masks_to_rle(masks, boxes, (height, width)), pasted):
        assert rle["counts"] == coco_encode(mask)["counts"].decode("utf-8")
    for masks in (torch.zeros(len(boxes), 1, 7, 7), torch.rand(len(boxes), 1, 7, 7).half()):
        pasted = paste_masks_in_image(masks, boxes, (height, width))
        for rle, mask in zip(masks_to_rle(masks, boxes, (height, width)), pasted):
            assert rle["counts"] == coco_encode(mask)["counts"].decode("utf-8")


@pytest.mark.parametrize("seed", range(4))
def test_paste_matches_grid_sample_oracle(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    height, width = 37 + seed * 11, 52 - seed * 7
    n, m = 30, [28, 7, 14, 3][seed]
    boxes = random_boxes(gen, n, height, width)
    masks = random_masks(gen, n, m, torch.float16 if seed % 2 else torch.float32)
    pasted = paste_masks_in_image(masks, boxes, (height, width))
    for i in range(n):
        ref = reference_paste(masks[i].float(), boxes[i], height, width)
        near_threshold = (ref - 0.5).abs() < 1e-5  # float rounding may go either way
        diff = (pasted[i] != (ref >= 0.5)) & ~near_threshold
        assert not diff.any(), f"box {boxes[i].tolist()}: {int(diff.sum())} pixels differ"


def test_custom_threshold_and_validation():
    masks = torch.full((1, 1, 4, 4), 0.7)
    box = torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    assert paste_masks_in_image(masks, box, (6, 6), threshold=0.7)[0, 1:5, 1:5].all()
    assert not paste_masks_in_image(masks, box, (6, 6), threshold=0.71).any()
    with pytest.raises(ValueError):
        paste_masks_in_image(masks, box, (6, 6), threshold=0.3)
    with pytest.raises(ValueError):
        paste_masks_in_image(masks, torch.zeros(2, 4), (6, 6))
    assert paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (5, 7)).shape == (0, 5, 7)
    assert masks_to_rle(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 7)) == []


@pytest.mark.parametrize("m", [28, 14])
def test_integer_box_all_ones_gives_rectangle_and_agrees_with_torchvision(m):
    """All-ones mask, integer box: exactly the rectangle. torchvision's paste (legacy
    "+1" rule, 1-px mask padding) agrees everywhere except within 1 px of the border."""
    height, width = 90, 100
    gen = torch.Generator().manual_seed(m)
    for _ in range(30):
        # (0.5 + 0.5 M / bw)(0.5 + 0.5 M / bh) >= 0.5 keeps the corners (see mask_ops docs)
        bw, bh = [int(v) for v in torch.randint(1, int(2.3 * m), (2,), generator=gen)]
        x1 = int(torch.randint(-5, width - 3, (1,), generator=gen))
        y1 = int(torch.randint(-5, height - 3, (1,), generator=gen))
        rect = torch.zeros(height, width, dtype=torch.bool)
        rect[max(y1, 0):y1 + bh, max(x1, 0):x1 + bw] = True
        box = torch.tensor([[x1, y1, x1 + bw, y1 + bh]], dtype=torch.float32)
        pasted = paste_masks_in_image(torch.ones(1, 1, m, m), box, (height, width))[0]
        assert torch.equal(pasted, rect)
        tv = tv_paste_masks_in_image(torch.ones(1, 1, m, m), box, (height, width))[0, 0] >= 0.5
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        border = (((xs - x1).abs() <= 1) | ((xs - (x1 + bw - 1)).abs() <= 1)
                  | ((ys - y1).abs() <= 1) | ((ys - (y1 + bh - 1)).abs() <= 1))
        assert not ((tv != pasted) & ~border).any()


def test_large_box_all_ones_stays_inside_rectangle():
    """Boxes much larger than M: never outside the rectangle; only corner triangles drop."""
    box = torch.tensor([[10.0, 20.0, 410.0, 320.0]])
    pasted = paste_masks_in_image(torch.ones(1, 1, 28, 28), box, (400, 500))[0]
    rect = torch.zeros(400, 500, dtype=torch.bool)
    rect[20:320, 10:410] = True
    assert not (pasted & ~rect).any()
    assert pasted[20:320, 30:390].all() and pasted[40:300, 10:410].all()
    assert (rect & ~pasted).sum() < 0.01 * rect.sum()


MEMORY_LIMIT = 32 * 2 ** 20  # bytes; one float32 4000 x 3000 buffer is 48 MB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resets the peak RSS through /proc")
def test_masks_to_rle_memory_bounded():
    """100 masks over all of a 4000x3000 image through masks_to_rle: the peak RSS grows by less
    than 32 MB over a baseline taken after a warm-up on a small image (so that the one-time
    allocations of the first call are not counted, but nothing of the size of the image is
    either). About 14 MB here, mostly the 8.7 MB of RLE strings of these noisy masks; a
    full-image float buffer (48 MB), even one at a time, fails it, and so would holding the
    uncompressed counts of all masks (~100 MB) until the end."""
    script = textwrap.dedent("""
        import time, torch
        from maskrcnn.layers.mask_ops import masks_to_rle
        torch.set_num_threads(1)  # timing must not depend on OpenMP on a shared CI machine
        torch.manual_seed(0)
        masks = torch.rand(100, 1, 28, 28)
        boxes = torch.tensor([[0.0, 0.0, 3000.0, 4000.0]]).repeat(100, 1)
        boxes[1::2] += torch.tensor([-17.3, -3.1, 29.2, 5.5])
        masks_to_rle(masks[:2], torch.tensor([[1.0, 2, 40, 50], [-3, -2, 30, 70]]), (64, 48))  # warm-up

        def peak():
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak RSS (VmHWM) restarts from the current RSS
        before = peak()
        start = time.time()
        rles = masks_to_rle(masks, boxes, (4000, 3000))
        seconds = time.time() - start
        assert len(rles) == 100 and all(r["size"] == [4000, 3000] for r in rles)
        print(peak() - before, seconds)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr
    extra_bytes, seconds = [float(v) for v in out.stdout.split()]
    assert extra_bytes < MEMORY_LIMIT, f"peak RSS grew by {extra_bytes / 2**20:.1f} MB"
    assert seconds < 60  # ~2 s on the 2-core development machine; generous for shared CI
