"""What a run carries over besides the weights: the seed, every rank's RNG states saved for resume,
the position in the data, and whether a start may write into an ``OUTPUT_DIR`` (resume versus
fresh start).

A checkpoint holds one RNG state per rank (:func:`get_rng_states`, gathered to rank 0 by
:func:`training_state`) and the data position (:func:`data_state`); a resumed run restores them
(:func:`restore_rng_states`, :func:`check_data_position`) and ends with the same weights, bit for
bit, as an uninterrupted one.
"""
from __future__ import annotations

import glob
import logging
import os
import random
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from ..config import CfgNode, ConfigError
from ..utils.comm import gather_to_main, get_rank, get_world_size, is_main_process

logger = logging.getLogger(__name__)

__all__ = ["check_data_position", "data_state", "get_rng_states", "protect_earlier_run",
           "restore_rng_states", "resumed_seed", "seed_all", "set_rng_states", "training_state",
           "with_seed"]


def _from_main(value: Any) -> Any:
    """Rank 0's ``value``, on every rank (works on gloo and nccl)."""
    if get_world_size() > 1:
        holder = [value]
        torch.distributed.broadcast_object_list(holder, src=0)
        value = holder[0]
    return value


def seed_all(seed: int) -> int:
    """Seed Python, NumPy and torch with ``seed + rank``; a negative seed draws one on rank 0.

    Returns:
        The base seed, the same on every rank (record it: see :func:`with_seed`).
    """
    seed = int(seed)
    if seed < 0:
        seed = _from_main(int.from_bytes(os.urandom(4), "little") % (2 ** 31))
    rank_seed = seed + get_rank()
    random.seed(rank_seed)
    np.random.seed(rank_seed % (2 ** 32))
    torch.manual_seed(rank_seed)
    logger.info("Random seed: %d", seed)
    return seed


def with_seed(cfg: CfgNode, seed: int) -> CfgNode:
    """A frozen copy of ``cfg`` whose ``SEED`` is ``seed``: the config a run saves and the data
    loader reads, so that a drawn seed is recorded in ``config.yaml``."""
    out = cfg.clone()
    out.defrost()
    out.SEED = int(seed)
    out.freeze()
    return out


def resumed_seed(requested: int, drawn: int, extra: Dict[str, Any]) -> int:
    """The seed a resumed run continues with: the checkpoint's, unless ``SEED`` names another.

    Args:
        requested: ``SEED`` as configured (negative: draw one).
        drawn: the seed :func:`seed_all` returned for it.
        extra: the resumed checkpoint's entries.
    """
    saved = extra.get("seed")
    if saved is None or saved == drawn:
        return drawn
    if requested < 0:
        logger.info("Resuming with the checkpoint's random seed %d", saved)
        return int(saved)
    logger.warning("SEED %d differs from the checkpoint's seed %d: the resumed run does not "
                   "reproduce the interrupted one", requested, saved)
    return drawn


