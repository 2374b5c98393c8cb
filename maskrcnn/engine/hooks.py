"""What happens around the training step, one hook per behaviour (see :class:`~.trainer.HookBase`).

- :class:`NonFiniteGuard`: NaN / inf losses are skipped up to a bound, then stop the run.
- :class:`DivergenceGuard`: a finite loss far above its early median stops the run.
- :class:`IterationTimer`: step and data times, total training time.
- :class:`MetricsWriter`: the periodic log line and the TensorBoard scalars.
- :class:`PeriodicCheckpointer`: ``model_XXXXXXX.pth`` every period and ``model_final.pth``.
- :class:`EvalHook`: evaluation every period during training and at the end; metrics, per-class AP,
  precision-recall curves and pictures of a few images to TensorBoard.

The guards decide in ``before_update``, i.e. before the step is applied, on losses averaged over
the ranks, so every rank stops (or skips) at the same iteration.

:class:`~.proposal_visualizer.ProposalVisualizer` (ground truth | top RPN proposals of one training
image) has its own module.
"""
from __future__ import annotations

import logging
import math
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import torch

from ..utils.comm import synchronize
from ..utils.errors import TrainingStoppedError
from ..utils.events import TensorboardWriter
from ..utils.metric_logger import eta_string
from .inference import DatasetEvaluation
from .trainer import HookBase, NonFiniteLossError

if TYPE_CHECKING:
    from ..checkpoint import Checkpointer

logger = logging.getLogger(__name__)

__all__ = ["DivergenceError", "DivergenceGuard", "EvalHook", "IterationTimer", "MetricsWriter",
           "NonFiniteGuard", "PeriodicCheckpointer", "lr_advice"]


class DivergenceError(TrainingStoppedError, FloatingPointError):
    """Raised when the loss diverges while staying finite; nothing of that step was applied."""


def lr_advice(base_lr: float, ims_per_batch: int, warmup_iters: int, optimizer: str = "SGD") -> str:
    """What to try when the loss blows up: the LR (for SGD, scaled with the batch) and the warmup."""
    if optimizer == "AdamW":
        usual = ("AdamW's usual LRs are about 1e-4 to 1e-3, and they are not scaled linearly with the "
                 "batch size")
    else:
        usual = (f"the COCO recipe uses 0.02 for 16 images, i.e. about {0.02 * ims_per_batch / 16:g} for "
                 f"your batch: scale the LR linearly with the batch size")
    return (f"This usually means the learning rate is too high: SOLVER.BASE_LR is {base_lr:g} for "
            f"SOLVER.IMS_PER_BATCH {ims_per_batch} with SOLVER.OPTIMIZER {optimizer} ({usual}). Try a "
            f"lower SOLVER.BASE_LR, a longer SOLVER.WARMUP_ITERS (now {warmup_iters})")


def _values(losses: Dict[str, float]) -> str:
    return ", ".join(f"{k} = {v:.6g}" for k, v in losses.items())


