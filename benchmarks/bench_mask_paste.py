"""Mask pasting and RLE encoding, side by side with peers: time and peak extra memory.

    python benchmarks/bench_mask_paste.py --device cpu --repeats 5
    python benchmarks/bench_mask_paste.py --device cuda --repeats 10

Cases: 100 detections on a 4000x3000 image, 20 detections on 800x1333 (28x28 float32 masks,
smooth blobs; boxes of 3-50 % of the image side, some partly outside).

Methods (all threshold at 0.5):

* ``ours paste`` / ``ours rle``: :func:`paste_masks_in_image` / :func:`masks_to_rle`, the
  pure-PyTorch path (``impl="torch"``); on CUDA also ``ours kernel paste`` / ``ours kernel rle``
  (``impl="cuda"``, needs ``maskrcnn._C``).
* ``tv paste+thr``: ``torchvision.models.detection.roi_heads.paste_masks_in_image`` then ``>=``;
  ``tv paste+thr+rle``: the same, then ``pycocotools.mask.encode`` of each mask as in
  torchvision's reference COCO evaluation (the peer of ``ours rle``). torchvision returns
  float ``(N, 1, H, W)``; it is called on chunks of detections whose float output fits the
  same 1 GB budget as the grid_sample baseline (100 full 4000x3000 float masks are 4.8 GB).
* ``grid_sample paste``: detectron2/mmdetection style, ``F.grid_sample`` of the masks onto the
  full image grid, in chunks of detections sized to a 1 GB float budget
  (``ceil(N * H * W * 4 / 1 GB)`` chunks, as detectron2's ``paste_masks_in_image``).

Time: median over ``--repeats`` runs, methods interleaved in one process (one warm-up run each).
Peak extra memory: on the CPU, the peak RSS of a fresh process per method, reset after the
inputs are made (``/proc/self/clear_refs``), minus the RSS at that point; on CUDA,
``torch.cuda.max_memory_allocated`` after a reset, minus what was allocated before. "beyond
output" subtracts the result itself (an ``(N, H, W)`` bool mask is 1.2 GB in the large case).

The RLE methods need pycocotools; where it is not installed they are left out (the pasting
methods need nothing but torch and torchvision). ``benchmarks/gpu_check.py`` reuses this file.

Every method runs with the same ``--threads`` torch CPU threads. On a machine shared with other
jobs, OpenMP's spin-waiting makes multi-threaded timings erratic (seconds instead of tenths for
the many small ops of the window path): use ``--threads 1`` or ``OMP_WAIT_POLICY=passive`` there.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from maskrcnn.layers import _ext  # noqa: E402
from maskrcnn.layers.mask_ops import masks_to_rle, paste_masks_in_image  # noqa: E402

CASES: Dict[str, Tuple[int, int, int]] = {"100 x 4000x3000": (100, 4000, 3000),
                                          "20 x 800x1333": (20, 800, 1333)}
BUDGET = 2 ** 30  # bytes of float output per chunk for the full-image peers
MB = 2 ** 20
Case = Union[str, Tuple[int, int, int]]  # a name of CASES, or (detections, height, width)


def case_shape(case: Case) -> Tuple[int, int, int]:
    return CASES[case] if isinstance(case, str) else case


def has_pycocotools() -> bool:
    return importlib.util.find_spec("pycocotools") is not None


def make_inputs(n: int, height: int, width: int, device: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Deterministic ``(N, 1, 28, 28)`` blob probabilities and ``(N, 4)`` boxes."""
    gen = torch.Generator().manual_seed(0)
    m = 28
    v, u = torch.meshgrid(torch.linspace(-1, 1, m), torch.linspace(-1, 1, m), indexing="ij")
    centre = (torch.rand(n, 2, 1, 1, generator=gen) - 0.5) * 0.4
    radius = 0.5 + 0.4 * torch.rand(n, 2, 1, 1, generator=gen)
    r = (((u - centre[:, 0]) / radius[:, 0]) ** 2 + ((v - centre[:, 1]) / radius[:, 1]) ** 2).sqrt()
    noise = F.avg_pool2d(torch.randn(n, 1, m, m, generator=gen), 5, 1, 2)[:, 0]
    masks = torch.sigmoid(8 * (1 - r) + 4 * noise)[:, None]
    size = torch.rand(n, 2, generator=gen) * 0.47 + 0.03
    xy = torch.rand(n, 2, generator=gen)
    wh = size * torch.tensor([width, height])
    c = xy * torch.tensor([width, height])
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
    return masks.to(device), boxes.to(device)


