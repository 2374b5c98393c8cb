"""Every implementation of mask pasting gives the same masks, bit for bit.

Implementations: the pure-PyTorch path on the CPU (the oracle) and on CUDA, the CUDA kernel of
``maskrcnn._C`` (``csrc/paste_masks``) and that extension's CPU reference op. The CPU op and
the host side of the kernel path (``mask_ops._kernel_counts``: windows packed per launch,
offsets, RLE) run in every test session: the ``cpu_twin`` fixture (``cpu_twin.py``) compiles
the CPU half of the extension with the C++ compiler alone when ``maskrcnn._C`` is not built.
Tests of the CUDA kernel skip, with the reason, when ``maskrcnn._C`` is not built (build it
with ``FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 pip install -e . --no-build-isolation``); CUDA
tests skip without a GPU.
"""
import importlib
import logging
import os
import time
from typing import Iterator, Tuple

import pytest
import torch

from maskrcnn.layers import _ext, mask_ops
from maskrcnn.layers.mask_ops import masks_to_rle, paste_masks_in_image
from maskrcnn.layers.mask_window import box_window
from maskrcnn.layers.rle import compress_counts
from test_mask_ops import coco_encode, random_boxes, random_masks
from cpu_twin import cpu_twin, twin_ops  # noqa: E402,F401  (fixtures: the C++-only build of csrc/)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

Case = Tuple[int, int, torch.Tensor, torch.Tensor]  # height, width, masks (N, 1, M, M), boxes


def extension_ops():
    """``torch.ops.maskrcnn_ops`` from the built extension, or skip the test."""
    try:
        importlib.import_module("maskrcnn._C")
    except ImportError as exc:
        pytest.skip(f"maskrcnn._C is not built ({exc}); build with FORCE_CUDA=1 "
                    "TORCH_CUDA_ARCH_LIST=<arch> pip install -e . --no-build-isolation")
    return torch.ops.maskrcnn_ops


def tie_case(dtype: torch.dtype) -> Case:
    """Integer boxes twice and 4x the mask size, masks full of exact 0.5: every pixel's
    weights are exact binary fractions, so values land exactly on the threshold."""
    m = 8
    masks = torch.full((4, 1, m, m), 0.5)
    masks[1, 0, ::2] = 0.25
    masks[2, 0, :, ::3] = 1.0
    boxes = torch.tensor([[3.0, 5.0, 3.0 + 2 * m, 5.0 + 2 * m], [0.0, 0.0, 4.0 * m, 4.0 * m],
                          [-7.0, 2.0, -7.0 + 2 * m, 2.0 + 4 * m], [10.5, 3.25, 10.5 + m, 3.25 + m]])
    return 40, 37, masks.to(dtype), boxes


