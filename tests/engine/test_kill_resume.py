"""Training survives SIGKILL: real `tools/train_net.py` processes are killed at random moments
(seeded delays after training starts) and resumed with --resume until they finish; the final
weights must be bit-identical to an uninterrupted run, with one process and with two (gloo).
A kill in the middle of a checkpoint save must leave the previous checkpoint loadable and
`last_checkpoint` naming a complete file."""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from maskrcnn.checkpoint import Checkpointer, CheckpointError, read_checkpoint
from test_train_net import ROOT, TOOLS, free_port, tiny_yaml

TRAIN = os.path.join(TOOLS, "train_net.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1")
MAX_ITER = 24  # enough steps left after the first kill for the second to land before the end
OPTS = ["DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"]


def _config(tmp_path, name):
    return tiny_yaml(str(tmp_path / "data"), tmp_path / name, MAX_ITER=MAX_ITER, CHECKPOINT_PERIOD=2,
                     STEPS=[16], WARMUP_ITERS=3)


def _launch(cfg, workers, resume, log_path):
    cmd = [sys.executable, TRAIN, "--config-file", cfg] + (["--resume"] if resume else []) + OPTS + [
        "DATALOADER.NUM_WORKERS", str(workers)]
    with open(log_path, "w") as log:
        # Own process group: the DataLoader workers of a killed run can be reaped afterwards.
        return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_for(proc, log_path, text, timeout=180):
    """True once ``text`` is in the log; False if the process exited first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(log_path) as f:
            if text in f.read():
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not seen in {log_path} within {timeout} s")


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)  # the main process only, like the OOM killer
    proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # orphaned DataLoader workers of this run
    except ProcessLookupError:
        pass


def _assert_last_checkpoint_complete(out):
    ckpt = Checkpointer(torch.nn.Linear(1, 1), save_dir=str(out))
    if ckpt.has_checkpoint():
        data = read_checkpoint(ckpt.get_checkpoint_file())
        assert isinstance(data["iteration"], int) and "optimizer" in data and "rng" in data


def _assert_same_final(a, b, max_iter=MAX_ITER):
    x = torch.load(os.path.join(a, "model_final.pth"), weights_only=True)
    y = torch.load(os.path.join(b, "model_final.pth"), weights_only=True)
    assert x["iteration"] == y["iteration"] == max_iter
    assert x["model"].keys() == y["model"].keys()
    different = [k for k in x["model"] if not torch.equal(x["model"][k], y["model"][k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    for sx, sy in zip(x["optimizer"]["state"].values(), y["optimizer"]["state"].values()):
        assert torch.equal(sx["momentum_buffer"], sy["momentum_buffer"])
    assert x["scheduler"]["last_epoch"] == y["scheduler"]["last_epoch"] == max_iter


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run (NUM_WORKERS 0)."""
    base = tmp_path_factory.mktemp("reference")
    cfg = _config(base, "out")
    proc = subprocess.run([sys.executable, TRAIN, "--config-file", cfg] + OPTS, cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"base": base, "out": str(base / "out")}


@pytest.mark.parametrize("workers,seed", [((0,), 1), ((2, 0), 2)], ids=["workers0", "workers2-and-0"])
def test_sigkilled_and_resumed_run_ends_bit_identical(reference, tmp_path, workers, seed):
    """``workers`` cycles over the attempts: (2, 0) also resumes a 2-worker run with 0 and back."""
    cfg = _config(tmp_path, "out")
    out = tmp_path / "out"
    rng = random.Random(seed)
    kills, finished = [], False
    for attempt in range(15):
        log_path = tmp_path / f"attempt{attempt}.log"
        proc = _launch(cfg, workers[attempt % len(workers)], attempt > 0, log_path)
        if _wait_for(proc, log_path, "Start training from iteration"):
            # The first kill comes after a checkpoint (so a resume from one is certain), the
            # second soon after the start; after that, most attempts run to the end (each
            # attempt pays ~5 s of start-up).
            if not kills:
                while not (out / "last_checkpoint").exists() and proc.poll() is None:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.4))
            elif len(kills) == 1:
                time.sleep(rng.uniform(0.0, 0.3))
            elif rng.random() < 0.3:
                time.sleep(rng.uniform(0.0, 1.5))
            else:
                proc.wait(timeout=300)
        # else: the previous attempt was killed after writing model_final; nothing to train.
        if proc.poll() is None:
            _kill(proc)
            kills.append(log_path.read_text().count("iter: "))  # iterations done in this attempt
            _assert_last_checkpoint_complete(out)
            continue
        assert proc.returncode == 0, log_path.read_text()[-3000:]
        finished = True
        break
    assert finished, f"not finished after {len(kills)} kills"
    assert len(kills) >= 2, kills
    print(f"killed after {kills} iterations of successive attempts")
    _assert_same_final(reference["out"], str(out))
    log = (out / "log.txt").read_text()
    resumed = log.count("resuming training state from")
    assert resumed + log.count("--resume given but no checkpoint found") == len(kills)
    assert resumed >= 1
    assert "RNG states" not in log and "data sequence differs" not in log
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]  # interrupted saves cleaned up


# ------------------------------------------------------------------ two processes (gloo)
MAX_ITER_2P = 8