def chunks(n: int, height: int, width: int) -> List[slice]:
    count = max(1, math.ceil(n * height * width * 4 / BUDGET))
    step = max(1, math.ceil(n / count))
    return [slice(s, s + step) for s in range(0, n, step)]


def tv_paste_thr(masks, boxes, shape):
    out = torch.empty((masks.shape[0], *shape), dtype=torch.bool, device=masks.device)
    for sl in chunks(masks.shape[0], *shape):
        out[sl] = tv_paste(masks[sl], boxes[sl], shape)[:, 0] >= 0.5
    return out


def tv_paste_thr_rle(masks, boxes, shape):
    from pycocotools import mask as mask_util

    rles = []
    for sl in chunks(masks.shape[0], *shape):
        binary = (tv_paste(masks[sl], boxes[sl], shape)[:, 0] >= 0.5).cpu().numpy()
        rles += [mask_util.encode(np.array(b[:, :, None], dtype=np.uint8, order="F"))[0]
                 for b in binary]
    return rles


def grid_sample_paste(masks, boxes, shape):
    height, width = shape
    out = torch.empty((masks.shape[0], height, width), dtype=torch.bool, device=masks.device)
    img_y = torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5
    img_x = torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5
    for sl in chunks(masks.shape[0], height, width):
        x0, y0, x1, y1 = torch.split(boxes[sl].float(), 1, dim=1)  # each (n, 1)
        gy = (img_y - y0) / (y1 - y0) * 2 - 1  # (n, H)
        gx = (img_x - x0) / (x1 - x0) * 2 - 1  # (n, W)
        n = gx.shape[0]
        grid = torch.stack([gx[:, None, :].expand(n, height, width),
                            gy[:, :, None].expand(n, height, width)], dim=3)
        out[sl] = F.grid_sample(masks[sl].float(), grid, align_corners=False)[:, 0] >= 0.5
    return out


def methods(device: str) -> Dict[str, Callable]:
    """The methods compared on ``device``; RLE ones only where pycocotools is installed."""
    ours = {"ours paste": lambda m, b, s: paste_masks_in_image(m, b, s, impl="torch"),
            "ours rle": lambda m, b, s: masks_to_rle(m, b, s, impl="torch")}
    if device == "cuda":
        kernel = {"ours kernel paste": lambda m, b, s: paste_masks_in_image(m, b, s, impl="cuda"),
                  "ours kernel rle": lambda m, b, s: masks_to_rle(m, b, s, impl="cuda")}
        ours = {**(kernel if _ext.load_status()[0] else {}),
                "ours torch paste": ours["ours paste"], "ours torch rle": ours["ours rle"]}
    found = {**ours, "tv paste+thr": tv_paste_thr, "tv paste+thr+rle": tv_paste_thr_rle,
             "grid_sample paste": grid_sample_paste}
    return found if has_pycocotools() else {k: v for k, v in found.items() if "rle" not in k}


