"""What ``tools/train_net.py`` and ``tools/test_net.py`` do, as functions."""
from __future__ import annotations

import logging
import os
from typing import Dict, List

import torch
from torch.nn.parallel import DistributedDataParallel

from ..config import CfgNode, resolve_num_classes
from ..data.build import build_test_loaders, build_train_dataset, build_train_loader, dataset_categories
from ..modeling import build_model
from ..solver import make_lr_scheduler, make_optimizer
from ..checkpoint import Checkpointer
from ..utils.comm import gather_to_main, get_rank, get_world_size, is_main_process, synchronize
from ..utils.events import TensorboardWriter
from .inference import evaluate
from .launch import get_rng_states, seed_all, set_rng_states
from .trainer import NonFiniteLossError, Trainer

logger = logging.getLogger("maskrcnn.engine")


def _resolve_classes_from(cfg: CfgNode, dataset) -> list:
    cats = dataset_categories(dataset)
    resolve_num_classes(cfg, len(cats), getattr(dataset, "name", "the training set"))
    return cats


def _rpn_only_skip(cfg: CfgNode) -> bool:
    if cfg.MODEL.RPN_ONLY:
        logger.warning("MODEL.RPN_ONLY: proposals have no classes, and proposal-recall evaluation is "
                       "not implemented; DATASETS.TEST is not evaluated")
    return bool(cfg.MODEL.RPN_ONLY)


def _write_config(cfg: CfgNode) -> None:
    if is_main_process() and cfg.OUTPUT_DIR:
        path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
        cfg.save(path)
        logger.info("Saved the merged config to %s", path)


# TEST ONLY: comma-separated iterations whose losses are replaced by NaN, so that tests can
# exercise SOLVER.MAX_NONFINITE_SKIPS in real training processes. Unset in normal use.
NONFINITE_TEST_ENV = "MASKRCNN_TEST_NONFINITE_ITERS"


def _nonfinite_test_iters() -> List[int]:
    """Iterations named by ``NONFINITE_TEST_ENV`` (normally none)."""
    value = os.environ.get(NONFINITE_TEST_ENV, "")
    iters = [int(v) for v in value.split(",") if v.strip()]
    if iters:
        logger.warning("%s is set: losses of iterations %s are replaced by NaN (test only)",
                       NONFINITE_TEST_ENV, iters)
    return iters


def _resumed_seed(cfg_seed: int, drawn: int, extra: dict) -> int:
    """The seed a resumed run continues with: the checkpoint's, unless SEED names another one."""
    saved = extra.get("seed")
    if saved is None or saved == drawn:
        return drawn
    if cfg_seed < 0:
        logger.info("Resuming with the checkpoint's random seed %d", saved)
        return int(saved)
    logger.warning("SEED %d differs from the checkpoint's seed %d: the resumed run does not "
                   "reproduce the interrupted one", cfg_seed, saved)
    return drawn


def _restore_resumed_state(cfg: CfgNode, cfg_seed: int, seed: int, extra: dict) -> int:
    """Seed and RNG states of a resumed run; returns the seed the data loader must use."""
    resumed = _resumed_seed(cfg_seed, seed, extra)
    if resumed != seed:
        cfg.SEED = resumed
        _write_config(cfg)
    _restore_rng(extra)
    return resumed


def _explain_failure(cfg: CfgNode, error: BaseException) -> None:
    """With several processes, say that a dead or hung peer is the likely cause, and what to do."""
    if get_world_size() < 2 or isinstance(error, (NonFiniteLossError, KeyboardInterrupt)):
        return
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    logger.error("Training stopped on rank %d: %s: %s. In a run of %d processes this usually means "
                 "another process died or hung (collectives give up after DIST_TIMEOUT_S = %g s). "
                 "Restart all processes with --resume to continue from %s.", get_rank(),
                 type(error).__name__, first[:300], get_world_size(), cfg.DIST_TIMEOUT_S,
                 os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))


def _restore_rng(extra: dict) -> None:
    """Set this rank's RNG states from the checkpoint (saved as one entry per rank)."""
    states = extra.get("rng")
    if not isinstance(states, list) or len(states) != get_world_size():
        logger.warning("The checkpoint has no RNG states for %d process(es): random sampling after "
                       "the resume differs from an uninterrupted run", get_world_size())
        return
    set_rng_states(states[get_rank()])


def _check_data_position(extra: dict, now: dict) -> None:
    """Warn when the resumed loader's position differs from the one saved in the checkpoint."""
    saved = extra.get("data")
    if saved is None:
        return
    if saved != now:
        logger.warning("The data sequence differs from the interrupted run's (checkpoint: %s, now: %s): "
                       "SEED, SOLVER.IMS_PER_BATCH, the number of processes or the dataset changed",
                       saved, now)
    else:
        logger.info("Data: resuming at epoch %d, batch %d of the same sequence",
                    now["epoch"], now["batch_in_epoch"])


