"""Helpers around :mod:`torch.distributed`.

All functions degrade gracefully to single-process behaviour when
``torch.distributed`` is unavailable or has not been initialised.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import re
import shutil
import subprocess
from typing import Any, Dict, Mapping, Optional

import torch
import torch.distributed as dist

__all__ = [
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather_to_main",
    "reduce_dict",
    "init_distributed",
    "local_rank_from_env_or_arg",
    "slurm_launch_env",
    "export_slurm_env",
    "first_slurm_host",
]

logger = logging.getLogger(__name__)


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Returns the number of processes in the default group (1 if not distributed)."""
    return dist.get_world_size() if _is_dist() else 1


def get_rank() -> int:
    """Returns the global rank of this process (0 if not distributed)."""
    return dist.get_rank() if _is_dist() else 0


def get_local_rank() -> int:
    """Returns the rank of this process on its machine.

    Reads the ``LOCAL_RANK`` environment variable set by the launcher.

    Returns:
        The local rank, 0 when the variable is unset.
    """
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """Returns True on global rank 0."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; no-op when not distributed or world size 1."""
    if not _is_dist() or dist.get_world_size() == 1:
        return
    if dist.get_backend() == "nccl" and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_gather(obj: Any) -> list[Any]:
    """Gathers an arbitrary picklable object from every rank.

    Args:
        obj: Any picklable object.

    Returns:
        A list with one entry per rank, ordered by rank.
    """
    world = get_world_size()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any) -> list[Any] | None:
    """Gathers an arbitrary picklable object onto rank 0.

    Args:
        obj: Any picklable object.

    Returns:
        On rank 0 a list with one entry per rank; ``None`` on other ranks.
    """
    world = get_world_size()
    if world == 1:
        return [obj]
    rank = get_rank()
    out: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def reduce_dict(d: dict[str, torch.Tensor], average: bool = True) -> dict[str, torch.Tensor]:
    """Sums (or averages) a dict of scalar tensors over all ranks.

    Every rank receives the reduced values (all-reduce), so the result is
    correct on rank 0 and on all other ranks.

    Args:
        d: Mapping from name to scalar (0-dim or 1-element) tensor. All ranks
            must pass the same keys.
        average: Divide the sum by the world size.

    Returns:
        A new dict with the same keys holding the reduced 0-dim tensors.
    """
    world = get_world_size()
    if world < 2:
        return dict(d)
    with torch.no_grad():
        names = sorted(d.keys())
        values = torch.stack([d[k].detach().reshape(()).float() for k in names])
        dist.all_reduce(values)
        if average:
            values /= world
        return {k: v for k, v in zip(names, values)}


def init_distributed(backend: str | None = None, timeout_s: float = 1800) -> bool:
    """Initialises the default process group from launcher environment variables.

    Understands the variables set by ``torchrun`` (also with ``--nnodes N
    --rdzv-backend c10d``: its agents set them per process) and by
    ``python -m torch.distributed.launch --use_env``: ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
    Without them, the processes of an ``srun`` step are understood too
    (:func:`export_slurm_env`).

    When a process dies, the others must not hang: ``timeout_s`` bounds the
    rendezvous and every collective (gloo raises once it passes, or at once
    when the peer's connection closes), and for nccl
    ``TORCH_NCCL_ASYNC_ERROR_HANDLING=1`` (unless set already) makes the
    watchdog abort the process when a collective times out.

    Args:
        backend: Process-group backend; ``"nccl"`` if CUDA is available else
            ``"gloo"`` when ``None``.
        timeout_s: Timeout of the rendezvous and of collective operations in
            seconds (config ``DIST_TIMEOUT_S``).

    Returns:
        True if a process group was initialised (or already was), False when
        running single-process (``WORLD_SIZE`` unset or 1).
    """
    export_slurm_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if _is_dist():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = get_local_rank()
    if torch.cuda.is_available():
        # Modulo: a slurm task bound to one GPU (--gpus-per-task=1) sees it as device 0.
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    rank = int(os.environ.get("RANK", "0"))
    if backend == "nccl":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        world_size=world,
        rank=rank,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    # A group still alive when the interpreter exits can abort the process (SIGABRT from gloo's
    # threads), which a multi-node torchrun agent reports as a failed run after it succeeded.
    atexit.register(_destroy_at_exit)
    logger.info(
        "initialised distributed: backend=%s rank=%d/%d local_rank=%d timeout=%gs",
        backend, rank, world, local_rank, timeout_s,
    )
    synchronize()
    return True