def paste_cases() -> Iterator[Case]:
    """Random boxes of every kind (partly outside, tiny, empty, huge, full image), N = 0, 1,
    many, float16 and float32, several mask sizes, plus exact ties."""
    for seed in range(9):
        gen = torch.Generator().manual_seed(1000 + seed)
        height, width = [int(v) for v in torch.randint(1, 150, (2,), generator=gen)]
        n, m = [0, 1, 40][seed % 3], [28, 14, 5][(seed // 3) % 3]
        dtype = torch.float16 if seed % 2 else torch.float32
        yield height, width, random_masks(gen, n, m, dtype), random_boxes(gen, n, height, width)
    for seed, (height, width) in enumerate([(1, 1), (1, 61), (47, 1)]):  # 1x1, 1xN, Nx1 images
        gen = torch.Generator().manual_seed(2000 + seed)
        yield height, width, random_masks(gen, 12, 7, torch.float32), random_boxes(gen, 12, height, width)
    yield tie_case(torch.float32)
    yield tie_case(torch.float16)


CASES = list(paste_cases())
IDS = [f"{c[0]}x{c[1]}-n{c[2].shape[0]}-m{c[2].shape[-1]}-{str(c[2].dtype)[6:]}" for c in CASES]


def packed_windows(pasted: torch.Tensor, boxes: torch.Tensor):
    """The windows of ``pasted`` masks, column-major, one after the other, and the windows."""
    height, width = pasted.shape[-2:]
    wins = [box_window(b, height, width) or (0, 0, 0, 0) for b in boxes.double().tolist()]
    parts = [pasted[i, y0:y1, x0:x1].t().reshape(-1) for i, (y0, y1, x0, x1) in enumerate(wins)]
    return (torch.cat(parts + [torch.zeros(0, dtype=torch.bool)]),
            torch.tensor(wins, dtype=torch.int64).reshape(-1, 4))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_extension_cpu_reference_matches_torch_path(case, twin_ops):
    """The per-pixel code of the CUDA kernel, compiled for the host, equals the PyTorch path."""
    height, width, masks, boxes = case
    expected = paste_masks_in_image(masks, boxes, (height, width), impl="torch")
    got = twin_ops.paste_masks(masks[:, 0], boxes, height, width, 0.5)
    assert got.dtype == torch.bool and torch.equal(got, expected)
    packed, windows = packed_windows(expected, boxes)
    assert torch.equal(twin_ops.paste_masks_packed(masks[:, 0], boxes, windows, 0.5), packed)


@pytest.mark.parametrize("pack_bytes", [mask_ops.PACK_BYTES, 500, 1])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_counts_on_cpu_match_pycocotools(case, pack_bytes, twin_ops, monkeypatch):
    """The host side of the kernel path (windows packed per launch, offsets, runs found in the
    packed copy) through the CPU op: the RLEs pycocotools gives for the PyTorch path's masks.
    A small PACK_BYTES splits the windows over many launches (1: one window per launch)."""
    height, width, masks, boxes = case
    monkeypatch.setattr(mask_ops, "PACK_BYTES", pack_bytes)
    expected = [coco_encode(m)["counts"].decode()
                for m in paste_masks_in_image(masks, boxes, (height, width), impl="torch")]
    wins = [box_window(b, height, width) for b in boxes.double().tolist()]
    counts = mask_ops._kernel_counts(masks[:, 0], boxes, wins, height, width, 0.5)
    assert [compress_counts(c, height, width)["counts"] for c in counts] == expected


def test_loader_reports_a_library_with_the_ops_once(twin_ops, caplog):
    """A library registering both ops is used: one INFO line naming it, whatever the calls."""
    _ext._reset()
    with caplog.at_level(logging.INFO, logger="maskrcnn.layers._ext"):
        assert _ext.paste_ops() is twin_ops and _ext.load_status() == (True, "")
        assert _ext.paste_ops() is twin_ops
    assert [r.getMessage() for r in caplog.records] == ["mask pasting: CUDA kernel from maskrcnn._C"]


@requires_cuda
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch_path_on_cuda_matches_cpu(case):
    height, width, masks, boxes = case
    expected = paste_masks_in_image(masks, boxes, (height, width), impl="torch")
    got = paste_masks_in_image(masks.cuda(), boxes.cuda(), (height, width), impl="torch")
    assert got.is_cuda and torch.equal(got.cpu(), expected)
    rles = masks_to_rle(masks.cuda(), boxes, (height, width), impl="torch")
    assert [r["counts"] for r in rles] == [coco_encode(m)["counts"].decode() for m in expected]


@requires_cuda
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_matches_torch_path(case):
    extension_ops()
    height, width, masks, boxes = case
    expected = paste_masks_in_image(masks, boxes, (height, width), impl="torch")
    got = paste_masks_in_image(masks.cuda(), boxes.cuda(), (height, width), impl="cuda")
    assert got.is_cuda and got.dtype == torch.bool and got.shape == expected.shape
    assert torch.equal(got.cpu(), expected)


@requires_cuda
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_kernel_rle_matches_pycocotools(case, monkeypatch):
    extension_ops()
    height, width, masks, boxes = case
    expected = [coco_encode(m)["counts"].decode()
                for m in paste_masks_in_image(masks, boxes, (height, width), impl="torch")]
    rles = masks_to_rle(masks.cuda(), boxes.cuda(), (height, width), impl="cuda")
    assert [r["counts"] for r in rles] == expected
    monkeypatch.setattr(mask_ops, "PACK_BYTES", 500)  # many launches, windows split across them
    rles = masks_to_rle(masks.cuda(), boxes, (height, width), impl="cuda")
    assert [r["counts"] for r in rles] == expected


@requires_cuda
def test_kernel_large_image_matches_torch_path():
    """100 detections on 4000 x 3000, boxes of every size, float16: identical masks."""
    extension_ops()
    gen = torch.Generator().manual_seed(7)
    height, width = 4000, 3000
    masks = random_masks(gen, 100, 28, torch.float16).cuda()
    boxes = random_boxes(gen, 100, height, width).cuda()
    got = paste_masks_in_image(masks, boxes, (height, width), impl="cuda")
    expected = paste_masks_in_image(masks, boxes, (height, width), impl="torch")
    assert torch.equal(got, expected)


@requires_cuda
def test_auto_uses_kernel_when_built_and_logs_once(caplog):
    ops = extension_ops()
    assert ops is not None
    _ext._reset()
    height, width, masks, boxes = CASES[2]
    with caplog.at_level(logging.INFO, logger="maskrcnn.layers._ext"):
        a = paste_masks_in_image(masks.cuda(), boxes.cuda(), (height, width))
        b = paste_masks_in_image(masks.cuda(), boxes.cuda(), (height, width))
    assert torch.equal(a, b)
    assert [r.getMessage() for r in caplog.records] == ["mask pasting: CUDA kernel from maskrcnn._C"]


def test_impl_argument_is_checked():
    masks, boxes = torch.rand(2, 1, 7, 7), torch.tensor([[1.0, 1.0, 5.0, 6.0]] * 2)
    with pytest.raises(ValueError, match="impl must be one of"):
        paste_masks_in_image(masks, boxes, (9, 9), impl="triton")
    with pytest.raises(ValueError, match="CUDA device"):
        paste_masks_in_image(masks, boxes, (9, 9), impl="cuda")
    with pytest.raises(ValueError, match="CUDA device"):
        masks_to_rle(masks, boxes, (9, 9), impl="cuda")
    assert torch.equal(paste_masks_in_image(masks, boxes, (9, 9), impl="torch"),
                       paste_masks_in_image(masks, boxes, (9, 9)))


@pytest.mark.parametrize("blocks_by_existing", [True, False])
def test_a_stale_build_lock_is_removed_only_where_it_blocks(tmp_path, monkeypatch, blocks_by_existing):
    """torch's extension build before 2.14 waits forever while a ``lock`` file exists (left by a
    killed build, or by torch 2.14, whose advisory lock file stays): the twin's build folder is
    per torch version, and there a lock older than ``STALE_LOCK_S`` is dropped (with a warning),
    a fresh one kept. With the advisory lock, the file is left alone."""
    import cpu_twin as twin

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(twin, "_lock_blocks_by_existing", lambda: blocks_by_existing)
    folder = twin._build_directory()
    assert folder.startswith(str(tmp_path)) and torch.__version__ in folder
    lock = os.path.join(folder, "lock")
    open(lock, "w").close()
    twin._build_directory()
    assert os.path.exists(lock)  # a build may be running now
    old = time.time() - twin.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    if blocks_by_existing:
        with pytest.warns(UserWarning, match="killed"):
            twin._build_directory()
    else:
        twin._build_directory()
    assert os.path.exists(lock) != blocks_by_existing
