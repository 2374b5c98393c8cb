"""Saving and loading of training checkpoints.

Checkpoints are written atomically (temporary sibling, fsync, ``os.replace``)
and ``last_checkpoint`` is updated, itself atomically, only after the file is
complete: a kill at any moment leaves ``last_checkpoint`` naming a whole file.
Files are always read with ``io.safe_load``: files that would need arbitrary
pickled objects are refused rather than executed. ``MODEL.WEIGHT`` goes through
``weights.load_weights`` (any supported framework, converted).

When ``--resume`` finds the file named by ``last_checkpoint`` corrupt or
missing, it fails with an error naming the newest intact checkpoint of the
directory and the command that resumes from it. It never rolls back on its own:
a silent roll-back would redo iterations (and overwrite later files) without
anyone noticing that something went wrong.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

import torch
from torch import nn

from .io import CheckpointError, atomic_write, read_checkpoint
from .weights import load_model_state, load_weights, unwrap_model

__all__ = ["Checkpointer", "LAST_CHECKPOINT_FILE"]

LAST_CHECKPOINT_FILE = "last_checkpoint"


def _optimizer_kind(param_groups: Any) -> str:
    """"AdamW" or "SGD", told by the hyperparameters of saved or live ``param_groups``."""
    keys = {k for g in param_groups or [] if isinstance(g, dict) for k in g}
    return "AdamW" if "betas" in keys else "SGD" if "momentum" in keys else "unknown"


def _check_optimizer_kind(optimizer: torch.optim.Optimizer, state: dict[str, Any], path: str) -> None:
    """Refuses to resume an optimizer state saved by the other ``SOLVER.OPTIMIZER``.

    torch would load SGD's state into AdamW (or the reverse) without a word and fail at the
    first step; the run stops here instead, before anything is loaded.
    """
    saved, now = _optimizer_kind(state.get("param_groups")), _optimizer_kind(optimizer.param_groups)
    if saved != now and "unknown" not in (saved, now):
        raise CheckpointError(
            f"{path} holds an {saved} optimizer state, but this run's SOLVER.OPTIMIZER is {now}. "
            f"To continue that run, resume with SOLVER.OPTIMIZER {saved}; to train on from its weights "
            f"with {now}, start a new run (another OUTPUT_DIR, no --resume) with MODEL.WEIGHT {path}: "
            "the optimizer, schedule and iteration then start afresh")


class Checkpointer:
    """Saves and restores model, optimizer, scheduler and extra state.

    Args:
        model: The model (DDP wrappers are unwrapped on save and load).
        optimizer: Optional optimizer.
        scheduler: Optional LR scheduler (anything with ``state_dict``).
        save_dir: Directory for checkpoints and the ``last_checkpoint`` file.
        save_to_disk: Whether this process writes files (main rank only).
        logger: Logger; defaults to this module's logger.
        cfg: The config the model was built from: weights loaded with ``model_only``
            (``MODEL.WEIGHT``) are checked against its input convention (see
            :func:`~maskrcnn.checkpoint.weights.convention_mismatches`), with a warning.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
        save_dir: str | os.PathLike = "",
        save_to_disk: bool = True,
        logger: logging.Logger | None = None,
        cfg: Any = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.save_dir = os.fspath(save_dir)
        self.save_to_disk = save_to_disk
        self.logger = logger or logging.getLogger(__name__)

    # ------------------------------------------------------------------ save
    def save(self, name: str, **extra: Any) -> str | None:
        """Writes ``save_dir/name.pth`` atomically, then updates ``last_checkpoint``.

        Args:
            name: File stem, e.g. ``"model_0005000"`` or ``"model_final"``.
            **extra: Additional picklable state (e.g. ``iteration=5000``);
                keep to tensors, numbers, strings and containers of them so
                that ``weights_only`` loading accepts it.

        Returns:
            The written path, or ``None`` when this process does not save.
        """
        if not self.save_to_disk or not self.save_dir:
            return None
        data: dict[str, Any] = {"model": unwrap_model(self.model).state_dict()}
        if self.optimizer is not None:
            data["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            data["scheduler"] = self.scheduler.state_dict()
        data.update(extra)
        filename = f"{name}.pth"
        path = os.path.join(self.save_dir, filename)
        self.logger.info("saving checkpoint to %s", path)
        atomic_write(path, lambda f: torch.save(data, f))
        self._tag_last_checkpoint(filename)
        return path

    def _tag_last_checkpoint(self, filename: str) -> None:
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        atomic_write(tag, lambda f: f.write(filename.encode("utf-8")))

    # ------------------------------------------------------------- discover
    def has_checkpoint(self) -> bool:
        """Returns True when ``save_dir/last_checkpoint`` exists."""
        return bool(self.save_dir) and os.path.isfile(
            os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        )

    def get_checkpoint_file(self) -> str:
        """Returns the checkpoint path recorded in ``last_checkpoint``.

        Relative names are resolved against ``save_dir``. An absolute path
        that no longer exists (e.g. the output directory was moved) falls
        back to its base name inside ``save_dir`` when that exists.

        Returns:
            The path, or ``""`` when there is no ``last_checkpoint``.
        """
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        try:
            with open(tag, encoding="utf-8") as f:
                name = f.read().strip()
        except OSError:
            return ""
        if not name:
            return ""
        if os.path.isabs(name):
            local = os.path.join(self.save_dir, os.path.basename(name))
            if not os.path.exists(name) and os.path.exists(local):
                return local
            return name
        return os.path.join(self.save_dir, name)

    # ----------------------------------------------------------------- load
    def load(self, path: str | os.PathLike, model_only: bool = False) -> dict[str, Any]:
        """Loads a checkpoint into the model (and optimizer/scheduler).

        Args:
            path: Checkpoint file: a dict with a ``"model"`` key or a raw
                state dict.
            model_only: Load only model weights, as ``MODEL.WEIGHT`` (any supported
                framework, or ``torchvision://<model>``); optimizer, scheduler and
                iteration in the file are ignored.

        Returns:
            The remaining entries of the file (e.g. ``"iteration"``), or ``{}``
            when ``model_only``.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            CheckpointError: The file is not a valid (weights-only) checkpoint.
        """
        path = os.fspath(path)
        self.logger.info("loading checkpoint from %s", path)
        if model_only:
            load_weights(self.model, path, self.logger, cfg=self.cfg)
            return {}
        return self._apply(read_checkpoint(path), path)

    def _apply(self, data: dict[str, Any], path: str) -> dict[str, Any]:
        if self.optimizer is not None and isinstance(data.get("optimizer"), dict):
            _check_optimizer_kind(self.optimizer, data["optimizer"], path)
        load_model_state(self.model, data.pop("model"), self.logger)
        if "optimizer" in data:
            state = data.pop("optimizer")
            if self.optimizer is not None:
                self.logger.info("loading optimizer state from %s", path)
                self.optimizer.load_state_dict(state)
        if "scheduler" in data:
            state = data.pop("scheduler")
            if self.scheduler is not None:
                self.logger.info("loading scheduler state from %s", path)
                self.scheduler.load_state_dict(state)
        return data

    def resume_or_load(self, weights: str | os.PathLike, resume: bool) -> dict[str, Any]:
        """Resumes from ``last_checkpoint`` or initialises from ``weights``.

        Args:
            weights: ``MODEL.WEIGHT`` for initialisation: a local file of any supported
                framework or ``torchvision://<model>`` ("" for none).
            resume: Resume the full training state from ``save_dir`` if a
                ``last_checkpoint`` exists.

        Returns:
            Extra state of the resumed checkpoint (with ``"iteration"``), or
            ``{}`` when starting fresh.

        Raises:
            ValueError: ``weights`` uses a URL scheme other than ``torchvision://``.
            CheckpointError: On resume, the file named by ``last_checkpoint``
                is missing or invalid; the message names the newest intact
                checkpoint and how to resume from it (no automatic roll-back).
        """
        weights = os.fspath(weights) if weights else ""
        if resume:
            if self.save_to_disk and self.save_dir:
                self._remove_interrupted_saves()
            if self.has_checkpoint():
                return self._resume()
            self.logger.info(
                "--resume given but no checkpoint found in %r; starting from weights %r",
                self.save_dir, weights,
            )
        elif self.has_checkpoint():
            self.logger.warning(
                "found %s in %r naming %s; it is IGNORED because --resume was not given. "
                "Training starts from iteration 0 and new checkpoints will be written beside it.",
                LAST_CHECKPOINT_FILE, self.save_dir, self.get_checkpoint_file(),
            )
        if weights:
            self.load(weights, model_only=True)
        return {}

    # --------------------------------------------------------------- resume
    def _resume(self) -> dict[str, Any]:
        path = self.get_checkpoint_file()
        self.logger.info("resuming training state from %s", path)
        try:
            if not path:
                raise CheckpointError(f"{LAST_CHECKPOINT_FILE} is empty")
            data = read_checkpoint(path)
        except (OSError, CheckpointError) as e:
            raise CheckpointError(self._resume_failure(path, e)) from e
        return self._apply(data, path)

    def _remove_interrupted_saves(self) -> None:
        """Deletes temporary files that a killed save left behind (``.model_*.pth.*.tmp``)."""
        for pattern in (".model_*.pth.*.tmp", f".{LAST_CHECKPOINT_FILE}.*.tmp"):
            for tmp in glob.glob(os.path.join(glob.escape(self.save_dir), pattern)):
                self.logger.info("removing %s, left by an interrupted save", tmp)
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass

    def find_intact_checkpoint(self, exclude: str = "") -> tuple[str, int] | None:
        """The newest ``model_*.pth`` in ``save_dir`` that loads and holds an iteration.

        Args:
            exclude: A path to leave out (the file known to be bad).

        Returns:
            ``(path, iteration)``, or ``None`` when there is none.
        """
        files = glob.glob(os.path.join(glob.escape(self.save_dir), "model_*.pth"))
        files.sort(key=lambda f: (os.path.getmtime(f), f), reverse=True)
        for f in files:
            if exclude and os.path.abspath(f) == os.path.abspath(exclude):
                continue
            try:
                data = read_checkpoint(f)
            except (OSError, CheckpointError):
                self.logger.warning("%s is not an intact checkpoint either", f)
                continue
            if isinstance(data.get("iteration"), int) and "optimizer" in data:
                return f, int(data["iteration"])
        return None

    def _resume_failure(self, path: str, error: Exception) -> str:
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        msg = f"cannot resume: {tag} names {path!r}, which cannot be loaded: {str(error).rstrip('.')}. "
        found = self.find_intact_checkpoint(exclude=path)
        if found is None:
            msg += (f"No intact checkpoint was found in {self.save_dir}: to start over, delete {tag} "
                    "or run without --resume.")
        else:
            name = os.path.basename(found[0])
            msg += (f"The newest intact checkpoint in {self.save_dir} is {name} (iteration {found[1]}). "
                    f"To resume from it: echo {name} > {tag} and run again with --resume "
                    f"(the iterations after {found[1]} are redone).")
        return msg + " Nothing was rolled back automatically."
