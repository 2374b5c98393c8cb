"""This project against torchvision's Mask R-CNN: same weights, same images, one process.

    python benchmarks/bench_vs_torchvision.py [--repeats 5] [--threads N] [--skip-train] [--skip-memory]
                                              [--channels-last]

Both models hold the same seeded random weights (torchvision's ``maskrcnn_resnet50_fpn`` as
built with pretrained weights: frozen BatchNorm, stem and stage 2 frozen; adjusted by
``tests/peers.py``'s ``make_confident`` so that it detects things), converted for this
project with ``maskrcnn.checkpoint.convert`` and run under
``configs/torchvision/maskrcnn_resnet50_fpn.yaml``. Images are 800x1333.

* inference: one image per call, as a user calls each model: this project's ``Predictor``
  (resize, model, boxes and bool masks at the image's resolution) against torchvision's
  ``model([image])`` followed by ``masks > 0.5``. Interleaved, median of ``--repeats``.
* training step: batch 2, five instances per image (polygons for this project, the same
  polygons rasterised to masks for torchvision), loss + backward + SGD step. Interleaved.
* peak memory: each measurement in a fresh subprocess per model; the peak RSS (VmHWM,
  reset through /proc/self/clear_refs just before the workload, two runs of it) and the
  extra above the RSS at that moment. Each subprocess builds both models, so their
  baselines are the same.

It prints each time, and the ratios this project / torchvision. Same thread count for both.
``--channels-last`` runs this project with ``MODEL.CHANNELS_LAST True`` (torchvision as it is).
``benchmarks/gpu_check.py`` reuses the model building and the targets on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import numpy as np
import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "tests")))  # peers.py

from maskrcnn.predictor import Predictor  # noqa: E402
from maskrcnn.structures.bounding_box import BoxList  # noqa: E402
from maskrcnn.structures.segmentation_mask import InstanceMasks  # noqa: E402
from maskrcnn.checkpoint.convert import convert_state_dict  # noqa: E402
from peers import make_confident, smooth_images, torchvision_maskrcnn  # noqa: E402

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "torchvision", "maskrcnn_resnet50_fpn.yaml")
SIZE = (800, 1333)


def build(weights_path: str, device: str = "cpu", channels_last: bool = False, min_size: int = 800,
          max_size: int = 1333, opts: Sequence[str] = ()):
    """(torchvision model, this project's Predictor) with identical weights, on ``device``; both
    resize images to ``min_size`` / ``max_size`` (torchvision's defaults); ``opts``: more
    ``KEY VALUE`` config overrides for this project."""
    tv = torchvision_maskrcnn(frozen_bn=True)
    tv.transform.min_size, tv.transform.max_size = (min_size,), max_size
    tv = make_confident(tv)  # calibrated at the size it runs at (800: torchvision's default)
    if not os.path.isfile(weights_path):
        state, _ = convert_state_dict(tv.state_dict(), "torchvision")
        torch.save({"model": state}, weights_path)
    opts = ["MODEL.WEIGHT", "", "MODEL.DEVICE", device, "MODEL.CHANNELS_LAST", str(channels_last),
            "INPUT.MIN_SIZE_TEST", str(min_size), "INPUT.MAX_SIZE_TEST", str(max_size), *opts]
    return tv.to(device), Predictor.from_config(CONFIG, weights_path, opts=opts)


def polygons(seed: int, n: int = 5, size=SIZE):
    """``n`` random convex polygons (octagons) per image, as COCO flat lists, with labels."""
    g = np.random.default_rng(seed)
    out = []
    side = min(size)
    for _ in range(n):
        cx, cy = g.uniform(0.1875 * side, size[1] - 0.1875 * side), g.uniform(0.1875 * side, size[0] - 0.1875 * side)
        rx, ry = g.uniform(0.0375 * side, 0.175 * side), g.uniform(0.0375 * side, 0.175 * side)
        t = np.linspace(0, 2 * np.pi, 9)[:-1]
        out.append(np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).reshape(-1).tolist())
    return out, g.integers(1, 91, n).tolist()


def rasterize_convex(polys, size) -> torch.Tensor:
    """``(N, H, W)`` uint8 masks of convex polygons: pixels whose centre is inside every edge
    (for machines without pycocotools; its rasteriser differs on boundary pixels only)."""
    h, w = size
    y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    out = []
    for p in polys:
        pts = torch.tensor(p, dtype=torch.float64).reshape(-1, 2)
        a, b = pts, pts.roll(-1, 0)
        cross = [(bx - ax) * (y - ay) - (by - ay) * (x - ax) for (ax, ay), (bx, by) in zip(a.tolist(), b.tolist())]
        stack = torch.stack(cross)
        out.append(((stack >= 0).all(0) | (stack <= 0).all(0)).to(torch.uint8))
    return torch.stack(out)


def targets(seed: int, n: int = 2, size=SIZE):
    """Matching targets of ``n`` images: this project's BoxLists and torchvision's dicts."""
    ours, tvs = [], []
    for i in range(n):
        polys, labels = polygons(seed * 2 + i, size=size)
        xy = [np.asarray(p).reshape(-1, 2) for p in polys]
        boxes = torch.tensor([[a[:, 0].min(), a[:, 1].min(), a[:, 0].max(), a[:, 1].max()] for a in xy],
                             dtype=torch.float32)
        target = BoxList(boxes, size)
        target.add_field("labels", torch.tensor(labels))
        target.add_field("masks", InstanceMasks([[p] for p in polys], size))
        ours.append(target)
        try:
            from pycocotools import mask as mask_util
        except ImportError:
            masks = rasterize_convex(polys, size)
        else:
            rles = mask_util.frPyObjects(polys, size[0], size[1])
            masks = torch.from_numpy(mask_util.decode(rles)).permute(2, 0, 1).contiguous()
        tvs.append({"boxes": boxes.clone(), "labels": torch.tensor(labels), "masks": masks})
    return ours, tvs


def infer_ours(pred: Predictor, image: torch.Tensor):
    return pred(image.permute(1, 2, 0).numpy())


def infer_tv(tv, image: torch.Tensor):
    with torch.inference_mode():
        out = tv([image.float() / 255])[0]
        out["masks"] = out["masks"][:, 0] > 0.5
    return out


def make_train_step(model, is_ours: bool, images, tgts):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4)
    if is_ours:
        inputs = list(images)
    else:
        inputs = [im.float() / 255 for im in images]

    def step():
        model.train()
        losses = model.loss(inputs, tgts) if is_ours else model(inputs, tgts)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return float(total.detach())
    return step


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compare_times(name: str, fn_ours, fn_tv, repeats: int) -> dict:
    fn_ours(), fn_tv()  # warm-up
    ours, tv = [], []
    for r in range(repeats):
        pair = [(ours, fn_ours), (tv, fn_tv)]
        for dst, fn in (pair if r % 2 == 0 else pair[::-1]):
            dst.append(timed(fn))
    mo, mt = statistics.median(ours), statistics.median(tv)
    print(f"{name:<16} this project {mo:7.3f} s   torchvision {mt:7.3f} s   ratio {mo / mt:.3f}"
          f"   (runs: {' '.join(f'{x:.2f}' for x in ours)} | {' '.join(f'{x:.2f}' for x in tv)})",
          flush=True)
    return {"ours_s": mo, "torchvision_s": mt, "ratio": mo / mt}


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(which: str, workload: str, weights: str, channels_last: bool) -> None:
    """Runs one workload for one model in this (fresh) process and prints its peak RSS."""
    tv, pred = build(weights, channels_last=channels_last)
    image = smooth_images([SIZE], seed=1)[0]
    if workload == "inference":
        fn = (lambda: infer_ours(pred, image)) if which == "ours" else (lambda: infer_tv(tv, image))
    else:
        images = smooth_images([SIZE, SIZE], seed=2)
        t_ours, t_tv = targets(0)
        model = pred.model if which == "ours" else tv
        fn = make_train_step(model, which == "ours", images, t_ours if which == "ours" else t_tv)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    base = _rss_kb("VmRSS")
    fn()
    fn()
    peak = _rss_kb("VmHWM")
    print(json.dumps({"peak_mb": peak / 1024, "extra_mb": (peak - base) / 1024}))


def measure_memory(workload: str, weights: str, threads: int, channels_last: bool) -> dict:
    out = {}
    for which in ("ours", "torchvision"):
        cmd = [sys.executable, __file__, "--child", which, workload, "--weights", weights,
               "--threads", str(threads)] + (["--channels-last"] if channels_last else [])
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        out[which] = json.loads(res.stdout.strip().splitlines()[-1])
    o, t = out["ours"], out["torchvision"]
    print(f"{workload + ' memory':<16} this project peak {o['peak_mb']:7.0f} MB (+{o['extra_mb']:.0f})"
          f"   torchvision peak {t['peak_mb']:7.0f} MB (+{t['extra_mb']:.0f})"
          f"   ratio peak {o['peak_mb'] / t['peak_mb']:.3f}, extra {o['extra_mb'] / max(t['extra_mb'], 1e-9):.3f}",
          flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--weights", default="")
    parser.add_argument("--channels-last", action="store_true",
                        help="this project with MODEL.CHANNELS_LAST True (torchvision unchanged)")
    parser.add_argument("--child", nargs=2, metavar=("WHICH", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child[0], args.child[1], args.weights, args.channels_last)
        return
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "converted.pth")
        tv, pred = build(weights, channels_last=args.channels_last)
        print(f"torch {torch.__version__}, {args.threads} threads, images {SIZE[0]}x{SIZE[1]}, "
              f"median of {args.repeats}, this project channels-last: {args.channels_last}", flush=True)
        image = smooth_images([SIZE], seed=1)[0]
        n = len(infer_ours(pred, image)["scores"]), len(infer_tv(tv, image)["scores"])
        print(f"detections per image: this project {n[0]}, torchvision {n[1]}")
        results = {"inference": compare_times("inference", lambda: infer_ours(pred, image),
                                              lambda: infer_tv(tv, image), args.repeats)}
        if not args.skip_train:
            images = smooth_images([SIZE, SIZE], seed=2)
            t_ours, t_tv = targets(0)
            results["train_step"] = compare_times(
                "train step (b=2)", make_train_step(pred.model, True, images, t_ours),
                make_train_step(tv, False, images, t_tv), args.repeats)
        if not args.skip_memory:
            for workload in ("inference",) + (() if args.skip_train else ("train",)):
                results[workload + "_memory"] = measure_memory(workload, weights, args.threads,
                                                               args.channels_last)
        print("goals: inference ratio <= 0.80, train step ratio <= 0.90, peak memory ratio <= 1.00")
        print(json.dumps(results))


if __name__ == "__main__":
    main()
