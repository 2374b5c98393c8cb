"""Shared start-up of the command-line tools: arguments, distributed init, config, logging."""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import List

import torch

from .. import _malloc as malloc
from ..config import CfgNode, ConfigError, load_cfg
from ..utils.comm import get_rank, get_world_size, init_distributed, local_rank_from_env_or_arg
from ..utils.logger import setup_logger
from .resume import protect_earlier_run


def default_argument_parser(description: str, training: bool = False) -> argparse.ArgumentParser:
    """``--config-file``, ``--resume``, ``--local_rank`` / ``--local-rank`` and trailing ``KEY VALUE``
    opts; with ``training`` also ``--overwrite``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a YAML config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration)")
    if training:
        parser.add_argument("--overwrite", action="store_true",
                            help="start a new run in an OUTPUT_DIR that holds another run's checkpoints: "
                                 "its checkpoints, last_checkpoint, config.yaml and TensorBoard files are "
                                 "deleted first")
    # torch.distributed.launch passes --local_rank (old) or --local-rank (new); torchrun sets LOCAL_RANK.
    parser.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.0025")
    return parser


def make_output_dir(path: str) -> None:
    """Creates ``OUTPUT_DIR``; one that cannot be created or written is a ConfigError naming the key."""
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(f"cannot write into {path}")
    except OSError as e:
        raise ConfigError(f"OUTPUT_DIR {path} cannot be created or written ({e.strerror or e}). Set "
                          f"OUTPUT_DIR to a folder you can create and write to (e.g. OUTPUT_DIR "
                          f"output/my_run).") from e


def setup(args: argparse.Namespace, name: str = "maskrcnn", training: bool = False) -> CfgNode:
    """Merge the config, initialise distributed mode, create OUTPUT_DIR and the logger.

    The config is read first so that ``DIST_TIMEOUT_S`` bounds every collective, the
    rendezvous included: a rank whose peer died fails within it instead of hanging.

    With ``training`` (``args`` from ``default_argument_parser(..., training=True)``), a start
    without ``--resume`` in an OUTPUT_DIR that holds another run's checkpoints stops here, before
    anything is written (see :func:`maskrcnn.engine.resume.protect_earlier_run`).

    Returns:
        The merged, frozen config.
    """
    local_rank_from_env_or_arg(args.local_rank)
    cfg = load_cfg(args.config_file or None, args.opts)
    init_distributed(timeout_s=float(cfg.DIST_TIMEOUT_S))
    removed = []
    if training:
        removed = protect_earlier_run(cfg.OUTPUT_DIR, resume=args.resume, overwrite=args.overwrite,
                                      weights=cfg.MODEL.WEIGHT)
    output_dir = cfg.OUTPUT_DIR
    if output_dir and get_rank() == 0:
        make_output_dir(output_dir)
    logger = setup_logger("maskrcnn", output_dir, get_rank())
    logger.info("Using %d process(es); command line: %s", get_world_size(), " ".join(sys.argv))
    logger.info("torch %s, CUDA available: %s, oneDNN kernel cache: %s", torch.__version__,
                torch.cuda.is_available(), os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024 (oneDNN's default)"))
    logger.info("glibc malloc: %s", malloc.STATE)
    if args.config_file:
        logger.info("Loaded configuration file %s", args.config_file)
    if removed:
        logger.warning("--overwrite: deleted the earlier run's %s", ", ".join(os.path.basename(f) for f in removed))
    return cfg


_CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*\.[A-Za-z0-9_.]+$")  # e.g. DATASETS.CATALOG.x.ANN_FILE


def dataset_argument_parser(description: str, *, datasets_help: str, opts_help: str) -> argparse.ArgumentParser:
    """``--config-file``, ``--datasets NAME ...`` and trailing ``KEY VALUE`` opts, for the tools that
    work on the datasets of a config (tools/check_dataset.py, tools/visualize_data.py); parse with
    :func:`parse_dataset_args`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to a YAML config")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", default=None, help=datasets_help)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help=opts_help)
    return parser


def parse_dataset_args(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``; in ``--datasets a b KEY VALUE`` argparse gives the ``KEY VALUE``
    pairs to ``--datasets``: they are moved to ``opts``, from the first token that looks like a
    config key (``A.B``, upper-case first part) on."""
    args = parser.parse_args(argv)
    for i, token in enumerate(args.datasets or ()):
        if _CONFIG_KEY.match(token):
            args.datasets, args.opts = args.datasets[:i], args.datasets[i:] + list(args.opts)
            break
    return args


def dataset_names(args: argparse.Namespace, cfg: CfgNode) -> List[str]:
    """The datasets named with ``--datasets``, else those of ``DATASETS.TRAIN`` then ``DATASETS.TEST``;
    each once, in order."""
    return list(dict.fromkeys(args.datasets or (list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))))