def _destroy_at_exit() -> None:
    """Destroys the default process group, if any (local: no collective, so it cannot hang on a dead peer)."""
    if _is_dist():
        dist.destroy_process_group()


def local_rank_from_env_or_arg(arg_value: int | None) -> int:
    """Resolves the local rank from ``LOCAL_RANK`` or a ``--local_rank`` argument.

    The environment variable wins. When only the argument is given it is
    exported as ``LOCAL_RANK`` so that later code can rely on the variable.

    Args:
        arg_value: Value of a ``--local_rank``/``--local-rank`` CLI argument.

    Returns:
        The local rank, 0 if neither source provides one.
    """
    env = os.environ.get("LOCAL_RANK")
    if env is not None and env != "":
        return int(env)
    if arg_value is not None:
        os.environ["LOCAL_RANK"] = str(int(arg_value))
        return int(arg_value)
    return 0


# ---------------------------------------------------------------------------------- slurm
DEFAULT_SLURM_PORT_BASE = 20000


def first_slurm_host(nodelist: str) -> str:
    """The first host of a slurm node list, compressed (``"gpu[003-005,010],cpu1"``) or not.

    ``scontrol show hostnames`` is asked when it is installed; otherwise the list is parsed:
    the first comma-separated entry (commas inside brackets do not count), each bracket
    group replaced by its first number, zero padding kept (``"gpu[003-005]"`` -> ``"gpu003"``).
    """
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30)
            if out.returncode == 0 and out.stdout.split():
                return out.stdout.split()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            end = i
            break
    first = nodelist[:end].strip()
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], first)


def slurm_launch_env(env: Mapping[str, str]) -> Optional[Dict[str, str]]:
    """The torchrun-style variables of a process started by ``srun``, or None.

    Used only when ``RANK`` / ``WORLD_SIZE`` are absent (torchrun's variables win) and the
    process belongs to an ``srun`` step (``SLURM_STEP_NUM_TASKS``, or ``SLURM_NTASKS`` with
    ``SLURM_STEP_ID``): a batch script or ``salloc`` shell carries ``SLURM_PROCID`` and the
    job's ``SLURM_NTASKS`` but starts one process, which must not wait for absent peers.

    Mapping: ``RANK`` <- ``SLURM_PROCID``, ``WORLD_SIZE`` <- ``SLURM_STEP_NUM_TASKS`` (the
    step's tasks; else ``SLURM_NTASKS``), ``LOCAL_RANK`` <- ``SLURM_LOCALID``, ``MASTER_ADDR``
    <- first host of ``SLURM_STEP_NODELIST`` / ``SLURM_JOB_NODELIST`` / ``SLURM_NODELIST``,
    ``MASTER_PORT`` <- ``20000 + SLURM_JOB_ID % 10000`` (two jobs sharing a node get different
    ports). ``MASTER_ADDR`` and ``MASTER_PORT`` already set are kept.

    Args:
        env: the environment, e.g. ``os.environ``.

    Returns:
        The variables to set, or None when this is not an srun process (or torchrun's run).
    """
    if "RANK" in env or "WORLD_SIZE" in env or "SLURM_PROCID" not in env:
        return None
    world = env.get("SLURM_STEP_NUM_TASKS") or (env.get("SLURM_NTASKS") if "SLURM_STEP_ID" in env else None)
    if not world:
        return None
    out = {"RANK": str(int(env["SLURM_PROCID"])), "WORLD_SIZE": str(int(world)),
           "LOCAL_RANK": str(int(env.get("SLURM_LOCALID", "0")))}
    if not env.get("MASTER_ADDR"):
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        out["MASTER_ADDR"] = first_slurm_host(nodelist) if nodelist else "127.0.0.1"
    if not env.get("MASTER_PORT"):
        job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or "0"
        out["MASTER_PORT"] = str(DEFAULT_SLURM_PORT_BASE + int(re.sub(r"\D", "", job) or 0) % 10000)
    return out


def export_slurm_env() -> bool:
    """Sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` from
    slurm's variables in an ``srun`` process (see :func:`slurm_launch_env`).

    ``LOCAL_RANK`` given by ``--local_rank`` is kept. Returns True when the variables were set.
    """
    found = slurm_launch_env(os.environ)
    if found is None:
        return False
    if os.environ.get("LOCAL_RANK"):
        found.pop("LOCAL_RANK")
    os.environ.update(found)
    logger.info("srun process: rank %s of %s, local rank %s, master %s:%s", found["RANK"], found["WORLD_SIZE"],
                os.environ["LOCAL_RANK"] if "LOCAL_RANK" in os.environ else "0",
                os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    return True