def get_rng_states() -> Dict[str, Any]:
    """This process' Python, NumPy, torch CPU (and CUDA) RNG states as plain data.

    Only tensors, ints, floats, strings and None: a checkpoint holding them loads with
    ``torch.load(weights_only=True)``.
    """
    version, mt, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    states: Dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64, device="cpu"),
                   "gauss_next": gauss_next},
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_states` returned (CUDA only when the device count matches)."""
    py = states["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    n = states["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("checkpoint has CUDA RNG states for %d devices, this process sees %d: "
                           "CUDA RNG not restored", len(cuda), torch.cuda.device_count())


def restore_rng_states(extra: Dict[str, Any]) -> None:
    """Set this rank's RNG states from a resumed checkpoint (saved as one entry per rank)."""
    states = extra.get("rng")
    if not isinstance(states, list) or len(states) != get_world_size():
        logger.warning("The checkpoint has no RNG states for %d process(es): random sampling after "
                       "the resume differs from an uninterrupted run", get_world_size())
        return
    set_rng_states(states[get_rank()])


def data_state(loader, iteration: int) -> Dict[str, int]:
    """Seed, epoch and batch of the training sequence after ``iteration`` batches, plus its sizes.

    Args:
        loader: the training loader of ``maskrcnn.data.build_train_loader``.
        iteration: batches consumed.
    """
    state = loader.batch_sampler.state_at(iteration)
    state.update(world_size=get_world_size(), dataset_size=len(loader.dataset))
    return state


def check_data_position(extra: Dict[str, Any], now: Dict[str, int]) -> None:
    """Warn when the resumed loader's position differs from the one saved in the checkpoint."""
    saved = extra.get("data")
    if saved is None:
        return
    if saved != now:
        logger.warning("The data sequence differs from the interrupted run's (checkpoint: %s, now: %s): "
                       "SEED, SOLVER.IMS_PER_BATCH, the number of processes or the dataset changed",
                       saved, now)
    else:
        logger.info("Data: resuming at epoch %d, batch %d of the same sequence",
                    now["epoch"], now["batch_in_epoch"])


def training_state(loader) -> Callable[[int], Dict[str, Any]]:
    """``state(iteration)``: every rank's RNG states (gathered to rank 0) and the data position,
    for a checkpoint; call it on every rank."""
    def state(iteration: int) -> Dict[str, Any]:
        return {"rng": gather_to_main(get_rng_states()), "data": data_state(loader, iteration)}
    return state


# What a training run writes in OUTPUT_DIR besides log.txt and inference/: its checkpoints (with
# the temporary files of an interrupted save), its config and its TensorBoard events.
_CHECKPOINTS = ("last_checkpoint", "model_*.pth")
_RUN_FILES = _CHECKPOINTS + ("config.yaml", "events.out.tfevents.*", ".model_*.pth.*.tmp",
                             ".last_checkpoint.*.tmp")


def _matching(output_dir: str, patterns) -> List[str]:
    root = glob.escape(output_dir)
    return sorted({f for p in patterns for f in glob.glob(os.path.join(root, p)) if os.path.isfile(f)})


def _check_or_clear(output_dir: str, overwrite: bool, weights: str) -> List[str]:
    found = _matching(output_dir, _CHECKPOINTS)
    if not found:
        return []
    names = ", ".join(os.path.basename(f) for f in found[:4]) + (", ..." if len(found) > 4 else "")
    if not overwrite:
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} holds the checkpoints of an earlier run ({names}) and --resume "
            f"was not given; nothing was written. Choose one: (1) add --resume to continue that run; "
            f"(2) set another OUTPUT_DIR (e.g. OUTPUT_DIR {output_dir.rstrip(os.sep)}_2) to keep it "
            f"and start a new one; (3) add --overwrite to delete its checkpoints, last_checkpoint, "
            f"config.yaml and TensorBoard files and start a new run in this folder.")
    doomed = _matching(output_dir, _RUN_FILES)
    if weights and os.path.realpath(weights) in {os.path.realpath(f) for f in doomed}:
        raise ConfigError(f"MODEL.WEIGHT {weights} is one of the files that --overwrite deletes in "
                          f"OUTPUT_DIR {output_dir}: copy it out of that folder first, or set "
                          f"another OUTPUT_DIR; nothing was written.")
    for f in doomed:
        os.unlink(f)
    return doomed


def protect_earlier_run(output_dir: str, *, resume: bool, overwrite: bool,
                        weights: Optional[str] = "") -> List[str]:
    """Refuse a fresh start in an ``OUTPUT_DIR`` that holds another run's checkpoints.

    Call it before anything is written (log file included). Rank 0 looks; every rank gets its
    decision, so all of them stop, or go on, together.

    Args:
        output_dir: ``OUTPUT_DIR``.
        resume: ``--resume`` was given: the run continues the earlier one (allowed).
        overwrite: ``--overwrite`` was given: the earlier run's checkpoints, ``last_checkpoint``,
            ``config.yaml`` and TensorBoard event files are deleted (its ``log.txt`` and
            ``inference/`` stay).
        weights: ``MODEL.WEIGHT``; refused with ``overwrite`` if it is one of the deleted files.

    Returns:
        The files deleted (with ``overwrite``), else ``[]``.

    Raises:
        ConfigError: checkpoints are there and neither ``resume`` nor ``overwrite``; the message
            gives the three ways out.
    """
    outcome: Any = []
    if is_main_process() and output_dir and not resume and os.path.isdir(output_dir):
        try:
            outcome = _check_or_clear(output_dir, overwrite, weights or "")
        except ConfigError as e:
            outcome = str(e)
    outcome = _from_main(outcome)
    if isinstance(outcome, str):
        raise ConfigError(outcome)
    return list(outcome)