class NonFiniteGuard(HookBase):
    """Skips iterations whose loss is NaN or infinite, at most ``max_skips`` over the whole run.

    A skipped iteration applies no update (no backward, no optimizer step) but counts: the
    iteration number, the data position and the LR schedule advance as if it had run, so a
    resume stays exact. One more non-finite iteration raises :class:`NonFiniteLossError` with
    advice. The count is saved in checkpoints (``nonfinite_skips``).

    With float16 AMP, a step that the gradient scaler skips (non-finite gradients,
    :attr:`Trainer.scaler_skipped`) is such an iteration too, in the same count and bound, when
    the loss scale it used was at most :attr:`SCALER_FLOOR` (1.0): there the float16 gradients
    themselves overflow. At a higher scale a skip is the scaler calibrating (it halves the scale
    and the next step retries: expected in the first iterations and after each growth of the
    scale), so it is only logged; gradients that stay non-finite reach the floor within about 16
    iterations from the initial scale 2**16, and count from there.

    Args:
        max_skips: ``SOLVER.MAX_NONFINITE_SKIPS``; 0 stops at the first non-finite loss.
        base_lr, ims_per_batch, warmup_iters, optimizer: the solver settings the advice names.
    """

    SCALER_FLOOR = 1.0

    def __init__(self, max_skips: int, *, base_lr: float, ims_per_batch: int, warmup_iters: int,
                 optimizer: str = "SGD") -> None:
        self.max_skips = int(max_skips)
        self.advice = (base_lr, ims_per_batch, warmup_iters, optimizer)
        self.skips = 0

    def before_train(self) -> None:
        if self.max_skips > 0 or self.skips:
            self.trainer.scalars["nonfinite_skips"] = self.skips

    def before_update(self) -> None:
        t = self.trainer
        if math.isfinite(t.loss):
            return
        self.skips += 1
        t.scalars["nonfinite_skips"] = self.skips
        if self.skips > self.max_skips:
            msg = (f"Non-finite loss at iteration {t.iter}: {_values(t.losses)}. Training stopped "
                   f"before this step was applied; the last checkpoint is intact. "
                   f"{lr_advice(*self.advice)}, or SOLVER.CLIP_GRADIENTS.ENABLED True; also check "
                   f"the data for degenerate boxes (tools/check_dataset.py).")
            if self.max_skips > 0:
                msg += (f" This is non-finite iteration {self.skips} of the run; "
                        f"SOLVER.MAX_NONFINITE_SKIPS is {self.max_skips}.")
            raise NonFiniteLossError(msg)
        logger.warning("Non-finite loss at iteration %d (%s): iteration skipped, no update applied "
                       "(%d of SOLVER.MAX_NONFINITE_SKIPS %d)", t.iter, _values(t.losses),
                       self.skips, self.max_skips)
        t.skip_update = True

    def after_step(self) -> None:
        t = self.trainer
        if not t.scaler_skipped:
            return
        if t.loss_scale > self.SCALER_FLOOR:
            logger.info("Iteration %d: non-finite float16 gradients at loss scale %g; the gradient "
                        "scaler skipped the step and lowered the scale (not counted above scale %g)",
                        t.iter, t.loss_scale, self.SCALER_FLOOR)
            return
        self.skips += 1
        t.scalars["nonfinite_skips"] = self.skips
        what = (f"Non-finite gradients at iteration {t.iter} at float16 loss scale {t.loss_scale:g} "
                f"(losses {_values(t.losses)}): the gradient scaler skipped the step")
        if self.skips > self.max_skips:
            raise NonFiniteLossError(
                f"{what}. Training stopped; the last checkpoint is intact. {lr_advice(*self.advice)}, "
                f"SOLVER.CLIP_GRADIENTS.ENABLED True, or SOLVER.AMP.DTYPE bfloat16 (no float16 "
                f"overflow). This is non-finite iteration {self.skips} of the run; "
                f"SOLVER.MAX_NONFINITE_SKIPS is {self.max_skips}.")
        logger.warning("%s, no update applied (%d of SOLVER.MAX_NONFINITE_SKIPS %d)", what,
                       self.skips, self.max_skips)

    def state_dict(self) -> Dict[str, Any]:
        return {"nonfinite_skips": self.skips}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.skips = int(state.get("nonfinite_skips", 0))


