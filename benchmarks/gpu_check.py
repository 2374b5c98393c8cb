"""Every GPU measurement of this project in one command (issue 13): one JSON file and a table.

    python benchmarks/gpu_check.py [--out gpu_check.json] [--repeats 5]
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json    # on the CPU, tiny sizes

Sized to finish in under 8 minutes on one H100-class GPU. It measures:

a. ``paste``: the CUDA paste kernel (``maskrcnn._C``; built in place first if missing, with
   ``setup.py build_ext --inplace``, ``FORCE_CUDA=1`` and the GPU's architecture) against the
   pure-PyTorch path: bit-exact on random and edge cases; time and peak memory for 100 masks
   at 4000x3000 against chunked ``grid_sample`` and torchvision's ``paste_masks_in_image``
   (``benchmarks/bench_mask_paste.py``).
b. ``train_throughput``: images/s at batch 8, 800x1333, R-50-FPN Mask R-CNN, AMP (float16 +
   gradient scaler) off and on, this project's Trainer against torchvision's
   ``maskrcnn_resnet50_fpn`` with the same weights (converted), batch and AMP setting.
c. ``inference_latency``: seconds per 800x1333 image, this project's Predictor against
   torchvision (float32, and under float16 autocast).
d. ``ddp``: ``tools/train_net.py``, 20 iterations of the quickstart model in a process group of
   one process on the nccl backend (the model wrapped in DistributedDataParallel), AMP and
   channels-last on.
e. ``exact_resume``: the same tool, deterministic algorithms on
   (``torch.use_deterministic_algorithms(True)``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``), AMP on:
   a run stopped at a checkpoint and resumed in a new process against an uninterrupted one;
   the final weights are compared.
f. peak CUDA memory of each (``torch.cuda.max_memory_allocated``), in every section.

Training uses the synthetic shapes data with ``DATASETS.TEST ()``: nothing here needs
pycocotools (where it is missing, the RLE parts of (a) are left out and say so).

``--dry-run`` runs every code path reachable without CUDA on the CPU at tiny sizes (bfloat16
instead of float16, gloo instead of nccl, kernel parts skipped with a line saying so) and
still writes the JSON; ``tests/benchmarks/test_gpu_check.py`` runs it in CI.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, HERE, os.path.join(ROOT, "tests")):  # tests/peers.py: torchvision's model
    if path not in sys.path:
        sys.path.insert(0, path)

import gpu_check_models  # noqa: E402
import gpu_check_paste  # noqa: E402
import gpu_check_runs  # noqa: E402

# Run in this order: inference before training changes the weights.
SECTIONS = ("paste", "inference_latency", "train_throughput", "ddp", "exact_resume")


def _run_section(name: str, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """``fn()``'s results with ``seconds``; a failure is recorded, not raised: the others run."""
    print(f"--- {name}", flush=True)
    start = time.perf_counter()
    try:
        out = fn()
        out.setdefault("status", "ok")
    except Exception as exc:  # noqa: BLE001 - one failed check must not hide the others
        traceback.print_exc()
        out = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table_rows(results: Dict[str, Any]) -> List[List[str]]:
    """``[check, measure, value, goal]`` rows of the printed table."""
    rows = []
    for name in SECTIONS:
        section = results.get(name, {})
        status = section.get("status", "missing")
        if status != "ok":
            rows.append([name, "status", status, section.get("error", section.get("reason", ""))[:80]])
        for measure, value, goal in section.get("table", []):
            rows.append([name, measure, _fmt(value), goal])
    return rows


def print_table(results: Dict[str, Any]) -> None:
    rows = [["check", "measure", "value", "goal"]] + table_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def environment(dry_run: bool) -> Dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)",
            "dry_run": dry_run, "pycocotools": gpu_check_paste.has_pycocotools()}


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.json", help="the JSON file written")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes, no CUDA needed")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run to go through the code paths on the CPU", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    repeats = 1 if args.dry_run else args.repeats
    start = time.perf_counter()
    results: Dict[str, Any] = {"environment": environment(args.dry_run)}
    print(json.dumps(results["environment"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        jobs = {
            "paste": lambda: gpu_check_paste.run(device, repeats, args.dry_run),
            "train_throughput": lambda: gpu_check_models.train_throughput(device, tmp, repeats, args.dry_run),
            "inference_latency": lambda: gpu_check_models.inference_latency(device, tmp, repeats, args.dry_run),
            "ddp": lambda: gpu_check_runs.ddp_run(device, tmp, args.dry_run),
            "exact_resume": lambda: gpu_check_runs.exact_resume(device, tmp, args.dry_run),
        }
        for name in SECTIONS:
            results[name] = (_run_section(name, jobs[name]) if name in args.only
                             else {"status": "skipped", "reason": "not in --only"})
            if device == "cuda":
                torch.cuda.empty_cache()
    results["peak_cuda_mb"] = {name: results[name].get("peak_cuda_mb") for name in SECTIONS}
    results["seconds"] = round(time.perf_counter() - start, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print_table(results)
    print(f"\n{results['seconds']} s in all; wrote {args.out}")
    failed = [n for n in SECTIONS if results[n].get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
