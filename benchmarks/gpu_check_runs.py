"""``benchmarks/gpu_check.py`` (d) and (e): ``tools/train_net.py`` runs in subprocesses.

Each run goes through :data:`BOOT`: it makes a process group of one process (nccl on CUDA, gloo
in a dry run), optionally turns on deterministic algorithms, records whether ``engine/run.py``
wrapped the model in DistributedDataParallel, runs ``tools/train_net.py`` as ``__main__`` and
prints one ``GPU_CHECK_RESULT {json}`` line (backend, world size, DDP, peak CUDA memory).

Data: the synthetic shapes set, generated here (no pycocotools needed), ``DATASETS.TEST ()``.
Model: ``configs/quickstart.yaml`` with AMP and channels-last on.

Each uninterrupted run is made once per configuration (:func:`_uninterrupted`): in a dry run (d)
and the uninterrupted half of (e) are the same run (gloo, 4 iterations, a checkpoint at 2,
deterministic algorithms left as they are on the CPU), so (e) compares against (d)'s weights
and starts one process, not two. On CUDA they differ (20 iterations; deterministic algorithms).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

import torch

from maskrcnn.data.datasets.shapes import ensure_shapes_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "quickstart.yaml")
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
DDP_RUN = {"cuda": (20, 1000), "dry": (4, 2)}  # (iterations, checkpoint period)
RESUME_RUN = {"cuda": (12, 4), "dry": (4, 2)}
_runs: Dict[Tuple[str, str, int, int, str], Tuple[str, Dict[str, Any]]] = {}

BOOT = r"""
import json, os, runpy, sys, time
import torch, torch.distributed as dist
backend, port, deterministic = sys.argv[1], sys.argv[2], sys.argv[3]
if backend == "nccl":
    torch.cuda.set_device(0)
dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", world_size=1, rank=0)
if deterministic != "off":
    torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
import maskrcnn.engine.run as run
wrapped, original = [], run._ddp
def _ddp(model):
    out = original(model)
    wrapped.append(type(out).__name__)
    return out
run._ddp = _ddp
sys.argv = [sys.argv[4]] + sys.argv[5:]
start, code = time.perf_counter(), 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
peak = torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else 0.0
print("GPU_CHECK_RESULT " + json.dumps({"exit_code": code, "backend": dist.get_backend(),
      "world_size": dist.get_world_size(), "wrapped_as": wrapped, "peak_cuda_mb": peak,
      "seconds": time.perf_counter() - start}), flush=True)
dist.destroy_process_group()
sys.exit(code)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset(tmp: str, dry_run: bool) -> List[str]:
    ann, img_dir = ensure_shapes_dataset(os.path.join(tmp, "data"), "train", 16 if dry_run else 64, 0)
    return ["DATASETS.CATALOG.gpu_check_train.ANN_FILE", ann, "DATASETS.CATALOG.gpu_check_train.IMG_DIR", img_dir,
            "DATASETS.TRAIN", "('gpu_check_train',)", "DATASETS.TEST", "()"]


def _opts(device: str, out_dir: str, max_iter: int, period: int, dry_run: bool) -> List[str]:
    opts = ["MODEL.DEVICE", device, "OUTPUT_DIR", out_dir, "SOLVER.MAX_ITER", str(max_iter),
            "SOLVER.CHECKPOINT_PERIOD", str(period), "SOLVER.STEPS", f"({max(1, max_iter - 2)},)",
            "SOLVER.WARMUP_ITERS", "2", "SOLVER.LOG_PERIOD", "1", "SOLVER.AMP.ENABLED", "True",
            "SOLVER.AMP.DTYPE", "float16" if device == "cuda" else "bfloat16", "MODEL.CHANNELS_LAST", "True",
            "SEED", "1", "DATALOADER.NUM_WORKERS", "0" if dry_run else "2"]
    if dry_run:
        opts += ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"]
    return opts


def train(device: str, opts: List[str], log_path: str, resume: bool = False,
          deterministic: str = "off") -> Dict[str, Any]:
    """One ``tools/train_net.py`` run through :data:`BOOT`; its result line, and the log's tail."""
    env = dict(os.environ)
    if deterministic != "off":
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    backend = "nccl" if device == "cuda" else "gloo"
    cmd = [sys.executable, "-c", BOOT, backend, str(_free_port()), deterministic, TRAIN_NET,
           "--config-file", CONFIG] + (["--resume"] if resume else []) + opts
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
    text = open(log_path).read()
    lines = [ln for ln in text.splitlines() if ln.startswith("GPU_CHECK_RESULT ")]
    result = json.loads(lines[-1].split(" ", 1)[1]) if lines else {"exit_code": proc.returncode}
    result["returncode"] = proc.returncode
    if proc.returncode != 0:
        result["log_tail"] = text[-3000:]
    return result


