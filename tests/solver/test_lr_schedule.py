"""Warmup + multi-step / cosine schedules and the optimizer's parameter groups."""
import logging
import math

import pytest
import torch
from torch import nn

from maskrcnn.config import ConfigError, get_cfg, load_cfg
from maskrcnn.solver import WarmupCosineLR, WarmupMultiStepLR, make_lr_scheduler, make_optimizer


def _lrs(scheduler, optimizer, n):
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _opt(lr=1.0):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_linear_warmup_then_steps():
    opt = _opt()
    sched = WarmupMultiStepLR(opt, milestones=(6, 8), gamma=0.1, warmup_factor=0.2, warmup_iters=4,
                              warmup_method="linear")
    lrs = _lrs(sched, opt, 10)
    expected = [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    assert lrs == pytest.approx(expected)


def test_constant_warmup():
    opt = _opt()
    sched = WarmupMultiStepLR(opt, milestones=(100,), warmup_factor=0.5, warmup_iters=3, warmup_method="constant")
    assert _lrs(sched, opt, 5) == pytest.approx([0.5, 0.5, 0.5, 1.0, 1.0])


def test_cosine_reaches_end_factor():
    opt = _opt()
    sched = WarmupCosineLR(opt, max_iters=10, end_factor=0.1, warmup_iters=0)
    lrs = _lrs(sched, opt, 11)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_scheduler_state_round_trip_keeps_the_position():
    opt = _opt()
    sched = WarmupMultiStepLR(opt, milestones=(5,), warmup_iters=2)
    _lrs(sched, opt, 7)
    opt2 = _opt()
    sched2 = WarmupMultiStepLR(opt2, milestones=(5,), warmup_iters=2)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) == pytest.approx(0.1)


def test_unsorted_milestones_rejected():
    with pytest.raises(ValueError, match="increasing"):
        WarmupMultiStepLR(_opt(), milestones=(8, 6))


def test_optimizer_groups_bias_lr_and_decay():
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.BIAS_LR_FACTOR = 2
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    opt = make_optimizer(cfg, model)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["bias"]["lr"] == pytest.approx(0.02) and groups["bias"]["weight_decay"] == 0.0
    assert groups["weight"]["lr"] == pytest.approx(0.01) and groups["weight"]["weight_decay"] == 1e-4
    assert groups["norm"]["weight_decay"] == 0.0
    params = [p for g in opt.param_groups for p in g["params"]]
    assert all(p is not model[0].weight for p in params), "frozen parameters are not optimised"
    assert len(params) == 5  # conv bias, GN weight+bias, linear weight+bias
    sched = make_lr_scheduler(cfg, opt)
    assert isinstance(sched, WarmupMultiStepLR)
    cfg.SOLVER.LR_SCHEDULER = "WarmupCosineLR"
    assert isinstance(make_lr_scheduler(cfg, opt), WarmupCosineLR)
    cfg.SOLVER.LR_SCHEDULER = "Nope"
    with pytest.raises(ValueError, match="LR_SCHEDULER"):
        make_lr_scheduler(cfg, opt)


def test_steps_not_below_max_iter_are_named_in_a_warning(caplog):
    """Issue 10 #5: SOLVER.STEPS beyond MAX_ITER silently never decayed the LR."""
    cfg = get_cfg()
    cfg.SOLVER.MAX_ITER = 100
    cfg.SOLVER.STEPS = (60, 100, 250)
    opt = _opt()
    with caplog.at_level(logging.WARNING, logger="maskrcnn.solver.build"):
        sched = make_lr_scheduler(cfg, opt)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("SOLVER.STEPS (60, 100, 250): 100, 250 are not below SOLVER.MAX_ITER 100")
    assert sched.milestones == [60, 100, 250]  # a warning, not a change
    caplog.clear()
    cfg.SOLVER.STEPS = (60, 99)  # 99: the LR of iteration 100 (the last) is decayed
    with caplog.at_level(logging.WARNING, logger="maskrcnn.solver.build"):
        make_lr_scheduler(cfg, _opt())
        cfg.SOLVER.STEPS, cfg.SOLVER.LR_SCHEDULER = (500,), "WarmupCosineLR"  # the builder, not load_cfg: no warning
        make_lr_scheduler(cfg, _opt())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("opts,words", [
    (["SOLVER.LR_SCHEDULER", "WarmupCosineLR", "SOLVER.STEPS", "(50, 80)"],
     ["SOLVER.STEPS = (50, 80)", "not used", "'WarmupCosineLR'", "remove SOLVER.STEPS"]),
    (["SOLVER.LR_SCHEDULER", "WarmupCosineLR", "SOLVER.STEPS", "(50,)", "SOLVER.GAMMA", "0.5"],
     ["SOLVER.STEPS", "SOLVER.GAMMA = 0.5", "remove SOLVER.STEPS and SOLVER.GAMMA"]),
    (["SOLVER.COSINE_END_FACTOR", "0.1"],
     ["SOLVER.COSINE_END_FACTOR = 0.1", "not used", "'WarmupMultiStepLR'", "GAMMA at each of STEPS"]),
])
def test_the_other_schedulers_keys_are_refused(opts, words):
    with pytest.raises(ConfigError) as e:
        load_cfg(opts=opts)
    assert all(w in str(e.value) for w in words), str(e.value)
    # Each schedule with its own keys is accepted.
    load_cfg(opts=["SOLVER.LR_SCHEDULER", "WarmupCosineLR", "SOLVER.COSINE_END_FACTOR", "0.1"])
    load_cfg(opts=["SOLVER.STEPS", "(50, 80)", "SOLVER.GAMMA", "0.5"])
