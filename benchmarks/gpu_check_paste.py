"""``benchmarks/gpu_check.py`` (a): the CUDA paste kernel, built if missing, against the PyTorch path.

Exactness: :func:`exactness_cases` (random boxes partly outside, tiny, huge and empty boxes,
integer boxes with exact ties between taps, masks full of exact 0.5, float16 masks, N = 0 and
1x1 masks) pasted by the kernel must equal the pure-PyTorch path on the CPU, the oracle, bit for
bit (full masks, and RLE where pycocotools is installed). Speed and memory: the methods of
``bench_mask_paste.py`` on 100 masks at 4000x3000.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any, Dict, Iterator, Tuple

import torch

import bench_mask_paste as bmp
from maskrcnn.layers import _ext
from maskrcnn.layers.ext_build import build_extension as build
from maskrcnn.layers.ext_build import random_paste_cases
from maskrcnn.layers.mask_ops import masks_to_rle, paste_masks_in_image

CASE = "100 x 4000x3000"
DRY_CASE = (6, 90, 120)
has_pycocotools = bmp.has_pycocotools


def build_extension() -> Dict[str, Any]:
    """Build ``maskrcnn._C`` in place when it is missing (before anything loads ``_ext``)."""
    if importlib.util.find_spec("maskrcnn._C") is not None:
        return {"built_now": False}
    major, minor = torch.cuda.get_device_capability()
    result = build(arch=f"{major}.{minor}", max_jobs=min(8, os.cpu_count() or 1), capture_output=True)
    importlib.invalidate_caches()
    out = {"built_now": True, "build_seconds": round(result.seconds, 1), "arch": result.arch,
           "build_returncode": result.returncode}
    if result.returncode != 0 or importlib.util.find_spec("maskrcnn._C") is None:
        out["build_log_tail"] = result.log[-3000:]
    return out


def exactness_cases(seed: int = 0) -> Iterator[Tuple[str, torch.Tensor, torch.Tensor, int, int]]:
    """``(name, masks (N, M, M), boxes (N, 4), height, width)``: random and edge cases."""
    gen = torch.Generator().manual_seed(seed)
    yield from random_paste_cases(gen, trials=40, max_side=160)
    m = 8
    ties = torch.full((4, m, m), 0.5)
    ties[1, ::2] = 0.25
    ties[2, :, ::3] = 1.0
    tie_boxes = torch.tensor([[3.0, 5.0, 19.0, 21.0], [0.0, 0.0, 32.0, 32.0], [-7.0, 2.0, 9.0, 34.0],
                              [10.5, 3.25, 18.5, 11.25]])
    yield "exact ties", ties, tie_boxes, 40, 37
    yield "no detections", torch.zeros(0, 28, 28), torch.zeros(0, 4), 30, 40
    yield "outside, empty and whole-image boxes", torch.rand(4, 28, 28, generator=gen), torch.tensor(
        [[-50.0, -50.0, -10.0, -10.0], [5.0, 5.0, 5.0, 20.0], [0.0, 0.0, 40.0, 30.0], [-100.0, -100.0, 500.0, 500.0]]), 30, 40


def check_exact(device: str) -> Dict[str, Any]:
    """Kernel (``impl="cuda"``) against the PyTorch path on the CPU, per case; mismatches named."""
    compared, mismatches = 0, []
    rle = has_pycocotools()
    for name, masks, boxes, height, width in exactness_cases():
        expected = paste_masks_in_image(masks, boxes, (height, width), impl="torch")
        got = paste_masks_in_image(masks.to(device), boxes.to(device), (height, width), impl="cuda").cpu()
        same = torch.equal(got, expected)
        if rle:
            same &= masks_to_rle(masks.to(device), boxes.to(device), (height, width), impl="cuda") == \
                masks_to_rle(masks, boxes, (height, width), impl="torch")
        compared += 1
        if not same:
            mismatches.append(name)
    return {"cases": compared, "mismatches": mismatches, "rle_compared": rle}


def run(device: str, repeats: int, dry_run: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    table = []
    if device == "cuda":
        out["extension"] = build_extension()
    loaded, reason = _ext.load_status()
    out["kernel_loaded"], out["kernel_reason"] = loaded, reason
    if device != "cuda":
        note = "kernel parts skipped: no CUDA (dry run); the PyTorch paths and peers run at a tiny size"
        print(note, flush=True)
        out["kernel_skipped"] = note
    elif not loaded:
        out["kernel_skipped"] = f"kernel parts skipped: maskrcnn._C not loaded ({reason})"
        print(out["kernel_skipped"], flush=True)
    else:
        exact = check_exact(device)
        out["exactness"] = exact
        table.append(("kernel == PyTorch path (cases)", f"{exact['cases'] - len(exact['mismatches'])}/{exact['cases']}",
                      "all, bit for bit"))
    if not has_pycocotools():
        out["rle_skipped"] = "RLE methods left out: pycocotools is not installed"
        print(out["rle_skipped"], flush=True)
    case = DRY_CASE if dry_run else CASE
    times = bmp.time_methods(case, device, repeats)
    memory = {name: bmp.memory_worker(case, name, device) for name in times}
    if device == "cuda":
        torch.cuda.empty_cache()
    out.update(case=list(bmp.case_shape(case)), time_s=times, memory_mb=memory)
    for name, t in times.items():
        table.append((f"{name}: time s / extra MB", f"{t:.4g} / {memory[name]['extra_mb']:.4g}", ""))
    if "ours kernel paste" in times:
        speedup = times["grid_sample paste"] / times["ours kernel paste"]
        extra = memory["ours kernel paste"]["beyond_output_mb"]
        out.update(speedup_vs_grid_sample=speedup, kernel_extra_beyond_output_mb=extra,
                   speedup_vs_torchvision=times["tv paste+thr"] / times["ours kernel paste"])
        table.append(("kernel speed-up vs grid_sample", speedup, ">= 10"))
        table.append(("kernel extra MB beyond its output", extra, "<= 256"))
        out["peak_cuda_mb"] = max(m["extra_mb"] for m in memory.values())
    out["table"] = table
    return out