def _uninterrupted(device: str, tmp: str, dry_run: bool, max_iter: int, period: int,
                   deterministic: str = "off") -> Tuple[str, Dict[str, Any]]:
    """(output folder, result) of a run from scratch; made on the first call for its settings."""
    key = (tmp, device, max_iter, period, deterministic)
    if key not in _runs:
        out_dir = os.path.join(tmp, f"run_{max_iter}it_every{period}_deterministic_{deterministic}")
        opts = _dataset(tmp, dry_run) + _opts(device, out_dir, max_iter, period, dry_run)
        _runs[key] = out_dir, train(device, opts, out_dir + ".log", deterministic=deterministic)
    out_dir, res = _runs[key]
    return out_dir, dict(res)


def ddp_run(device: str, tmp: str, dry_run: bool) -> Dict[str, Any]:
    """(d): 20 iterations (4 in a dry run) in a DDP process group of one process."""
    iters, period = DDP_RUN["dry" if dry_run else "cuda"]
    out_dir, res = _uninterrupted(device, tmp, dry_run, iters, period)
    done = os.path.isfile(os.path.join(out_dir, "model_final.pth"))
    ok = res["returncode"] == 0 and done and res.get("wrapped_as") == ["DistributedDataParallel"]
    res.update(status="ok" if ok else "failed", iterations=iters)
    if not ok:
        res.setdefault("error", f"exit code {res['returncode']}, model_final.pth written: {done}, "
                                f"wrapped as {res.get('wrapped_as')}")
    res["table"] = [("backend, world size, wrapped as", f"{res.get('backend')}, {res.get('world_size')}, "
                     f"{','.join(res.get('wrapped_as', []))}", "nccl, 1, DistributedDataParallel"),
                    (f"{iters} iterations: s, peak MB", f"{res.get('seconds', 0):.1f}, {res.get('peak_cuda_mb', 0):.0f}", "")]
    return res


def _compare(a: str, b: str) -> Dict[str, Any]:
    x = torch.load(os.path.join(a, "model_final.pth"), weights_only=True, map_location="cpu")
    y = torch.load(os.path.join(b, "model_final.pth"), weights_only=True, map_location="cpu")
    differ = [k for k in x["model"] if not torch.equal(x["model"][k], y["model"][k])]
    worst = max([float((x["model"][k].float() - y["model"][k].float()).abs().max()) for k in differ] or [0.0])
    return {"tensors": len(x["model"]), "tensors_different": len(differ), "max_abs_difference": worst,
            "examples": differ[:3], "iterations": [x.get("iteration"), y.get("iteration")],
            "grad_scaler": [x.get("grad_scaler"), y.get("grad_scaler")]}


def _resume_pair(device: str, tmp: str, dry_run: bool, deterministic: str) -> Dict[str, Any]:
    max_iter, period = RESUME_RUN["dry" if dry_run else "cuda"]
    data = _dataset(tmp, dry_run)
    full, first = _uninterrupted(device, tmp, dry_run, max_iter, period, deterministic)
    part = os.path.join(tmp, f"resume_part_{deterministic}")
    if first["returncode"] != 0:
        return {"status": "failed", "error": "the uninterrupted run failed", "uninterrupted": first}
    # The run "stopped" right after its first checkpoint: a new process resumes from that file alone.
    os.makedirs(part)
    name = f"model_{period:07d}.pth"
    shutil.copy(os.path.join(full, name), os.path.join(part, name))
    with open(os.path.join(part, "last_checkpoint"), "w") as f:
        f.write(name)
    second = train(device, data + _opts(device, part, max_iter, period, dry_run),
                   os.path.join(tmp, f"resume_part_{deterministic}.log"), resume=True, deterministic=deterministic)
    if second["returncode"] != 0:
        return {"status": "failed", "error": "the resumed run failed", "resumed": second}
    cmp = _compare(full, part)
    return {"status": "ok", "stopped_at": period, "max_iter": max_iter, "comparison": cmp,
            "bit_identical": cmp["tensors_different"] == 0, "uninterrupted": first, "resumed": second}


def exact_resume(device: str, tmp: str, dry_run: bool) -> Dict[str, Any]:
    """(e): strict deterministic algorithms; if an op refuses them, again with ``warn_only``."""
    modes = ["on"] if device == "cuda" else ["off"]  # the CPU kernels are deterministic already
    res = _resume_pair(device, tmp, dry_run, modes[0])
    if res["status"] == "failed" and device == "cuda":
        res = {"strict_failure": res, **_resume_pair(device, tmp, dry_run, "warn")}
        modes.append("warn")
    res["deterministic"] = modes[-1]
    if res.get("status") == "ok" and not res["bit_identical"]:
        res["status"] = "failed"
        res["error"] = f"{res['comparison']['tensors_different']} tensors differ after resuming"
    peak = max(r.get("peak_cuda_mb", 0.0) for r in (res.get("uninterrupted", {}), res.get("resumed", {})))
    res["peak_cuda_mb"] = peak
    cmp: Optional[Dict[str, Any]] = res.get("comparison")
    res["table"] = [("deterministic algorithms", modes[-1], "on"),
                    ("tensors different after resume", cmp["tensors_different"] if cmp else "n/a", "0")]
    return res
