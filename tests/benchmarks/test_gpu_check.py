"""``benchmarks/gpu_check.py --dry-run`` goes through every code path it can reach without CUDA,
on a machine where pycocotools cannot be imported (as on the GPU machine it is meant for), and
writes its JSON."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")
NO_PYCOCOTOOLS = """import sys
for name in ("pycocotools", "pycocotools.coco", "pycocotools.mask", "pycocotools.cocoeval"):
    sys.modules[name] = None  # 'import pycocotools' raises ImportError in this process
"""


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    (tmp / "sitecustomize.py").write_text(NO_PYCOCOTOOLS)  # inherited by the training subprocesses
    # One thread, as in the other subprocess tests: at these tiny sizes a second OpenMP thread
    # gains little, and on a busy 2-core machine its barriers made the dry run 2-3x slower.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    out = tmp / "tmp.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--out", str(out)], cwd=str(tmp), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_writes_every_section(dry_run):
    results, _ = dry_run
    assert set(results) == {"environment", "paste", "inference_latency", "train_throughput", "ddp",
                            "exact_resume", "peak_cuda_mb", "seconds"}
    env = results["environment"]
    assert env["dry_run"] is True and env["pycocotools"] is False and env["device"].startswith("CPU")
    for name in ("paste", "inference_latency", "train_throughput", "ddp", "exact_resume"):
        assert results[name]["status"] == "ok", results[name]
        assert results[name]["table"], name
    assert set(results["peak_cuda_mb"]) == {"paste", "inference_latency", "train_throughput", "ddp", "exact_resume"}


def test_kernel_and_rle_parts_say_they_were_skipped(dry_run):
    results, stdout = dry_run
    paste = results["paste"]
    assert "kernel parts skipped" in paste["kernel_skipped"] and "kernel parts skipped" in stdout
    assert "pycocotools" in paste["rle_skipped"]
    assert set(paste["time_s"]) == {"ours paste", "tv paste+thr", "grid_sample paste"}
    assert all(t > 0 for t in paste["time_s"].values())


def test_models_train_and_infer_with_and_without_amp(dry_run):
    results, _ = dry_run
    train, infer = results["train_throughput"], results["inference_latency"]
    assert train["amp_dtype"] == "bfloat16"  # float16 autocast is for CUDA
    assert train["mask_target_rule"] == "center"  # the torchvision rule would need pycocotools
    for tag in ("fp32", "amp"):
        assert train[tag]["ours_images_per_s"] > 0 and train[tag]["torchvision_images_per_s"] > 0
        assert infer[tag]["ours_s"] > 0 and infer[tag]["detections"] > 0


def test_ddp_and_exact_resume_ran_the_training_tool(dry_run):
    results, _ = dry_run
    ddp = results["ddp"]
    assert (ddp["backend"], ddp["world_size"], ddp["wrapped_as"]) == ("gloo", 1, ["DistributedDataParallel"])
    resume = results["exact_resume"]
    assert resume["bit_identical"] and resume["comparison"]["tensors_different"] == 0
    assert resume["comparison"]["iterations"] == [resume["max_iter"]] * 2
    assert resume["resumed"]["exit_code"] == 0
