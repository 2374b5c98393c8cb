"""Many processes without torchrun's variables: tools/slurm_train.sh through a fake ``srun`` that
starts the tasks locally with slurm's variables (2-process gloo training), and torchrun with
``--nnodes 2 --rdzv-backend c10d`` (two agents on this machine) through ``init_distributed``."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import yaml

from maskrcnn.data.datasets.shapes import ensure_shapes_dataset
from maskrcnn.utils.comm import DEFAULT_SLURM_PORT_BASE
from conftest import write_tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAKE_SRUN = textwrap.dedent("""\
    #!{python}
    # A stand-in for slurm's srun: starts --ntasks local processes with slurm's variables.
    import json, os, subprocess, sys, time
    args = sys.argv[1:]
    opts = {{}}
    while args and args[0].startswith("--"):
        key, _, value = args.pop(0)[2:].partition("=")
        opts[key] = value
    with open(os.environ["FAKE_SRUN_RECORD"], "w") as f:
        json.dump({{"opts": opts, "command": args}}, f)
    n = int(opts["ntasks"])
    env = {{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}}
    procs = []
    for i in range(n):
        task = dict(env, SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_NODEID="0", SLURM_NTASKS=str(n),
                    SLURM_STEP_NUM_TASKS=str(n), SLURM_STEP_ID="0", SLURM_JOB_ID=os.environ["FAKE_JOB_ID"],
                    SLURM_STEP_NODELIST="localhost", SLURM_JOB_NODELIST="localhost",
                    SLURM_JOB_NAME=opts.get("job-name", ""))
        procs.append(subprocess.Popen(args, env=task))
    while any(p.poll() is None for p in procs):
        if opts.get("kill-on-bad-exit") == "1" and any(p.poll() not in (None, 0) for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    sys.exit(max(p.returncode for p in procs))
""")


def _job_id_with_free_port():
    """A job id whose default master port (20000 + id % 10000) is free here."""
    for job in range(4321, 4321 + 500):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", DEFAULT_SLURM_PORT_BASE + job % 10000))
                return job
            except OSError:
                continue
    raise RuntimeError("no free port")


def test_slurm_train_sh_runs_two_gloo_processes_through_srun(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN.format(python=sys.executable))
    srun.chmod(0o755)
    train = ensure_shapes_dataset(str(tmp_path / "data"), "train", 6, 0)
    val = ensure_shapes_dataset(str(tmp_path / "data"), "val", 4, 1)
    out = tmp_path / "out"
    cfg = write_tiny_config(tmp_path / "cfg.yaml", {"toy_train": train, "toy_val": val}, ["toy_train"], ["toy_val"],
                            out, MAX_ITER=2)
    record = tmp_path / "srun.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", GPUS="2", GPUS_PER_NODE="2", CPUS_PER_TASK="1",
               SRUN_ARGS="--time=10 --account=me", PYTHON=sys.executable, OMP_NUM_THREADS="1",
               FAKE_SRUN_RECORD=str(record), FAKE_JOB_ID=str(_job_id_with_free_port()))
    proc = subprocess.run(["bash", os.path.join(ROOT, "tools", "slurm_train.sh"), "part1", "job1", cfg,
                           "SOLVER.STEPS", "(1, 2)"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    srun_call = json.loads(record.read_text())
    assert srun_call["opts"] == {"partition": "part1", "job-name": "job1", "gres": "gpu:2", "ntasks": "2",
                                 "ntasks-per-node": "2", "cpus-per-task": "1", "kill-on-bad-exit": "1",
                                 "time": "10", "account": "me"}
    assert srun_call["command"][0] == sys.executable and srun_call["command"][2].endswith("train_net.py")
    assert srun_call["command"][3:5] == ["--config-file", cfg]
    assert srun_call["command"][-2:] == ["SOLVER.STEPS", "(1, 2)"]  # quoting kept
    log = (out / "log.txt").read_text()
    assert "Using 2 process(es)" in log
    assert log.count("Start training from iteration 0 to 2") == 1  # rank 0 logs, rank 1 does not
    assert yaml.safe_load((out / "config.yaml").read_text())["SOLVER"]["STEPS"] == [1, 2]
    assert (out / "model_final.pth").is_file()
    assert (out / "inference" / "toy_val" / "metrics.json").is_file()


WORKER = textwrap.dedent("""
    import json, os, sys
    from maskrcnn.utils import comm
    assert comm.init_distributed(backend="gloo", timeout_s=60)
    ranks = comm.all_gather(comm.get_rank())
    with open(os.path.join(sys.argv[1], f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump({"rank": comm.get_rank(), "world": comm.get_world_size(), "local": comm.get_local_rank(),
                   "all": ranks}, f)
    comm.synchronize()  # then exit as train_net.py does: comm destroys the group at exit (else SIGABRT)
""")


def test_torchrun_two_nodes_with_c10d_rendezvous(tmp_path):
    """Two torchrun agents (as on two machines) meet at a c10d rendezvous; slurm's variables, present
    in the environment as inside an allocation, do not override torchrun's."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", SLURM_PROCID="7", SLURM_NTASKS="9",
               SLURM_STEP_NUM_TASKS="9", SLURM_LOCALID="5")
    def agent(is_host):  # as on two machines: the first hosts the rendezvous store
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "job7",
               "--rdzv-conf", f"is_host={is_host},join_timeout=240,read_timeout=240", str(script), str(tmp_path)]
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    agents = [agent(1), agent(0)]
    try:
        outputs = [a.communicate(timeout=400)[0] for a in agents]
    except subprocess.TimeoutExpired:
        for a in agents:
            a.kill()
        raise AssertionError("torchrun agents hung:\n" + "\n".join(a.communicate()[0][-2000:] for a in agents))
    assert all(a.returncode == 0 for a in agents), outputs
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in results] == [2, 2]
    assert [r["local"] for r in results] == [0, 0]  # one process per "node"
    assert results[0]["all"] == [0, 1]
