"""``SOLVER.REFERENCE_WORLD_SIZE``: a schedule written for N processes, run on M.

As detectron2's ``DefaultTrainer.auto_scale_workers``: the batch size and the learning rate
scale linearly with ``M / N`` (the linear scaling rule, Goyal et al. 2017), and every
iteration count (``MAX_ITER``, ``STEPS``, ``WARMUP_ITERS``, ``CHECKPOINT_PERIOD``,
``TEST.EVAL_PERIOD``) inversely, so the run sees the same number of images at each point of
the schedule. ``0`` (the default) turns it off.
"""
from __future__ import annotations

import logging

from ..config import CfgNode, ConfigError

__all__ = ["auto_scale_workers"]

logger = logging.getLogger(__name__)


def _iters(value: int, scale: float) -> int:
    """An iteration count divided by ``scale``, rounded; a positive count stays positive."""
    return max(1, int(round(value / scale))) if value > 0 else int(value)


def auto_scale_workers(cfg: CfgNode, world_size: int) -> CfgNode:
    """The config rescaled from ``SOLVER.REFERENCE_WORLD_SIZE`` processes to ``world_size``.

    With ``scale = world_size / REFERENCE_WORLD_SIZE``: ``IMS_PER_BATCH`` and ``BASE_LR`` are
    multiplied by ``scale``; ``MAX_ITER``, ``STEPS``, ``WARMUP_ITERS``,
    ``CHECKPOINT_PERIOD`` and ``TEST.EVAL_PERIOD`` divided by it (rounded; 0 stays 0, a
    period never drops to 0). ``REFERENCE_WORLD_SIZE`` becomes ``world_size``, so scaling
    the result again changes nothing. The scaled values are logged.

    Args:
        cfg: the config; it is not modified.
        world_size: the number of processes of this run.

    Returns:
        ``cfg`` itself when the reference is 0 or equal to ``world_size``; otherwise a new,
        frozen config.

    Raises:
        ConfigError: ``IMS_PER_BATCH`` is not a multiple of ``REFERENCE_WORLD_SIZE``, or the
            reference is negative.
    """
    reference = int(cfg.SOLVER.REFERENCE_WORLD_SIZE)
    if reference < 0:
        raise ConfigError(f"SOLVER.REFERENCE_WORLD_SIZE must be >= 0 (0: off), got {reference}")
    if reference == 0 or reference == world_size:
        return cfg
    s = cfg.SOLVER
    if s.IMS_PER_BATCH % reference != 0:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH ({s.IMS_PER_BATCH}) must be a multiple of "
                          f"SOLVER.REFERENCE_WORLD_SIZE ({reference}): it is the total batch of "
                          f"{reference} processes")
    scale = world_size / reference
    out = cfg.clone()
    out.defrost()
    o = out.SOLVER
    o.IMS_PER_BATCH = int(round(s.IMS_PER_BATCH * scale))
    o.BASE_LR = s.BASE_LR * scale
    o.MAX_ITER = _iters(s.MAX_ITER, scale)
    o.STEPS = tuple(_iters(step, scale) for step in s.STEPS)
    o.WARMUP_ITERS = _iters(s.WARMUP_ITERS, scale)
    o.CHECKPOINT_PERIOD = _iters(s.CHECKPOINT_PERIOD, scale)
    out.TEST.EVAL_PERIOD = _iters(cfg.TEST.EVAL_PERIOD, scale)
    o.REFERENCE_WORLD_SIZE = int(world_size)
    out.freeze()
    logger.info("SOLVER.REFERENCE_WORLD_SIZE %d -> %d processes: IMS_PER_BATCH %d -> %d, BASE_LR %g -> %g, "
                "MAX_ITER %d -> %d, STEPS %s -> %s, WARMUP_ITERS %d -> %d, CHECKPOINT_PERIOD %d -> %d, "
                "TEST.EVAL_PERIOD %d -> %d", reference, world_size, s.IMS_PER_BATCH, o.IMS_PER_BATCH,
                s.BASE_LR, o.BASE_LR, s.MAX_ITER, o.MAX_ITER, tuple(s.STEPS), tuple(o.STEPS),
                s.WARMUP_ITERS, o.WARMUP_ITERS, s.CHECKPOINT_PERIOD, o.CHECKPOINT_PERIOD,
                cfg.TEST.EVAL_PERIOD, out.TEST.EVAL_PERIOD)
    return out