class DivergenceGuard(HookBase):
    """Stops the run when the total loss exceeds ``factor`` times its early median.

    The reference is the median of the first ``reference_iters`` finite losses of the run; from
    the second iteration on, each loss is compared with the median of those seen so far (a
    loss that explodes within a few iterations is caught too). It works whether or not the
    gradients are clipped: clipping bounds each SGD step (not an AdamW one, whose size follows the
    LR), not the divergence. Non-finite losses are left to :class:`NonFiniteGuard`. The reference
    is saved in checkpoints (``divergence_reference``).

    Args:
        factor: ``SOLVER.DIVERGENCE.FACTOR``.
        reference_iters: ``SOLVER.DIVERGENCE.REFERENCE_ITERS``.
        base_lr, ims_per_batch, warmup_iters, optimizer: the solver settings the advice names.
        clip_grad_norm: the clipping norm, or None; named in the message.
    """

    def __init__(self, factor: float, reference_iters: int, *, base_lr: float, ims_per_batch: int,
                 warmup_iters: int, optimizer: str = "SGD", clip_grad_norm: Optional[float] = None) -> None:
        if factor <= 1 or reference_iters < 1:
            raise ValueError(f"SOLVER.DIVERGENCE.FACTOR must be > 1 and REFERENCE_ITERS >= 1, got "
                             f"{factor} and {reference_iters}")
        self.factor = float(factor)
        self.reference_iters = int(reference_iters)
        self.advice = (base_lr, ims_per_batch, warmup_iters, optimizer)
        self.clip_grad_norm = clip_grad_norm
        self.reference: List[float] = []

    def before_update(self) -> None:
        loss = self.trainer.loss
        if not math.isfinite(loss):
            return
        if self.reference:
            median = statistics.median(self.reference)
            if loss > self.factor * median:
                raise DivergenceError(self._message(loss, median))
        if len(self.reference) < self.reference_iters:
            self.reference.append(loss)

    def _message(self, loss: float, median: float) -> str:
        t = self.trainer
        optimizer = self.advice[-1]
        bounds = ("with AdamW it does not bound the step, whose size follows the LR" if optimizer == "AdamW"
                  else "it bounds each step, not the divergence")
        clip = (f" Gradient clipping is on (SOLVER.CLIP_GRADIENTS.MAX_NORM {self.clip_grad_norm:g}): "
                f"{bounds}." if self.clip_grad_norm else "")
        return (f"The loss diverges at iteration {t.iter}: {loss:.6g} is more than "
                f"SOLVER.DIVERGENCE.FACTOR {self.factor:g} times {median:.6g}, the median loss of "
                f"the first {len(self.reference)} iteration(s) ({_values(t.losses)}). Training "
                f"stopped before this step was applied; the last checkpoint is intact.{clip} "
                f"{lr_advice(*self.advice)}. (To turn this check off: SOLVER.DIVERGENCE.ENABLED False.)")

    def state_dict(self) -> Dict[str, Any]:
        return {"divergence_reference": list(self.reference)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.reference = [float(v) for v in state.get("divergence_reference", [])]


class IterationTimer(HookBase):
    """Meters ``time`` (one iteration, its data included) and ``data``; logs the total time."""

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        self.trainer.meters.update(time=time.perf_counter() - self._step_start, data=self.trainer.data_time)

    def after_train(self) -> None:
        total = time.perf_counter() - self._train_start
        done = max(1, self.trainer.max_iter - self.trainer.start_iter)
        logger.info("Total training time: %s (%.4f s / it)", eta_string(total), total / done)


def _max_memory_mb() -> float:
    """Peak CUDA memory allocated, or on the CPU the process's peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # Windows
        return 0.0


class MetricsWriter(HookBase):
    """Every ``period`` iterations and at the last one: the log line and TensorBoard scalars.

    The log line shows ETA, iteration, each meter (window median and global average), the LR
    that this iteration's step used (:attr:`Trainer.lr`), peak memory, and the trainer's
    non-zero ``scalars``. TensorBoard gets ``train/<loss>`` (medians), ``train/lr``,
    ``train/time``, ``train/data_time`` and ``train/<scalar>``; a scalar that changes between
    two log lines is also written at the iteration where it changed.

    Args:
        period: ``SOLVER.LOG_PERIOD``.
        writer: the TensorBoard writer (rank 0), or None.
    """

    def __init__(self, period: int, writer: Optional[TensorboardWriter] = None) -> None:
        self.period = int(period)
        self.writer = writer
        self._written: Dict[str, float] = {}

    def before_train(self) -> None:
        self._train_start = time.time()
        self._written = dict(self.trainer.scalars)

    def after_step(self) -> None:
        t = self.trainer
        if t.iter % self.period == 0 or t.iter == t.max_iter:
            self._log()
        elif self.writer is not None:
            changed = {f"train/{k}": v for k, v in t.scalars.items() if self._written.get(k) != v}
            if changed:
                self.writer.add_scalars(changed, t.iter)
        self._written = dict(t.scalars)

    def _log(self) -> None:
        t = self.trainer
        eta = (time.time() - self._train_start) / (t.iter - t.start_iter) * (t.max_iter - t.iter)
        shown = [f"{k.replace('_', ' ')}: {v:g}" for k, v in t.scalars.items() if v]
        logger.info(t.meters.delimiter.join([
            f"eta: {eta_string(eta)}", f"iter: {t.iter}", str(t.meters), f"lr: {t.lr:.6f}",
            f"max mem: {_max_memory_mb():.0f}M"] + shown))
        if self.writer is None:
            return
        meters = t.meters.meters
        scalars = {f"train/{k}": m.median for k, m in meters.items() if k.startswith("loss")}
        scalars["train/lr"] = t.lr
        for name, key in (("time", "time"), ("data", "data_time")):
            if name in meters:
                scalars[f"train/{key}"] = meters[name].median
        scalars.update({f"train/{k}": v for k, v in t.scalars.items()})
        self.writer.add_scalars(scalars, t.iter)


class PeriodicCheckpointer(HookBase):
    """Saves ``model_XXXXXXX.pth`` every ``period`` iterations and ``model_final.pth`` at the end.

    Runs on every rank: a barrier makes rank 0 write only once all ranks finished the
    iteration, and ``state_fn`` may gather per-rank state (RNG states).

    Args:
        checkpointer: writes the files (on rank 0).
        period: ``SOLVER.CHECKPOINT_PERIOD``.
        extra: plain data saved with every checkpoint (e.g. categories, seed).
        state_fn: ``state_fn(iteration) -> dict`` of plain data added at save time; called on
            every rank.
    """

    def __init__(self, checkpointer: "Checkpointer", period: int, *, extra: Optional[Dict[str, Any]] = None,
                 state_fn: Optional[Callable[[int], Dict[str, Any]]] = None) -> None:
        self.checkpointer = checkpointer
        self.period = int(period)
        self.extra = dict(extra or {})
        self.state_fn = state_fn

    def after_step(self) -> None:
        it = self.trainer.iter
        if it % self.period == 0 and it != self.trainer.max_iter:
            self.save(f"model_{it:07d}", it)

    def after_train(self) -> None:
        self.save("model_final", self.trainer.max_iter)

    def save(self, name: str, iteration: int) -> None:
        """Write checkpoint ``name`` for ``iteration``, with the hooks' and ``state_fn``'s state."""
        synchronize()
        extra = dict(self.extra, **self.trainer.state_dict())
        if self.state_fn is not None:
            extra.update(self.state_fn(iteration))
        self.checkpointer.save(name, iteration=iteration, **extra)


class EvalHook(HookBase):
    """Evaluates every ``period`` iterations during training (not at the last) and at the end.

    TensorBoard (rank 0) gets, at the iteration evaluated, for each dataset and iou type
    (``bbox``, ``segm``): the metrics as ``eval/<dataset>/<type>/<metric>``, the AP of each class
    as ``eval/<dataset>/<type>/AP-<class name>``, and the precision-recall curve whose mean is the
    AP (IoU 0.50:0.95; see :func:`~maskrcnn.evaluation.coco_eval.precision_recall_curve`) as
    ``eval/<dataset>/<type>/pr_curve``; and the first ``vis_images`` images of each dataset (the
    same ones every time), ground truth | predictions scoring ``>= vis_score_threshold``, as
    ``eval/<dataset>/images/<image id>``.

    Args:
        period: ``TEST.EVAL_PERIOD``; 0 evaluates only at the end.
        eval_fn: ``eval_fn() -> {dataset: DatasetEvaluation}`` (rank 0; ``{}`` elsewhere); a plain
            ``{dataset: {iou_type: {metric: value}}}`` is taken too (metrics only).
        writer: the TensorBoard writer (rank 0), or None.
        vis_images: ``TEST.VIS_IMAGES``: images drawn per dataset; 0: none.
        vis_score_threshold: ``TEST.VIS_SCORE_THRESHOLD``: lowest score drawn.

    Attributes:
        results: the metrics of the last evaluation, ``{dataset: {iou_type: {metric: value}}}``.
    """

    def __init__(self, period: int, eval_fn: Callable[[], Dict[str, Any]],
                 writer: Optional[TensorboardWriter] = None, *, vis_images: int = 0,
                 vis_score_threshold: float = 0.5) -> None:
        self.period = int(period)
        self.eval_fn = eval_fn
        self.writer = writer
        self.vis_images = int(vis_images)
        self.vis_score_threshold = float(vis_score_threshold)
        self.results: Dict[str, dict] = {}

    def after_step(self) -> None:
        it = self.trainer.iter
        if self.period > 0 and it % self.period == 0 and it != self.trainer.max_iter:
            self.evaluate(it)

    def after_train(self) -> None:
        self.evaluate(self.trainer.max_iter)

    def evaluate(self, iteration: int) -> Dict[str, dict]:
        """Run ``eval_fn``, record its metrics (and the rest, see the class doc) at ``iteration``."""
        evaluations = self.eval_fn()
        self.results = {name: ev.metrics if isinstance(ev, DatasetEvaluation) else ev
                        for name, ev in evaluations.items()}
        if self.writer is not None and self.results:
            scalars = {f"eval/{dataset}/{iou_type}/{k}": v
                       for dataset, metrics in self.results.items()
                       for iou_type, values in metrics.items() for k, v in values.items()
                       if isinstance(v, (int, float)) and math.isfinite(v)}
            self.writer.add_scalars(scalars, iteration)
            for name, ev in evaluations.items():
                if isinstance(ev, DatasetEvaluation):
                    self._write_details(name, ev, iteration)
            self.writer.flush()
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            trainer.model.train()
        return self.results

    def _write_details(self, name: str, ev: DatasetEvaluation, iteration: int) -> None:
        for iou_type, aps in ev.coco.per_class_ap.items():
            # A "/" in a class name would open a TensorBoard group of its own.
            self.writer.add_scalars({f"eval/{name}/{iou_type}/AP-{cls.replace('/', '_')}": ap
                                     for cls, ap in aps.items() if math.isfinite(ap)}, iteration)
        for iou_type, (recall, precision) in ev.coco.precision_recall.items():
            self.writer.add_pr_curve(f"eval/{name}/{iou_type}/pr_curve", recall, precision, iteration)
        if self.vis_images > 0:
            for image_id, picture in ev.draw_images(self.vis_images, self.vis_score_threshold).items():
                self.writer.add_image(f"eval/{name}/images/{image_id}", picture, iteration)
