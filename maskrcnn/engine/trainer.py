"""The training step, in the manner of detectron2's ``SimpleTrainer`` + ``HookBase``.

:class:`Trainer` owns the model, the data, the optimizer and the LR scheduler and runs one
iteration at a time. Everything else (checkpoints, evaluation, logging, guards, timing) is a
:class:`HookBase` in :mod:`maskrcnn.engine.hooks`; a new behaviour is a new hook.

Mixed precision (``SOLVER.AMP``) is part of the step: the forward pass runs under
``torch.autocast`` (the heads return float32 predictions, so losses, box decoding and NMS stay
float32) and, for float16, a ``torch.amp.GradScaler`` scales the loss, unscales the gradients
before clipping and skips the optimizer step when they are not finite.
"""
from __future__ import annotations

import logging
import math
from time import perf_counter
from contextlib import nullcontext
from typing import Any, ContextManager, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
from torch import nn

from ..utils.comm import reduce_dict
from ..utils.errors import TrainingStoppedError
from ..utils.metric_logger import MetricLogger

logger = logging.getLogger(__name__)


class NonFiniteLossError(TrainingStoppedError, FloatingPointError):
    """Raised when a loss is NaN or infinite; nothing has been applied to the weights."""


class HookBase:
    """Something done around the iterations of a :class:`Trainer`; override what you need.

    Hooks run in the order they were registered, at each stage. Every rank runs every hook (a
    hook that writes files checks the rank itself). ``self.trainer`` is set on registration.
    """

    trainer: "Trainer"

    def before_train(self) -> None:
        """Once, before the first iteration."""

    def before_step(self) -> None:
        """At the start of each iteration (``trainer.iter`` is the iteration about to run)."""

    def before_update(self) -> None:
        """After the forward pass, before anything is applied to the weights or the schedule.

        ``trainer.loss`` and ``trainer.losses`` hold this iteration's losses, averaged over the
        ranks (so every rank sees the same values and takes the same decision). Raise to stop
        the run with the weights untouched; set ``trainer.skip_update = True`` to skip the
        backward pass and the optimizer step (the iteration, the data and the LR schedule still
        advance).
        """

    def after_step(self) -> None:
        """At the end of each iteration, after the optimizer and scheduler steps."""

    def after_train(self) -> None:
        """Once, after the last iteration (not when an exception stopped the training)."""

    def state_dict(self) -> Dict[str, Any]:
        """Plain data saved with every checkpoint, as top-level entries (use unique names)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore from a resumed checkpoint's entries (all of them; missing names: defaults)."""


