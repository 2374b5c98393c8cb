"""SOLVER.REFERENCE_WORLD_SIZE: the COCO 1x schedule of 8 processes run on 2, 16 and 8."""
import logging

import pytest

from maskrcnn.config import ConfigError, load_cfg
from maskrcnn.solver.scaling import auto_scale_workers

COCO_1X = ["SOLVER.REFERENCE_WORLD_SIZE", "8", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.BASE_LR", "0.02",
           "SOLVER.MAX_ITER", "90000", "SOLVER.STEPS", "(60000, 80000)", "SOLVER.WARMUP_ITERS", "1000",
           "SOLVER.CHECKPOINT_PERIOD", "5000", "TEST.EVAL_PERIOD", "10000"]


def _solver(cfg):
    s = cfg.SOLVER
    return (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, tuple(s.STEPS), s.WARMUP_ITERS, s.CHECKPOINT_PERIOD,
            cfg.TEST.EVAL_PERIOD, s.REFERENCE_WORLD_SIZE)


def test_fewer_processes_smaller_batch_and_lr_longer_schedule(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("maskrcnn"), "propagate", True)  # setup_logger elsewhere may clear it
    cfg = load_cfg(None, COCO_1X)
    with caplog.at_level(logging.INFO, logger="maskrcnn"):
        scaled = auto_scale_workers(cfg, 2)
    assert _solver(scaled) == (4, pytest.approx(0.005), 360000, (240000, 320000), 4000, 20000, 40000, 2)
    assert _solver(cfg)[:2] == (16, 0.02)  # the input is not modified
    assert scaled.is_frozen()
    for text in ("8 -> 2 processes", "IMS_PER_BATCH 16 -> 4", "BASE_LR 0.02 -> 0.005", "MAX_ITER 90000 -> 360000",
                 "STEPS (60000, 80000) -> (240000, 320000)", "WARMUP_ITERS 1000 -> 4000",
                 "CHECKPOINT_PERIOD 5000 -> 20000"):
        assert text in caplog.text, text
    assert auto_scale_workers(scaled, 2) is scaled  # the reference now says 2: nothing more to do


def test_more_processes_and_rounding():
    cfg = load_cfg(None, COCO_1X)
    assert _solver(auto_scale_workers(cfg, 16)) == (32, pytest.approx(0.04), 45000, (30000, 40000), 500, 2500,
                                                    5000, 16)
    three = auto_scale_workers(cfg, 3)  # 16 * 3/8 = 6 images; iterations rounded
    assert _solver(three) == (6, pytest.approx(0.0075), 240000, (160000, 213333), 2667, 13333, 26667, 3)
    tiny = load_cfg(None, ["SOLVER.REFERENCE_WORLD_SIZE", "1", "SOLVER.IMS_PER_BATCH", "2",
                           "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.WARMUP_ITERS", "0", "TEST.EVAL_PERIOD", "0"])
    scaled = auto_scale_workers(tiny, 4)
    assert (scaled.SOLVER.CHECKPOINT_PERIOD, scaled.SOLVER.WARMUP_ITERS, scaled.TEST.EVAL_PERIOD) == (1, 0, 0)


def test_off_by_default_and_when_equal():
    cfg = load_cfg(None, [])
    assert cfg.SOLVER.REFERENCE_WORLD_SIZE == 0
    assert auto_scale_workers(cfg, 4) is cfg
    same = load_cfg(None, COCO_1X)
    assert auto_scale_workers(same, 8) is same


def test_a_batch_that_does_not_split_is_refused():
    cfg = load_cfg(None, ["SOLVER.REFERENCE_WORLD_SIZE", "3", "SOLVER.IMS_PER_BATCH", "16"])
    with pytest.raises(ConfigError, match=r"SOLVER.IMS_PER_BATCH \(16\) must be a multiple of "
                                          r"SOLVER.REFERENCE_WORLD_SIZE \(3\)"):
        auto_scale_workers(cfg, 2)
    with pytest.raises(ConfigError, match="REFERENCE_WORLD_SIZE must be >= 0"):
        auto_scale_workers(load_cfg(None, ["SOLVER.REFERENCE_WORLD_SIZE", "-1"]), 2)
