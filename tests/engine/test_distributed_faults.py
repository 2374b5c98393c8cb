"""A 2-process gloo training whose one rank dies (SIGKILL) or hangs (SIGSTOP): the other must
exit with an error within DIST_TIMEOUT_S (+ a margin) instead of hanging, and the last
checkpoint must stay loadable. The two ranks are started by hand (env:// rendezvous), with no
launcher that would tear the survivor down for us."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from maskrcnn.checkpoint import Checkpointer, read_checkpoint
from test_train_net import ROOT, TOOLS, free_port, tiny_yaml

TIMEOUT_S = 20
MARGIN_S = 15  # process exit, slow machines


def _start_ranks(cfg, tmp_path):
    port = free_port()
    procs, logs = [], []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
        logs.append(tmp_path / f"rank{rank}.log")
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, os.path.join(TOOLS, "train_net.py"), "--config-file", cfg,
                 "DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
                 "DIST_TIMEOUT_S", str(TIMEOUT_S)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs, logs


def _stop_all(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.parametrize("victim,sig", [(1, signal.SIGKILL), (0, signal.SIGSTOP)],
                         ids=["rank1-killed", "rank0-hangs"])
def test_survivor_fails_within_timeout(tmp_path, victim, sig):
    out = tmp_path / "out"
    # Long enough that nobody finishes on its own.
    cfg = tiny_yaml(str(tmp_path / "data"), out, MAX_ITER=500, CHECKPOINT_PERIOD=2, LOG_PERIOD=1)
    procs, logs = _start_ranks(cfg, tmp_path)
    survivor = procs[1 - victim]
    try:
        deadline = time.time() + 180
        while not (out / "last_checkpoint").exists():
            assert time.time() < deadline, "no checkpoint written"
            assert all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(0.5)
        procs[victim].send_signal(sig)
        signalled = time.time()
        try:
            rc = survivor.wait(timeout=TIMEOUT_S + MARGIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank {1 - victim} still running {TIMEOUT_S + MARGIN_S} s after rank {victim} "
                        f"got {sig.name}")
        elapsed = time.time() - signalled
    finally:
        _stop_all(procs)
    assert rc != 0
    text = logs[1 - victim].read_text()
    assert "another process died or hung" in text and "--resume" in text
    if sig == signal.SIGSTOP:
        # A hung peer keeps its sockets open: only the timeout can end the wait.
        assert elapsed > TIMEOUT_S * 0.75, elapsed
        assert "Timed out" in text or "timed out" in text
    data = read_checkpoint(Checkpointer(torch.nn.Linear(1, 1), save_dir=str(out)).get_checkpoint_file())
    assert data["iteration"] >= 2 and data["iteration"] % 2 == 0
    assert len(data["rng"]) == 2  # both ranks' RNG states, gathered before rank 0 saved
    assert not torch.equal(data["rng"][0]["torch"], data["rng"][1]["torch"])
