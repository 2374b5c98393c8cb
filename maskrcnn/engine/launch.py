"""Shared start-up of the command-line tools: arguments, distributed init, config, logging."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys

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
    """Initialise distributed mode, merge the config, create OUTPUT_DIR and the logger."""
    local_rank_from_env_or_arg(args.local_rank)
    init_distributed()
    cfg = load_cfg(args.config_file or None, args.opts)
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