class Trainer:
    """Runs SGD iterations on an (optionally DDP-wrapped) detector.

    One iteration (:meth:`run_step`): the next batch; the forward pass giving a dict of losses
    (under autocast when ``amp_dtype`` is set); the losses averaged over the ranks; the
    ``before_update`` hooks; a finiteness check; then, unless skipped, backward, optional
    gradient clipping and the optimizer step (through ``grad_scaler`` when given); and the
    scheduler step, which always happens, so that the schedule stays aligned with the iteration
    numbers.

    Args:
        model: ``model(images, targets)`` returns a dict of scalar losses.
        data_loader: yields ``(images, targets, infos)``, at least ``max_iter - start_iter``
            batches.
        optimizer: stepped once per applied iteration.
        scheduler: an LR scheduler, stepped once per iteration.
        clip_grad_norm: max total L2 norm of the gradients, or None for no clipping.
        amp_dtype: ``torch.float16`` or ``torch.bfloat16`` to run the forward pass under
            ``torch.autocast`` on the model's device type; None: float32.
        grad_scaler: a ``torch.amp.GradScaler`` (float16), or None. Its state is part of
            :meth:`state_dict`, so it is saved in checkpoints and restored on resume.

    Attributes:
        iter: the current iteration, 1-based (``start_iter`` before the first one).
        start_iter, max_iter: the range of :meth:`train`.
        loss: this iteration's total loss (float, averaged over the ranks).
        losses: this iteration's losses by name (floats, averaged over the ranks).
        lr: the learning rate this iteration's step used, of the parameter group holding the
            most parameters (in this project the group of the weights, at ``SOLVER.BASE_LR``
            times the schedule's factor; biases may use another LR).
        skip_update: set by a ``before_update`` hook to skip this iteration's update.
        scaler_skipped: True when the gradient scaler skipped this iteration's optimizer step
            (non-finite gradients; it then halves the loss scale).
        loss_scale: the loss scale this iteration's backward used (1.0 without a scaler).
        data_time: seconds spent waiting for this iteration's batch.
        meters: smoothed losses (applied iterations only) and timings, for the logs.
        scalars: latest values that hooks publish for the logs (e.g. ``nonfinite_skips``).
        hooks: the registered hooks, in order.
    """

    def __init__(self, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, *,
                 clip_grad_norm: Optional[float] = None, amp_dtype: Optional[torch.dtype] = None,
                 grad_scaler: Optional[torch.amp.GradScaler] = None) -> None:
        if amp_dtype not in (None, torch.float16, torch.bfloat16):
            raise ValueError(f"amp_dtype must be torch.float16, torch.bfloat16 or None, got {amp_dtype}")
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.clip_grad_norm = clip_grad_norm
        self.amp_dtype = amp_dtype
        self.grad_scaler = grad_scaler
        self.scaler_skipped = False
        self.loss_scale = self._next_scale = 1.0
        self.hooks: List[HookBase] = []
        self.iter = self.start_iter = self.max_iter = 0
        self.loss = float("nan")
        self.losses: Dict[str, float] = {}
        self.lr = float("nan")
        self.skip_update = False
        self.data_time = 0.0
        self.meters = MetricLogger(delimiter="  ")
        self.scalars: Dict[str, float] = {}
        sizes = [sum(p.numel() for p in g["params"]) for g in optimizer.param_groups]
        self._lr_group = max(range(len(sizes)), key=sizes.__getitem__)
        self._data: Optional[Iterator] = None

    def register_hooks(self, hooks: Sequence[Optional[HookBase]]) -> None:
        """Append ``hooks`` (None entries are ignored); they run in this order."""
        for h in hooks:
            if h is not None:
                h.trainer = self
                self.hooks.append(h)

    def state_dict(self) -> Dict[str, Any]:
        """The hooks' state (see :meth:`HookBase.state_dict`) and the gradient scaler's
        (``grad_scaler``: scale and growth tracker), saved with every checkpoint."""
        state: Dict[str, Any] = {}
        for h in self.hooks:
            state.update(h.state_dict())
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Give a resumed checkpoint's entries to every hook, and restore the gradient scaler
        (a checkpoint without one, e.g. of a float32 run, leaves it fresh)."""
        for h in self.hooks:
            h.load_state_dict(state)
        if self.grad_scaler is not None and state.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state["grad_scaler"])

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter + 1`` to ``max_iter`` (``start_iter`` are already done)."""
        self.iter, self.start_iter, self.max_iter = start_iter, start_iter, max_iter
        logger.info("Start training from iteration %d to %d", start_iter, max_iter)
        self.model.train()
        if self.grad_scaler is not None:
            self._next_scale = self.grad_scaler.get_scale()  # after a resume, the restored scale
            self.scalars["loss_scale"] = self._next_scale
        self._data = iter(self.data_loader)
        try:
            for h in self.hooks:
                h.before_train()
            while self.iter < max_iter:
                self.iter += 1
                for h in self.hooks:
                    h.before_step()
                self.run_step()
                for h in self.hooks:
                    h.after_step()
            for h in self.hooks:
                h.after_train()
        finally:
            self._data = None  # stops the loader's workers

    def run_step(self) -> None:
        """One iteration (see the class docstring)."""
        start = perf_counter()
        try:
            images, targets, _ = next(self._data)
        except StopIteration:
            raise RuntimeError(f"the data loader stopped at iteration {self.iter - 1} before "
                               f"iteration {self.max_iter}") from None
        self.data_time = perf_counter() - start
        with self._autocast():
            loss_dict = self.model(images, targets)
        loss_dict = {k: v.float() for k, v in loss_dict.items()}  # float32 already: no copy
        total = sum(loss_dict.values())
        reduced = reduce_dict({k: v.detach() for k, v in loss_dict.items()})
        reduced_total = sum(reduced.values())
        self.loss = float(reduced_total)
        self.losses = {k: float(v) for k, v in reduced.items()}
        self.skip_update = False
        for h in self.hooks:
            h.before_update()
        if not math.isfinite(self.loss) and not self.skip_update:
            values = ", ".join(f"{k} = {v:.6g}" for k, v in self.losses.items())
            raise NonFiniteLossError(f"Non-finite loss at iteration {self.iter}: {values}; "
                                     "training stopped before this step was applied")
        self.lr = float(self.scheduler.get_last_lr()[self._lr_group])
        self.scaler_skipped = False
        if not self.skip_update:
            self.optimizer.zero_grad(set_to_none=True)
            grad_norm = self._backward_and_update(total)
            self.meters.update(loss=reduced_total, **reduced)
            if grad_norm is not None and not self.scaler_skipped:  # a skipped step's norm is inf / nan
                # reading it back is a second wait for the device per step, after the loss check
                self.meters.update(grad_norm=grad_norm)
        self.scheduler.step()

    def _autocast(self) -> ContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        device = next(self.model.parameters()).device.type
        return torch.autocast(device_type=device, dtype=self.amp_dtype)

    def _clip(self) -> Optional[torch.Tensor]:
        """Clip the gradients when clipping is on; their total norm before clipping, else None."""
        if not self.clip_grad_norm:
            return None
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)

    def _backward_and_update(self, total: torch.Tensor) -> Optional[torch.Tensor]:
        """Backward, clipping and the optimizer step; with a scaler, on the scaled loss. Returns the
        gradient norm before clipping (logged as ``grad_norm``), or None when clipping is off.

        The scaler skips the optimizer step when the gradients are not finite and then lowers
        its scale: a lower scale after ``update`` is how a skipped step is recognised (reading
        the scale waits for the device once per step; ``scaler.step`` itself already does).
        """
        scaler = self.grad_scaler
        if scaler is None:
            total.backward()
            grad_norm = self._clip()
            self.optimizer.step()
            return grad_norm
        self.loss_scale = self._next_scale
        scaler.scale(total).backward()
        if self.clip_grad_norm:
            scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = self._clip()
        scaler.step(self.optimizer)
        scaler.update()
        self._next_scale = scaler.get_scale()
        self.scaler_skipped = self._next_scale < self.loss_scale
        self.scalars["loss_scale"] = self._next_scale
        return grad_norm