def _data_state(loader, iteration: int) -> dict:
    """Seed, epoch and batch of the training sequence after ``iteration`` batches, plus its sizes."""
    state = loader.batch_sampler.state_at(iteration)
    state.update(world_size=get_world_size(), dataset_size=len(loader.dataset))
    return state


def train(cfg: CfgNode, resume: bool = False) -> Dict[str, dict]:
    """Train per ``cfg``, evaluate on ``DATASETS.TEST`` at the end; returns the metrics (rank 0).

    With ``resume``, everything needed to continue exactly is restored from the checkpoint:
    model, optimizer, scheduler, iteration, every rank's Python/NumPy/torch RNG states, the
    data seed (position in the data is a function of the seed and the iteration) and the
    number of skipped non-finite iterations. A killed run resumed this way ends with the same
    weights, bit for bit, as an uninterrupted one (given the same processes and threads).
    """
    cfg_seed = int(cfg.SEED)
    seed = seed_all(cfg.SEED)
    cfg.SEED = seed  # a drawn seed is recorded in config.yaml and used by the data loader too
    dataset = build_train_dataset(cfg)
    categories = _resolve_classes_from(cfg, dataset)
    _write_config(cfg)
    model = build_model(cfg)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, optimizer, scheduler, cfg.OUTPUT_DIR, save_to_disk=is_main_process())
    extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHT, resume=resume)
    start_iter = int(extra.get("iteration", 0))
    if start_iter >= cfg.SOLVER.MAX_ITER:
        logger.info("Checkpoint is at iteration %d >= SOLVER.MAX_ITER %d: nothing to train",
                    start_iter, cfg.SOLVER.MAX_ITER)
    if extra:
        seed = _restore_resumed_state(cfg, cfg_seed, seed, extra)
    loader = build_train_loader(cfg, start_iter=start_iter, dataset=dataset)
    if extra and start_iter < cfg.SOLVER.MAX_ITER:
        _check_data_position(extra, _data_state(loader, start_iter))
    if get_world_size() > 1:
        device_ids = [torch.cuda.current_device()] if model.device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False,
                                              find_unused_parameters=False)
    else:
        train_model = model
    writer = TensorboardWriter(cfg.OUTPUT_DIR) if is_main_process() and cfg.OUTPUT_DIR else None
    test_loaders = build_test_loaders(cfg) if cfg.DATASETS.TEST and not _rpn_only_skip(cfg) else []

    def eval_fn(iteration: int) -> dict:
        return evaluate(model, test_loaders, cfg.OUTPUT_DIR, cfg.MODEL.ROI_MASK_HEAD.PASTE_RULE)

    trainer = Trainer(
        model=train_model, data_loader=loader, optimizer=optimizer, scheduler=scheduler,
        checkpointer=checkpointer, max_iter=cfg.SOLVER.MAX_ITER, checkpoint_period=cfg.SOLVER.CHECKPOINT_PERIOD,
        log_period=cfg.SOLVER.LOG_PERIOD, writer=writer, eval_fn=eval_fn if test_loaders else None,
        eval_period=cfg.TEST.EVAL_PERIOD,
        clip_grad_norm=cfg.SOLVER.CLIP_GRADIENTS.MAX_NORM if cfg.SOLVER.CLIP_GRADIENTS.ENABLED else None,
        checkpoint_extra={"categories": categories, "seed": seed},
        solver_hint=(cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.WARMUP_ITERS),
        max_nonfinite_skips=cfg.SOLVER.MAX_NONFINITE_SKIPS,
        state_fn=lambda it: {"rng": gather_to_main(get_rng_states()), "data": _data_state(loader, it)},
        inject_nonfinite_at=_nonfinite_test_iters())
    trainer.nonfinite_skips = int(extra.get("nonfinite_skips", 0))
    try:
        if start_iter < cfg.SOLVER.MAX_ITER:
            trainer.train(start_iter)
        results = trainer.evaluate(cfg.SOLVER.MAX_ITER) if test_loaders else {}
    except BaseException as e:
        _explain_failure(cfg, e)
        raise
    finally:
        if writer is not None:
            writer.close()
    synchronize()
    return results


def test(cfg: CfgNode) -> Dict[str, dict]:
    """Evaluate ``MODEL.WEIGHT`` on ``DATASETS.TEST``; writes ``OUTPUT_DIR/inference/<name>/``."""
    if _rpn_only_skip(cfg):
        return {}
    loaders = build_test_loaders(cfg)
    if not loaders:
        raise ValueError("DATASETS.TEST is empty: name at least one dataset to evaluate on")
    if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0:
        _resolve_classes_from(cfg, loaders[0][1].dataset)
    model = build_model(cfg)
    if not cfg.MODEL.WEIGHT:
        raise ValueError("MODEL.WEIGHT is empty: give the checkpoint to evaluate, e.g. "
                         "MODEL.WEIGHT output/model_final.pth")
    Checkpointer(model, save_to_disk=False).load(cfg.MODEL.WEIGHT, model_only=True)
    return evaluate(model, loaders, cfg.OUTPUT_DIR, cfg.MODEL.ROI_MASK_HEAD.PASTE_RULE)