def output_bytes(result) -> int:
    return result.numel() * result.element_size() if torch.is_tensor(result) else 0


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_methods(case: Case, device: str, repeats: int) -> Dict[str, float]:
    """Median seconds per method, the methods interleaved within each repeat."""
    n, height, width = case_shape(case)
    masks, boxes = make_inputs(n, height, width, device)
    funcs = methods(device)
    times: Dict[str, List[float]] = {name: [] for name in funcs}
    for r in range(repeats + 1):
        for name, fn in funcs.items():
            sync(device)
            start = time.perf_counter()
            result = fn(masks, boxes, (height, width))
            sync(device)
            if r > 0:  # r == 0 is the warm-up
                times[name].append(time.perf_counter() - start)
            del result
    return {name: statistics.median(t) for name, t in times.items()}


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def memory_worker(case: Case, method: str, device: str) -> Dict[str, float]:
    """Peak extra memory (MB) of one call of ``method``; run in a fresh process on the CPU."""
    n, height, width = case_shape(case)
    masks, boxes = make_inputs(n, height, width, device)
    fn = methods(device)[method]
    if device == "cuda":
        fn(masks, boxes, (height, width))  # warm-up: kernels, cuBLAS/cuDNN workspaces
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = fn(masks, boxes, (height, width))
        sync(device)
        extra = torch.cuda.max_memory_allocated() - base
        exact = True
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
            exact = True
        except OSError:
            exact = False  # VmHWM then includes import-time peaks: an upper bound
        base = _rss_kb("VmRSS")
        result = fn(masks, boxes, (height, width))
        extra = (_rss_kb("VmHWM") - base) * 1024
    out = output_bytes(result)
    return {"extra_mb": extra / MB, "beyond_output_mb": (extra - out) / MB, "exact": exact}


def measure_memory(case: Case, device: str, threads: int) -> Dict[str, Dict[str, float]]:
    results = {}
    for name in methods(device):
        if device == "cuda":
            results[name] = memory_worker(case, name, device)
            torch.cuda.empty_cache()
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--device", device, "--threads",
               str(threads), "--memory-worker", case, name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def ratio_line(label: str, value: float, goal: str, met: bool) -> str:
    return f"  {label}: {value:.3g} (goal {goal}: {'met' if met else 'NOT met'})"


def report(case: str, device: str, times: Dict[str, float], mem: Dict[str, Dict[str, float]]) -> None:
    print(f"\n{case} on {device}")
    print(f"  {'method':<20} {'time (ms)':>10} {'peak extra (MB)':>16} {'beyond output (MB)':>19}")
    for name, t in times.items():
        m = mem[name]
        print(f"  {name:<20} {t * 1e3:>10.1f} {m['extra_mb']:>16.1f} {m['beyond_output_mb']:>19.1f}")
    if device == "cpu":
        r = times["ours rle"] / times["tv paste+thr+rle"]
        print(ratio_line("time ours rle / tv paste+thr+rle", r, "<= 0.5", r <= 0.5))
        e = mem["ours rle"]["extra_mb"]
        print(ratio_line("peak extra MB of ours rle", e, "<= 64", e <= 64))
        for peer in ("tv paste+thr", "grid_sample paste"):
            print(f"  time ours paste / {peer}: {times['ours paste'] / times[peer]:.3g}")
    elif "ours kernel paste" not in times:
        print(f"  no kernel figures: maskrcnn._C not loaded ({_ext.load_status()[1]})")
    else:
        r = times["grid_sample paste"] / times["ours kernel paste"]
        print(ratio_line("speed-up ours kernel vs grid_sample paste", r, ">= 10", r >= 10))
        e = mem["ours kernel paste"]["beyond_output_mb"]
        print(ratio_line("peak extra MB of ours kernel beyond its output", e, "<= 256", e <= 256))
        print(f"  time ours kernel paste / ours torch paste: "
              f"{times['ours kernel paste'] / times['ours torch paste']:.3g}")
        print(f"  time ours kernel rle / tv paste+thr+rle: "
              f"{times['ours kernel rle'] / times['tv paste+thr+rle']:.3g}")
    if not all(m["exact"] for m in mem.values()):
        print("  (peak RSS could not be reset: memory figures are upper bounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description="Mask pasting benchmark")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads, the same for every method")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--memory-worker", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(memory_worker(*args.memory_worker, args.device)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device")
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"torch {torch.__version__}, {name}, {args.threads} thread(s), repeats {args.repeats}")
    for case in args.cases:
        times = time_methods(case, args.device, args.repeats)
        report(case, args.device, times, measure_memory(case, args.device, args.threads))


if __name__ == "__main__":
    main()
