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


def test_single_process_defaults(monkeypatch):
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


def test_two_process_gloo(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ)
        env.update(
            RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="",
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
