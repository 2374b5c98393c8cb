"""Iteration-based training loop: losses, optimizer step, logging, checkpoints, periodic eval."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Dict, Iterable, Optional

import torch
from torch import nn

from ..checkpoint import Checkpointer
from ..utils.comm import reduce_dict, synchronize
from ..utils.metric_logger import MetricLogger, eta_string

logger = logging.getLogger(__name__)


def _max_memory_mb() -> float:
    """Peak CUDA memory allocated, or on the CPU the process's peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # Windows
        return 0.0


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss is NaN or infinite; nothing has been applied to the weights."""


def non_finite_message(iteration: int, losses: Dict[str, float], base_lr: float, ims_per_batch: int,
                       warmup_iters: int) -> str:
    """The error text: which losses, at which iteration, and what to try."""
    values = ", ".join(f"{k} = {v:.6g}" for k, v in losses.items())
    suggested = 0.02 * ims_per_batch / 16
    return (f"Non-finite loss at iteration {iteration}: {values}. Training stopped before this step "
            f"was applied; the last checkpoint is intact. This usually means the learning rate is too "
            f"high: SOLVER.BASE_LR is {base_lr:g} for SOLVER.IMS_PER_BATCH {ims_per_batch} (the COCO "
            f"recipe uses 0.02 for 16 images, i.e. about {suggested:g} for your batch: scale the LR "
            f"linearly with the batch size). Try a lower SOLVER.BASE_LR, a longer SOLVER.WARMUP_ITERS "
            f"(now {warmup_iters}), or SOLVER.CLIP_GRADIENTS.ENABLED True; also check the data for "
            f"degenerate boxes (tools/check_dataset.py).")


class Trainer:
    """Runs SGD iterations on an (optionally DDP-wrapped) detector.

    Args:
        model: returns a dict of losses for ``model(images, targets)``.
        data_loader: yields ``(images, targets, infos)``, exactly ``max_iter - start_iter`` batches.
        optimizer, scheduler: stepped once per iteration.
        checkpointer: saves ``model_XXXXXXX.pth`` / ``model_final.pth``.
        max_iter, checkpoint_period, log_period: in iterations.
        writer: TensorBoard writer (rank 0) or None.
        eval_fn: ``eval_fn(iteration) -> dict`` run every ``eval_period`` iterations.
        clip_grad_norm: max total gradient norm, or None.
        checkpoint_extra: plain data saved with every checkpoint (e.g. categories).
        solver_hint: (BASE_LR, IMS_PER_BATCH, WARMUP_ITERS) for the non-finite loss message.
        max_nonfinite_skips: iterations with a non-finite loss that are skipped before the run
            stops (``SOLVER.MAX_NONFINITE_SKIPS``); 0 stops at the first. A skipped iteration
            applies no update (no backward, no optimizer step) but still counts: the iteration
            number, the data position and the LR schedule advance as if it had run, so the
            schedule stays aligned with the iteration numbers and a resume stays exact.
        state_fn: ``state_fn(iteration) -> dict`` of plain data added to every checkpoint at save
            time (RNG states, data position); called on every rank (it may gather).
        inject_nonfinite_at: TEST ONLY: iterations whose losses are replaced by NaN, to exercise
            the non-finite path in real runs (see ``run.py``); empty in normal use.

    Attributes:
        nonfinite_skips: non-finite iterations skipped so far, over the whole run (a resumed run
            sets it from the checkpoint before :meth:`train`).
    """

    def __init__(self, *, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 scheduler, checkpointer: Checkpointer, max_iter: int, checkpoint_period: int,
                 log_period: int = 20, writer=None, eval_fn: Optional[Callable[[int], dict]] = None,
                 eval_period: int = 0, clip_grad_norm: Optional[float] = None,
                 checkpoint_extra: Optional[dict] = None, solver_hint=(0.0, 0, 0),
                 max_nonfinite_skips: int = 0, state_fn: Optional[Callable[[int], dict]] = None,
                 inject_nonfinite_at: Iterable[int] = ()) -> None:
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.checkpointer = checkpointer
        self.max_iter = max_iter
        self.checkpoint_period = checkpoint_period
        self.log_period = log_period
        self.writer = writer
        self.eval_fn = eval_fn
        self.eval_period = eval_period
        self.clip_grad_norm = clip_grad_norm
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.solver_hint = solver_hint
        self.max_nonfinite_skips = int(max_nonfinite_skips)
        self.state_fn = state_fn
        self.inject_nonfinite_at = frozenset(int(i) for i in inject_nonfinite_at)
        self.nonfinite_skips = 0
        self.meters = MetricLogger(delimiter="  ")

    def train(self, start_iter: int = 0) -> None:
        """Iterate from ``start_iter`` (iterations already done) to ``max_iter``."""
        logger.info("Start training from iteration %d to %d", start_iter, self.max_iter)
        self.model.train()
        start = time.time()
        end = time.time()
        iteration = start_iter
        for iteration, (images, targets, _) in enumerate(self.data_loader, start_iter + 1):
            data_time = time.time() - end
            self._step(iteration, images, targets)
            batch_time = time.time() - end
            end = time.time()
            self.meters.update(time=batch_time, data=data_time)
            if iteration % self.log_period == 0 or iteration == self.max_iter:
                self._log(iteration, start_iter, start)
            if iteration % self.checkpoint_period == 0 and iteration != self.max_iter:
                self._save(f"model_{iteration:07d}", iteration)
            if self.eval_fn and self.eval_period > 0 and iteration % self.eval_period == 0 \
                    and iteration != self.max_iter:
                self.evaluate(iteration)
                end = time.time()
            if iteration >= self.max_iter:
                break
        if iteration != self.max_iter:
            raise RuntimeError(f"the data loader stopped at iteration {iteration} before "
                               f"SOLVER.MAX_ITER {self.max_iter}")
        self._save("model_final", self.max_iter)
        total = time.time() - start
        done = max(1, self.max_iter - start_iter)
        logger.info("Total training time: %s (%.4f s / it)", eta_string(total), total / done)

    def _step(self, iteration: int, images, targets) -> None:
        loss_dict = self.model(images, targets)
        if iteration in self.inject_nonfinite_at:
            loss_dict = {k: v * float("nan") for k, v in loss_dict.items()}
        total = sum(loss_dict.values())
        # Reduced values are identical on every rank, so all ranks skip or stop together.
        reduced = reduce_dict({k: v.detach() for k, v in loss_dict.items()})
        reduced_total = sum(reduced.values())
        if not torch.isfinite(reduced_total):
            self._skip_non_finite(iteration, {k: float(v) for k, v in reduced.items()})
            self.scheduler.step()  # the iteration counts (see the class docstring)
            return
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.clip_grad_norm:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.meters.update(loss=reduced_total, **reduced)

    def _skip_non_finite(self, iteration: int, values: Dict[str, float]) -> None:
        """Count a non-finite iteration; raise NonFiniteLossError once the bound is exceeded."""
        self.nonfinite_skips += 1
        if self.nonfinite_skips > self.max_nonfinite_skips:
            base_lr, ims, warmup = self.solver_hint
            msg = non_finite_message(iteration, values, base_lr, ims, warmup)
            if self.max_nonfinite_skips > 0:
                msg += (f" This is non-finite iteration {self.nonfinite_skips} of the run; "
                        f"SOLVER.MAX_NONFINITE_SKIPS is {self.max_nonfinite_skips}.")
            raise NonFiniteLossError(msg)
        logger.warning("Non-finite loss at iteration %d (%s): iteration skipped, no update applied "
                       "(%d of SOLVER.MAX_NONFINITE_SKIPS %d)", iteration,
                       ", ".join(f"{k} = {v:.6g}" for k, v in values.items()),
                       self.nonfinite_skips, self.max_nonfinite_skips)
        if self.writer is not None:
            self.writer.add_scalars({"train/nonfinite_skips": self.nonfinite_skips}, iteration)

    def _log(self, iteration: int, start_iter: int, start: float) -> None:
        done = iteration - start_iter
        eta = (time.time() - start) / done * (self.max_iter - iteration)
        lr = self.optimizer.param_groups[0]["lr"]
        for g in self.optimizer.param_groups:
            if g.get("name") == "weight":
                lr = g["lr"]
        mem = _max_memory_mb()
        skips = [f"nonfinite skips: {self.nonfinite_skips}"] if self.nonfinite_skips else []
        logger.info(self.meters.delimiter.join([
            f"eta: {eta_string(eta)}", f"iter: {iteration}", str(self.meters), f"lr: {lr:.6f}",
            f"max mem: {mem:.0f}M"] + skips))
        if self.writer is not None:
            scalars = {f"train/{k}": m.median for k, m in self.meters.meters.items() if k.startswith("loss")}
            scalars.update({"train/lr": lr, "train/time": self.meters.meters["time"].median,
                            "train/data_time": self.meters.meters["data"].median})
            if self.max_nonfinite_skips > 0:
                scalars["train/nonfinite_skips"] = self.nonfinite_skips
            self.writer.add_scalars(scalars, iteration)

    def _save(self, name: str, iteration: int) -> None:
        """Called on every rank: the barrier makes rank 0 write only once all ranks finished
        ``iteration``, and ``state_fn`` may gather per-rank state."""
        synchronize()
        extra = dict(self.checkpoint_extra, nonfinite_skips=self.nonfinite_skips)
        if self.state_fn is not None:
            extra.update(self.state_fn(iteration))
        self.checkpointer.save(name, iteration=iteration, **extra)

    def evaluate(self, iteration: int) -> dict:
        """Run ``eval_fn``, record its metrics in TensorBoard, return them."""
        results = self.eval_fn(iteration) if self.eval_fn else {}
        self._log_eval(results, iteration)
        self.model.train()
        return results

    def _log_eval(self, results: dict, iteration: int) -> None:
        if self.writer is not None and results:
            scalars = {}
            for dataset, metrics in results.items():
                for iou_type, values in metrics.items():
                    for k, v in values.items():
                        if isinstance(v, (int, float)) and math.isfinite(v):
                            scalars[f"eval/{dataset}/{iou_type}/{k}"] = v
            self.writer.add_scalars(scalars, iteration)
            self.writer.flush()
