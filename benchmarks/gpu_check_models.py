"""``benchmarks/gpu_check.py`` (b) and (c): this project against torchvision's Mask R-CNN on a GPU.

Both models hold the same weights (``bench_vs_torchvision.build``: torchvision's
``maskrcnn_resnet50_fpn`` as built for fine-tuning, made to detect by ``tests/peers.py``,
converted for this project). Training: this project's :class:`~maskrcnn.engine.trainer.Trainer`
(its AMP path: autocast, float32 losses, gradient scaler) against the equivalent loop for
torchvision (autocast, ``GradScaler``, the loss read back every step as a training loop logs
it), SGD, the same batch every step, no hooks. Inference: this project's ``Predictor`` against
``torchvision([image])`` + ``masks > 0.5``, both from a uint8 image in host memory to outputs
in host memory.
"""
from __future__ import annotations

import itertools
import os
import statistics
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Tuple

import torch

import bench_vs_torchvision as bvt
from bench_mask_paste import has_pycocotools
from maskrcnn.engine.trainer import Trainer
from peers import smooth_images

TRAIN_SIZE, TRAIN_BATCH = (800, 1333), 8
DRY_SIZE, DRY_BATCH = (96, 128), 2
DRY_PROPOSALS, DRY_SAMPLED, DRY_DETECTIONS = 100, 64, 10  # a dry run's heads see few boxes
DRY_OPTS = ["MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN", str(DRY_PROPOSALS), "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST",
            str(DRY_PROPOSALS), "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", str(DRY_SAMPLED),
            "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", str(DRY_DETECTIONS)]
_models: Dict[Tuple[str, str], Tuple[Any, Any]] = {}


def _models_on(device: str, tmp: str, dry_run: bool):
    """(torchvision model, Predictor) on ``device``, built once per run; in a dry run both
    resize to the tiny size instead of 800."""
    key = (device, tmp)
    if key not in _models:
        sizes = dict(min_size=DRY_SIZE[0], max_size=DRY_SIZE[1]) if dry_run else {}
        opts = ["MODEL.ROI_MASK_HEAD.TARGET_RULE", mask_target_rule()] + (DRY_OPTS if dry_run else [])
        tv, pred = bvt.build(os.path.join(tmp, "converted.pth"), device=device, opts=opts, **sizes)
        if dry_run:  # the same smaller counts for torchvision
            tv.rpn._post_nms_top_n = dict(training=DRY_PROPOSALS, testing=DRY_PROPOSALS)
            tv.roi_heads.fg_bg_sampler.batch_size_per_image = DRY_SAMPLED
            tv.roi_heads.detections_per_img = DRY_DETECTIONS
        _models[key] = tv, pred
    return _models[key]


def mask_target_rule() -> str:
    """The config's torchvision rule rasterises polygons with pycocotools; without it, "center"
    (this project's default: sampled at the cell centres on the device)."""
    return "torchvision" if has_pycocotools() else "center"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _amp_dtype(device: str) -> torch.dtype:
    return torch.float16 if device == "cuda" else torch.bfloat16  # float16 autocast: CUDA only


