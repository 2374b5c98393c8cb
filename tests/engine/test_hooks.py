"""The trainer's step and its hooks, in process, on a small real model with a real optimizer and
LR schedule. Faults are injected by wrapping the model."""
import math

import pytest
import torch
from torch import nn

from maskrcnn.engine.hooks import (DivergenceError, DivergenceGuard, IterationTimer, MetricsWriter,
                                   NonFiniteGuard)
from maskrcnn.engine.trainer import HookBase, NonFiniteLossError, Trainer
from maskrcnn.solver import WarmupMultiStepLR
from maskrcnn.utils.events import TensorboardWriter

ADVICE = dict(base_lr=0.1, ims_per_batch=4, warmup_iters=3)


class Regression(nn.Module):
    """``model(images, targets)`` -> two losses, like the detector's dict."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 1)

    def forward(self, x, y):
        err = self.linear(x).squeeze(1) - y
        return {"loss_a": (err ** 2).mean(), "loss_b": err.abs().mean()}


class ScaleAt(nn.Module):
    """Wraps a model: multiplies its losses by ``factor`` at the given (1-based) calls."""

    def __init__(self, model, at, factor):
        super().__init__()
        self.model, self.at, self.factor, self.calls = model, set(at), factor, 0

    def forward(self, x, y):
        self.calls += 1
        losses = self.model(x, y)
        return {k: v * self.factor for k, v in losses.items()} if self.calls in self.at else losses


def _data(n):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, generator=g), torch.randn(8, generator=g), None) for _ in range(n)]


def _trainer(model, n=6, clip=None, lr=0.1):
    inner = model.model if isinstance(model, ScaleAt) else model
    optimizer = torch.optim.SGD(inner.parameters(), lr=lr)  # no momentum: a step is -lr * grad
    scheduler = WarmupMultiStepLR(optimizer, [4], 0.1, warmup_factor=0.25, warmup_iters=3)
    return Trainer(model, _data(n), optimizer, scheduler, clip_grad_norm=clip)


def _linear(model):
    return (model.model if isinstance(model, ScaleAt) else model).linear


class Record(HookBase):
    """Weights and LR after each step, and the LR the step used (read from the weights)."""

    def before_train(self):
        self.rows = []

    def before_step(self):
        self.weights = _linear(self.trainer.model).weight.detach().clone()

    def after_step(self):
        t = self.trainer
        linear = _linear(t.model)
        used = ((self.weights - linear.weight.detach()) / linear.weight.grad).mean().item()
        self.rows.append((t.iter, t.lr, used, t.scheduler.get_last_lr()[0]))


def test_the_lr_reported_for_an_iteration_is_the_one_its_step_used():
    trainer = _trainer(Regression())
    rec = Record()
    trainer.register_hooks([rec])
    trainer.train(0, 6)
    expected = [0.1 * 0.25, 0.1 * 0.5, 0.1 * 0.75, 0.1, 0.01, 0.01]  # warmup 3, then step at 4
    for (it, logged, used, next_lr), want in zip(rec.rows, expected):
        assert logged == pytest.approx(want) and used == pytest.approx(want, rel=1e-4), it
    assert rec.rows[0][3] == pytest.approx(0.05)  # after the step, the scheduler already shows the next


def test_hooks_run_in_order_and_after_train_only_on_success():
    calls = []

    class Log(HookBase):
        def __init__(self, name):
            self.name = name

        def before_train(self):
            calls.append((self.name, "before_train"))

        def after_step(self):
            calls.append((self.name, self.trainer.iter))

        def after_train(self):
            calls.append((self.name, "after_train"))

    trainer = _trainer(Regression(), n=2)
    trainer.register_hooks([Log("a"), None, Log("b")])
    trainer.train(0, 2)
    assert calls == [("a", "before_train"), ("b", "before_train"), ("a", 1), ("b", 1), ("a", 2), ("b", 2),
                     ("a", "after_train"), ("b", "after_train")]
    calls.clear()
    trainer = _trainer(Regression(), n=1)
    trainer.register_hooks([Log("a")])
    with pytest.raises(RuntimeError, match="data loader stopped at iteration 1 before iteration 3"):
        trainer.train(0, 3)
    assert ("a", "after_train") not in calls


def test_a_bare_trainer_never_applies_a_non_finite_step():
    trainer = _trainer(ScaleAt(Regression(), [2], float("nan")))
    before = {}

    class Keep(HookBase):
        def before_update(self):
            before["w"] = self.trainer.model.model.linear.weight.detach().clone()

    trainer.register_hooks([Keep()])
    with pytest.raises(NonFiniteLossError, match="iteration 2: loss_a = nan"):
        trainer.train(0, 6)
    assert torch.equal(trainer.model.model.linear.weight, before["w"])
    assert trainer.scheduler.last_epoch == 1


def test_non_finite_guard_skips_up_to_the_bound_then_stops_with_advice():
    trainer = _trainer(ScaleAt(Regression(), [2, 4], float("inf")))
    guard = NonFiniteGuard(1, **ADVICE)
    trainer.register_hooks([guard])
    with pytest.raises(NonFiniteLossError) as e:
        trainer.train(0, 6)
    msg = str(e.value)
    assert "Non-finite loss at iteration 4" in msg and "SOLVER.BASE_LR is 0.1" in msg
    assert "non-finite iteration 2 of the run; SOLVER.MAX_NONFINITE_SKIPS is 1" in msg
    assert trainer.scheduler.last_epoch == 3  # iteration 2 was skipped but counted, 4 never applied
    assert guard.state_dict() == {"nonfinite_skips": 2} and trainer.scalars["nonfinite_skips"] == 2
    restored = NonFiniteGuard(1, **ADVICE)
    restored.load_state_dict({"nonfinite_skips": 1})
    assert restored.skips == 1


@pytest.mark.parametrize("clip", [None, 1.0], ids=["no-clipping", "clipping"])
def test_divergence_guard_stops_before_the_step_with_or_without_clipping(clip):
    trainer = _trainer(ScaleAt(Regression(), [5], 1e6), clip=clip)
    guard = DivergenceGuard(10, 3, clip_grad_norm=clip, **ADVICE)
    rec = Record()
    trainer.register_hooks([guard, rec])
    with pytest.raises(DivergenceError) as e:
        trainer.train(0, 6)
    msg = str(e.value)
    assert "diverges at iteration 5" in msg and "SOLVER.DIVERGENCE.FACTOR 10" in msg
    assert "first 3 iteration(s)" in msg and "SOLVER.BASE_LR is 0.1" in msg and "WARMUP_ITERS" in msg
    assert ("Gradient clipping is on" in msg) == (clip is not None)
    assert trainer.scheduler.last_epoch == 4 and len(rec.rows) == 4
    assert torch.equal(trainer.model.model.linear.weight, rec.weights)  # step 5 not applied
    assert guard.state_dict()["divergence_reference"] == pytest.approx(guard.reference) and len(guard.reference) == 3


class ScriptedLoss(nn.Module):
    """A model whose total loss at call i is ``values[i - 1]``."""

    def __init__(self, values):
        super().__init__()
        self.p, self.values, self.calls = nn.Parameter(torch.zeros(())), list(values), 0

    def forward(self, x, y):
        self.calls += 1
        return {"loss_x": self.p * 0 + self.values[self.calls - 1]}


def test_divergence_guard_compares_with_the_median_of_the_losses_seen_so_far():
    # Running medians of the reference (first 3 finite losses): 4, 17, 4, 4, 4, 4.
    values = [4.0, 30.0, 3.0, 39.0, float("nan"), 0.5, 40.01]
    model = ScriptedLoss(values)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, _data(len(values)), optimizer,
                      WarmupMultiStepLR(optimizer, [100], warmup_iters=0))
    guard = DivergenceGuard(10, 3, **ADVICE)
    trainer.register_hooks([NonFiniteGuard(1, **ADVICE), guard])
    with pytest.raises(DivergenceError, match="iteration 7: 40.01 is more than SOLVER.DIVERGENCE.FACTOR 10 times 4,"):
        trainer.train(0, len(values))
    assert guard.reference == [4.0, 30.0, 3.0]
    fresh = DivergenceGuard(10, 3, **ADVICE)
    fresh.load_state_dict(trainer.state_dict())
    assert fresh.reference == [4.0, 30.0, 3.0]
    with pytest.raises(ValueError, match="FACTOR must be > 1"):
        DivergenceGuard(1.0, 3, **ADVICE)


def test_metrics_writer_logs_the_step_lr_and_published_scalars(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = _trainer(ScaleAt(Regression(), [3], float("nan")))
    writer = TensorboardWriter(str(tmp_path))
    trainer.register_hooks([NonFiniteGuard(2, **ADVICE), IterationTimer(), MetricsWriter(2, writer)])
    with caplog.at_level("INFO", logger="maskrcnn"):
        trainer.train(0, 5)
    writer.close()
    lines = [r.getMessage() for r in caplog.records if "iter: " in r.getMessage()]
    assert [line.split("iter: ")[1].split()[0] for line in lines] == ["2", "4", "5"]
    assert "lr: 0.050000" in lines[0] and "nonfinite skips: 1" in lines[1] and "time: " in lines[0]
    assert "nonfinite skips" not in lines[0]
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    lr = {e.step: e.value for e in acc.Scalars("train/lr")}
    assert lr == pytest.approx({2: 0.05, 4: 0.1, 5: 0.01})
    skips = {e.step: e.value for e in acc.Scalars("train/nonfinite_skips")}
    assert skips == {2: 0, 3: 1, 4: 1, 5: 1}  # written at the skip too, not only every period
    assert math.isfinite(acc.Scalars("train/loss")[-1].value)


class GradNorms(HookBase):
    """The logged ``grad_norm`` and the norm of the gradients the step applied."""

    def before_train(self):
        self.rows = []

    def after_step(self):
        t = self.trainer
        applied = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad)
                                                        for p in t.model.parameters()]))
        logged = t.meters.grad_norm.latest if "grad_norm" in t.meters.meters else None
        self.rows.append((logged, applied.item()))


@pytest.mark.parametrize("clip", [None, 1e9, 0.01])
def test_grad_norm_is_logged_before_clipping_when_clipping_is_on(clip):
    trainer = _trainer(Regression(), n=4, clip=clip)
    record = GradNorms()
    trainer.register_hooks([record])
    trainer.train(0, 4)
    assert len(record.rows) == 4
    if clip is None:
        assert all(logged is None for logged, _ in record.rows)
        return
    for logged, applied in record.rows:
        if clip == 1e9:  # nothing clipped: the logged norm is the applied gradients' norm
            assert logged == pytest.approx(applied, rel=1e-6)
        else:  # clipped to 0.01: the log shows how far above the limit the gradient was
            assert applied == pytest.approx(clip, rel=1e-4) and logged > 10 * clip
