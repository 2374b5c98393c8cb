"""Tests for maskrcnn.utils.comm, including a real 2-process gloo run."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from maskrcnn.utils import comm

REPO_ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from maskrcnn.utils import comm

    assert comm.init_distributed(backend="gloo", timeout_s=60)
    rank, world = comm.get_rank(), comm.get_world_size()
    gathered = comm.all_gather({"rank": rank, "name": f"p{rank}", "items": list(range(rank + 1))})
    to_main = comm.gather_to_main(rank * 10)
    reduced = comm.reduce_dict({"a": torch.tensor(float(rank + 1)), "b": torch.tensor(2.0 * rank)})
    summed = comm.reduce_dict({"a": torch.tensor(float(rank + 1))}, average=False)
    comm.synchronize()
    out = {
        "rank": rank, "world": world, "local_rank": comm.get_local_rank(),
        "main": comm.is_main_process(), "gathered": gathered, "to_main": to_main,
        "reduced": {k: v.item() for k, v in reduced.items()}, "summed": summed["a"].item(),
    }
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
    torch.distributed.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_defaults(monkeypatch, no_launcher_env):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert comm.get_world_size() == 1
    assert comm.get_rank() == 0
    assert comm.get_local_rank() == 0
    assert comm.is_main_process()
    comm.synchronize()
    assert comm.all_gather({"x": 1}) == [{"x": 1}]
    assert comm.gather_to_main(3) == [3]
    d = {"loss": torch.tensor(1.5)}
    assert comm.reduce_dict(d)["loss"].item() == 1.5
    assert comm.init_distributed() is False
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert comm.init_distributed() is False


def test_local_rank_from_env_or_arg(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert comm.local_rank_from_env_or_arg(None) == 0
    assert "LOCAL_RANK" not in os.environ
    assert comm.local_rank_from_env_or_arg(3) == 3
    assert os.environ["LOCAL_RANK"] == "3"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert comm.local_rank_from_env_or_arg(5) == 1


@pytest.fixture
def no_launcher_env(monkeypatch):
    """An environment without torchrun's or slurm's variables. What a test adds to it, also
    through ``export_slurm_env`` (which writes ``os.environ`` itself), is gone afterwards: left
    behind, ``WORLD_SIZE`` would make every later ``tools/`` subprocess wait for its peers."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("SLURM_") or key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            monkeypatch.delenv(key)
    yield
    os.environ.clear()
    os.environ.update(saved)


SRUN_TASK = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "8",
             "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "123456", "SLURM_STEP_NODELIST": "gpu-a[07-08,11],gpu-b1",
             "SLURM_JOB_NODELIST": "gpu-a[01-20]"}


def test_rank_and_world_size_from_an_srun_task(no_launcher_env):
    assert comm.slurm_launch_env(SRUN_TASK) == {
        "RANK": "3", "WORLD_SIZE": "8",  # the step's tasks, not the allocation's 16
        "LOCAL_RANK": "1", "MASTER_ADDR": "gpu-a07", "MASTER_PORT": str(20000 + 123456 % 10000)}
    # An older slurm without SLURM_STEP_NUM_TASKS: the step id says srun started us.
    older = {k: v for k, v in SRUN_TASK.items() if k != "SLURM_STEP_NUM_TASKS"}
    assert comm.slurm_launch_env(older)["WORLD_SIZE"] == "16"
    # MASTER_ADDR / MASTER_PORT set by the user are kept.
    given = dict(SRUN_TASK, MASTER_ADDR="10.0.0.1", MASTER_PORT="1234")
    assert "MASTER_ADDR" not in comm.slurm_launch_env(given) and "MASTER_PORT" not in comm.slurm_launch_env(given)


def test_slurm_is_ignored_under_torchrun_and_in_a_batch_script(no_launcher_env):
    assert comm.slurm_launch_env(dict(SRUN_TASK, RANK="0", WORLD_SIZE="2")) is None  # torchrun wins
    batch_script = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "n[1-2]"}
    assert comm.slurm_launch_env(batch_script) is None  # one process: it must not wait for 7 others
    assert comm.slurm_launch_env({}) is None


def test_first_host_of_a_compressed_nodelist(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol: the parser
    assert comm.first_slurm_host("gpu-a[07-08,11],gpu-b1") == "gpu-a07"
    assert comm.first_slurm_host("rack[2-3]-node[010-012]") == "rack2-node010"
    assert comm.first_slurm_host("node5,node6") == "node5"
    assert comm.first_slurm_host("localhost") == "localhost"
    scontrol = tmp_path / "scontrol"  # with scontrol, its answer
    scontrol.write_text("#!/bin/sh\necho expanded-$3-1\necho second\n")
    scontrol.chmod(0o755)
    assert comm.first_slurm_host("n[1-2]") == "expanded-n[1-2]-1"


def test_export_slurm_env_sets_the_variables_init_distributed_reads(no_launcher_env, monkeypatch):
    for key, value in SRUN_TASK.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOCAL_RANK", "0")  # given by --local_rank: kept
    assert comm.export_slurm_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "8", "0")
    assert os.environ["MASTER_PORT"] == "23456"


@pytest.mark.parametrize("launcher", ["torchrun", "srun"])
def test_two_process_gloo(tmp_path, launcher):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")
               and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        if launcher == "torchrun":
            env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
        else:  # what srun gives each task; the address comes from the node list
            env.update(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_STEP_NUM_TASKS="2",
                       SLURM_NTASKS="2", SLURM_STEP_ID="0", SLURM_JOB_ID="77", SLURM_STEP_NODELIST="localhost")
            env.pop("MASTER_ADDR", None)
        env.update(
            MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="",
            OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path / f"out{rank}.json")],
                env=env, cwd=str(tmp_path),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        )
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("distributed workers timed out")
        outputs.append(out)
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out

    import json

    results = [json.loads((tmp_path / f"out{r}.json").read_text()) for r in range(2)]
    expected_gather = [
        {"rank": 0, "name": "p0", "items": [0]},
        {"rank": 1, "name": "p1", "items": [0, 1]},
    ]
    for r, res in enumerate(results):
        assert res["rank"] == r and res["world"] == 2 and res["local_rank"] == r
        assert res["main"] == (r == 0)
        assert res["gathered"] == expected_gather
        assert res["reduced"] == pytest.approx({"a": 1.5, "b": 1.0})
        assert res["summed"] == pytest.approx(3.0)
    assert results[0]["to_main"] == [0, 10]
    assert results[1]["to_main"] is None