def _launch_ranks(cfg, resume, tmp_path, tag):
    """Both ranks of a 2-process run, started by hand (env:// rendezvous), each in its own process group."""
    port, procs, logs = free_port(), [], []
    for rank in range(2):
        env = dict(ENV, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank))
        logs.append(tmp_path / f"{tag}_rank{rank}.log")
        cmd = [sys.executable, TRAIN, "--config-file", cfg] + (["--resume"] if resume else []) + OPTS + [
            "SOLVER.MAX_ITER", str(MAX_ITER_2P), "DIST_TIMEOUT_S", "60"]
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return procs, logs


def _wait_all(procs, logs, timeout=300):
    for p, log in zip(procs, logs):
        assert p.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def _kill_all(procs):
    for p in procs:  # both ranks, as when the job's node dies
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait()


def test_two_process_run_sigkilled_after_a_checkpoint_resumes_bit_identical(tmp_path):
    """Both gloo ranks are SIGKILLed at a random moment after the first checkpoint; a resumed run
    ends with the weights, momentum and schedule of an uninterrupted 2-process run."""
    ref_out = tmp_path / "reference"
    ref_cfg = tiny_yaml(str(tmp_path / "data"), ref_out, MAX_ITER=MAX_ITER_2P, CHECKPOINT_PERIOD=2, STEPS=[5],
                        WARMUP_ITERS=2)
    procs, logs = _launch_ranks(ref_cfg, False, tmp_path, "reference")
    _wait_all(procs, logs)

    out = tmp_path / "out"
    cfg = tiny_yaml(str(tmp_path / "data"), out, MAX_ITER=MAX_ITER_2P, CHECKPOINT_PERIOD=2, STEPS=[5],
                    WARMUP_ITERS=2)
    rng = random.Random(3)
    for attempt in range(5):  # a kill that lands after model_final leaves nothing to test: again
        shutil.rmtree(out, ignore_errors=True)
        procs, logs = _launch_ranks(cfg, False, tmp_path, f"killed{attempt}")
        try:
            deadline = time.time() + 240
            while not (out / "last_checkpoint").exists():
                assert time.time() < deadline, "no checkpoint written"
                assert all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
        finally:
            _kill_all(procs)
        _assert_last_checkpoint_complete(out)
        if not (out / "model_final.pth").exists():
            break
    else:
        pytest.fail("every kill landed after the run had finished")
    last = read_checkpoint(out / (out / "last_checkpoint").read_text().strip())
    killed_at = last["iteration"]
    assert 2 <= killed_at < MAX_ITER_2P and len(last["rng"]) == 2  # both ranks' RNG states

    procs, logs = _launch_ranks(cfg, True, tmp_path, "resumed")
    _wait_all(procs, logs)
    log = (out / "log.txt").read_text()
    assert f"Start training from iteration {killed_at} to {MAX_ITER_2P}" in log, log[-3000:]
    assert "RNG states" not in log and "data sequence differs" not in log
    _assert_same_final(str(ref_out), str(out), max_iter=MAX_ITER_2P)


CHILD = """
import sys, torch
sys.path.insert(0, {root!r})
from maskrcnn.checkpoint import Checkpointer
model = torch.nn.Linear(2048, 2048)  # 16 MiB per file
ckpt = Checkpointer(model, save_dir=sys.argv[1])
for i in range(1, 200):
    with torch.no_grad():
        model.weight.fill_(i)
    ckpt.save(f"model_{{i:07d}}", iteration=i)
"""


def _kill_during_save(out, attempts=20):
    """Kill a real process while it writes a checkpoint (not before, not after the rename)."""
    for _ in range(attempts):
        proc = subprocess.Popen([sys.executable, "-c", CHILD.format(root=ROOT), str(out)], env=ENV)
        try:
            while proc.poll() is None:
                names = os.listdir(out) if out.exists() else []
                done = [f for f in names if f.startswith("model_")]
                tmps = [f for f in names if f.startswith(".model_") and f.endswith(".tmp")] if done else []
                if tmps and os.path.getsize(out / tmps[0]) > 0:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(0.001)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        tmps = [f for f in os.listdir(out) if f.startswith(".model_") and f.endswith(".tmp")]
        if tmps:
            try:
                read_checkpoint(out / tmps[0])
            except CheckpointError:
                return tmps[0]  # killed mid-write: the temporary file is incomplete
        for f in os.listdir(out):
            os.unlink(out / f)
    raise AssertionError(f"no kill landed inside a save in {attempts} attempts")


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    out = tmp_path / "out"
    tmp = _kill_during_save(out)
    being_written = int(tmp.split("_")[1].split(".")[0])
    named = (out / "last_checkpoint").read_text().strip()
    assert int(named[len("model_"):-len(".pth")]) == being_written - 1  # the previous, complete one
    assert not (out / f"model_{being_written:07d}.pth").exists()

    model = torch.nn.Linear(2048, 2048)
    ckpt = Checkpointer(model, save_dir=str(out))
    assert ckpt.resume_or_load("", resume=True) == {"iteration": being_written - 1}
    assert torch.all(model.weight == being_written - 1)  # the previous checkpoint's weights
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")], "the partial file is cleaned up"