def _peak(device: str, fn: Callable[[], Any]) -> Tuple[Any, float]:
    """``fn()`` and the peak CUDA memory (MB) it reached above the memory held before."""
    if device != "cuda":
        return fn(), 0.0
    _sync(device)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    _sync(device)
    return out, (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def _ours_trainer(model, batch, amp: bool, device: str) -> Trainer:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    dtype = _amp_dtype(device) if amp else None
    scaler = torch.amp.GradScaler("cuda") if amp and device == "cuda" else None
    return Trainer(model, itertools.repeat(batch), opt, sched, amp_dtype=dtype, grad_scaler=scaler)


def _tv_step(model, images, targets, amp: bool, device: str) -> Callable[[], float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp and device == "cuda" else None

    def step() -> float:
        model.train()
        with torch.autocast(device, dtype=_amp_dtype(device), enabled=amp):
            losses = model(images, targets)
        total = sum(v.float() for v in losses.values())
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            total.backward()
            opt.step()
        else:
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
        return float(total.detach())
    return step


def train_throughput(device: str, tmp: str, repeats: int, dry_run: bool) -> Dict[str, Any]:
    """Images / s of both models, AMP off and on; ``repeats`` timed steps after 2 warm-up steps."""
    tv, pred = _models_on(device, tmp, dry_run)
    size, n = (DRY_SIZE, DRY_BATCH) if dry_run else (TRAIN_SIZE, TRAIN_BATCH)
    warmup, steps = (0, 1) if dry_run else (2, max(repeats, 3))
    images = [im.to(device) for im in smooth_images([size] * n, seed=2)]
    t_ours, t_tv = bvt.targets(0, n=n, size=size)
    t_ours = [t.to(device) for t in t_ours]
    t_tv = [{k: v.to(device) for k, v in t.items()} for t in t_tv]
    tv_images = [im.float() / 255 for im in images]
    out: Dict[str, Any] = {"batch": n, "size": list(size), "timed_steps": steps,
                           "mask_target_rule": mask_target_rule(),
                           "amp_dtype": str(_amp_dtype(device)).replace("torch.", "")}
    table = []
    for amp in (False, True):
        trainer = _ours_trainer(pred.model, (images, t_ours, [{}] * n), amp, device)
        tv_step = _tv_step(tv, tv_images, t_tv, amp, device)
        if warmup:
            trainer.train(0, warmup)
        for _ in range(warmup):
            tv_step()
        ours_s, ours_mb = _peak(device, lambda: _timed(lambda: trainer.train(warmup, warmup + steps), device))
        tv_s, tv_mb = _peak(device, lambda: _timed(lambda: [tv_step() for _ in range(steps)], device))
        tag = "amp" if amp else "fp32"
        ours_ips, tv_ips = n * steps / ours_s, n * steps / tv_s
        out[tag] = {"ours_images_per_s": ours_ips, "torchvision_images_per_s": tv_ips,
                    "ratio": ours_ips / tv_ips, "ours_peak_cuda_mb": ours_mb, "torchvision_peak_cuda_mb": tv_mb}
        goal = ">= 2x torchvision, >= 60 img/s on an H100" if amp else ""
        table.append((f"{tag}: images/s ours | torchvision", f"{ours_ips:.3g} | {tv_ips:.3g}", goal))
        table.append((f"{tag}: ratio ours / torchvision", ours_ips / tv_ips, ">= 2" if amp else ""))
        table.append((f"{tag}: peak MB ours | torchvision", f"{ours_mb:.0f} | {tv_mb:.0f}", ""))
        if device == "cuda":
            torch.cuda.empty_cache()
    out["peak_cuda_mb"] = max(out[t][k] for t in ("fp32", "amp") for k in ("ours_peak_cuda_mb", "torchvision_peak_cuda_mb"))
    pred.model.eval()
    out["table"] = table
    return out


def _timed(fn: Callable[[], Any], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _tv_infer(tv, image: torch.Tensor, device: str) -> Dict[str, torch.Tensor]:
    with torch.inference_mode():
        out = tv([image.to(device).float() / 255])[0]
        out["masks"] = out["masks"][:, 0] > 0.5
    return {k: v.cpu() for k, v in out.items()}


def inference_latency(device: str, tmp: str, repeats: int, dry_run: bool) -> Dict[str, Any]:
    """Median seconds per image (one image per call), float32 and under autocast."""
    tv, pred = _models_on(device, tmp, dry_run)
    tv.eval()
    size = DRY_SIZE if dry_run else bvt.SIZE
    image = smooth_images([size], seed=1)[0]  # uint8, host memory
    runs = 1 if dry_run else max(repeats, 10)
    out: Dict[str, Any] = {"size": list(size), "runs": runs}
    table = []
    for amp in (False, True):
        ctx = (lambda: torch.autocast(device, dtype=_amp_dtype(device))) if amp else nullcontext

        last: Dict[str, Any] = {}

        def ours() -> Dict[str, torch.Tensor]:
            with ctx():
                last["ours"] = pred(image)
            return last["ours"]

        def theirs() -> Dict[str, torch.Tensor]:
            with ctx():
                return _tv_infer(tv, image, device)
        if not dry_run:
            ours(), theirs()  # warm-up
        times: Dict[str, List[float]] = {"ours": [], "torchvision": []}
        peaks = {}
        for r in range(runs):
            for name, fn in (("ours", ours), ("torchvision", theirs))[:: 1 if r % 2 == 0 else -1]:
                t, peaks[name] = _peak(device, lambda: _timed(fn, device))
                times[name].append(t)
        mo, mt = statistics.median(times["ours"]), statistics.median(times["torchvision"])
        tag = "amp" if amp else "fp32"
        out[tag] = {"ours_s": mo, "torchvision_s": mt, "ratio": mo / mt, "detections": len(last["ours"]["scores"]),
                    "ours_peak_cuda_mb": peaks["ours"], "torchvision_peak_cuda_mb": peaks["torchvision"]}
        table.append((f"{tag}: s / image ours | torchvision", f"{mo:.4g} | {mt:.4g}", ""))
        table.append((f"{tag}: ratio ours / torchvision", mo / mt, "<= 1"))
    out["peak_cuda_mb"] = max(out[t][k] for t in ("fp32", "amp") for k in ("ours_peak_cuda_mb", "torchvision_peak_cuda_mb"))
    out["table"] = table
    return out
