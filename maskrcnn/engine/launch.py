"""Shared start-up of the command-line tools: arguments, distributed init, config, logging."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from typing import Any, Dict

import numpy as np
import torch

from ..config import CfgNode, load_cfg
from ..utils.comm import get_rank, get_world_size, init_distributed, local_rank_from_env_or_arg
from ..utils.logger import setup_logger


def default_argument_parser(description: str) -> argparse.ArgumentParser:
    """``--config-file``, ``--resume``, ``--local_rank`` / ``--local-rank`` and trailing ``KEY VALUE`` opts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a YAML config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration)")
    # torch.distributed.launch passes --local_rank (old) or --local-rank (new); torchrun sets LOCAL_RANK.
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.0025")
    return parser


def setup(args: argparse.Namespace, name: str = "maskrcnn") -> CfgNode:
    """Merge the config, initialise distributed mode, create OUTPUT_DIR and the logger.

    The config is read first so that ``DIST_TIMEOUT_S`` bounds every collective, the
    rendezvous included: a rank whose peer died fails within it instead of hanging.
    """
    local_rank_from_env_or_arg(args.local_rank)
    cfg = load_cfg(args.config_file or None, args.opts)
    init_distributed(timeout_s=float(cfg.DIST_TIMEOUT_S))
    output_dir = cfg.OUTPUT_DIR
    if output_dir and get_rank() == 0:
        os.makedirs(output_dir, exist_ok=True)
    logger = setup_logger("maskrcnn", output_dir, get_rank())
    logger.info("Using %d process(es); command line: %s", get_world_size(), " ".join(sys.argv))
    logger.info("torch %s, CUDA available: %s", torch.__version__, torch.cuda.is_available())
    if args.config_file:
        logger.info("Loaded configuration file %s", args.config_file)
    return cfg


def seed_all(seed: int) -> int:
    """Seed Python, NumPy and torch (offset by rank); a negative seed draws one. Returns the base seed."""
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") % (2 ** 31)
        # Every rank needs the same base seed.
        if get_world_size() > 1:
            holder = [seed]
            torch.distributed.broadcast_object_list(holder, src=0)  # works on gloo and nccl
            seed = int(holder[0])
    rank_seed = seed + get_rank()
    random.seed(rank_seed)
    np.random.seed(rank_seed % (2 ** 32))
    torch.manual_seed(rank_seed)
    logging.getLogger("maskrcnn").info("Random seed: %d", seed)
    return seed


def get_rng_states() -> Dict[str, Any]:
    """This process' Python, NumPy, torch CPU (and CUDA) RNG states as plain data.

    Only tensors, ints, floats, strings and None: a checkpoint holding them loads with
    ``torch.load(weights_only=True)``.
    """
    version, mt, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    states: Dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64),
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
            logging.getLogger("maskrcnn").warning(
                "checkpoint has CUDA RNG states for %d devices, this process sees %d: CUDA RNG "
                "not restored", len(cuda), torch.cuda.device_count())
