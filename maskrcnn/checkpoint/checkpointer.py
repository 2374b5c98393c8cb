"""Saving and loading of training checkpoints.

Checkpoints are written atomically (temporary sibling, fsync, ``os.replace``)
and ``last_checkpoint`` is updated, itself atomically, only after the file is
complete: a kill at any moment leaves ``last_checkpoint`` naming a whole file.
Files are always loaded with ``torch.load(..., weights_only=True)``: files that
would need arbitrary pickled objects are refused rather than executed.

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
import pickle
import secrets
from collections import OrderedDict
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .convert.report import collapse_names

__all__ = ["Checkpointer", "CheckpointError", "load_model_state", "read_checkpoint", "atomic_write",
           "unwrap_model", "LAST_CHECKPOINT_FILE"]

LAST_CHECKPOINT_FILE = "last_checkpoint"
_RESERVED = ("model", "optimizer", "scheduler")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Returns ``model.module`` for (Distributed)DataParallel wrappers, else ``model``."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: corrupt, truncated, unsafe, or not a checkpoint."""


def atomic_write(path: str, write_fn: Callable[[Any], None]) -> None:
    """Writes ``path`` via a temporary sibling ``.NAME.*.tmp``, fsync and ``os.replace``.

    Readers see either the old file or the complete new one; a process killed
    meanwhile leaves only the temporary file behind.

    Args:
        path: Destination.
        write_fn: Writes the content to the binary file object it is given.
    """
    directory = os.path.dirname(os.path.abspath(path))
    while True:  # like mkstemp, but with the permissions of a plain open() (umask applies)
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # persist the rename itself; not supported everywhere
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_model_state(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    logger: logging.Logger | None = None,
) -> dict[str, list]:
    """Loads matching tensors of ``state_dict`` into ``model``, tolerantly.

    A leading ``"module."`` is stripped from the file's keys. Tensors whose
    shape differs from the model's (e.g. a class-specific head when
    fine-tuning with another number of classes) are skipped instead of
    raising. A readable report is logged.

    Args:
        model: Target model (DDP/DataParallel wrappers are unwrapped).
        state_dict: Mapping from parameter/buffer name to tensor.
        logger: Logger for the report; the module logger when ``None``.

    Returns:
        ``{"loaded": [names], "skipped": [(name, file_shape, model_shape)],
        "missing": [model names absent from the file], "unexpected": [file
        names absent from the model]}``.
    """
    from .model_zoo import add_backbone_prefix

    logger = logger or logging.getLogger(__name__)
    model = unwrap_model(model)
    own = model.state_dict()
    state_dict = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    state_dict = add_backbone_prefix(state_dict, own.keys())
    # BatchNorm counters have no counterpart in frozen BN / GN layers.
    state_dict = {k: v for k, v in state_dict.items()
                  if not (k.endswith("num_batches_tracked") and k not in own)}
    filtered: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    skipped: list[tuple[str, tuple, tuple]] = []
    unexpected: list[str] = []
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name not in own:
            unexpected.append(name)
            continue
        if not isinstance(value, torch.Tensor):
            unexpected.append(name)
            continue
        if tuple(value.shape) != tuple(own[name].shape):
            skipped.append((name, tuple(value.shape), tuple(own[name].shape)))
            continue
        filtered[name] = value
    in_file = set(filtered) | {s[0] for s in skipped}
    missing = [k for k in own if k not in in_file]
    model.load_state_dict(filtered, strict=False)

    report = {
        "loaded": list(filtered),
        "skipped": skipped,
        "missing": missing,
        "unexpected": unexpected,
    }
    lines = [f"loaded {len(filtered)}/{len(own)} tensors of the model"]
    if skipped:
        lines.append(f"skipped {len(skipped)} tensors with mismatched shape (file -> model):")
        lines += [f"  {n}: {tuple(fs)} -> {tuple(ms)}" for n, fs, ms in skipped]
    if missing:
        lines.append(f"missing from file ({len(missing)}), left as initialised:")
        lines += [f"  {n}" for n in collapse_names(missing)]
    if unexpected:
        lines.append(f"unexpected in file ({len(unexpected)}), ignored:")
        lines += [f"  {n}" for n in collapse_names(unexpected)]
    level = logging.WARNING if (skipped or missing or unexpected) else logging.INFO
    logger.log(level, "\n".join(lines))
    return report


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a checkpoint or weights file with ``weights_only=True``.

    Args:
        path: A dict with a ``"model"`` key, a ``{"state_dict": ...}`` dict or a raw
            state dict.

    Returns:
        A dict with the model state under ``"model"`` and the file's other entries.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: The file is corrupt or truncated, or holds pickled objects
            other than tensors and plain containers (refused, never executed); the
            message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported" in msg or "allowed global" in msg:
            lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln), lines[-1])
            detail = detail.split(" Please use")[0].rstrip(".")
            raise CheckpointError(
                f"{path} is not a valid checkpoint: it contains pickled objects other "
                "than tensors and plain containers, and loading arbitrary pickles is "
                f"refused for safety (weights_only=True; {detail}). Load it with "
                "weights_only=False only if you trust whoever made the file."
            ) from e
        raise CheckpointError(f"{path} is not a valid checkpoint (corrupt or truncated): {e}") from e
    except Exception as e:  # zip errors, EOFError, bad magic number, ...
        raise CheckpointError(
            f"{path} is not a valid checkpoint (corrupt or truncated): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"{path} is not a valid checkpoint: expected a dict, got {type(data).__name__}"
        )
    if "model" not in data:
        if "state_dict" in data and isinstance(data["state_dict"], Mapping):
            rest = {k: v for k, v in data.items() if k != "state_dict"}
            return {"model": data["state_dict"], **rest}
        return {"model": data}  # a raw state dict
    return dict(data)


class Checkpointer:
    """Saves and restores model, optimizer, scheduler and extra state.

    Args:
        model: The model (DDP wrappers are unwrapped on save and load).
        optimizer: Optional optimizer.
        scheduler: Optional LR scheduler (anything with ``state_dict``).
        save_dir: Directory for checkpoints and the ``last_checkpoint`` file.
        save_to_disk: Whether this process writes files (main rank only).
        logger: Logger; defaults to this module's logger.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
        save_dir: str | os.PathLike = "",
        save_to_disk: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        self.model = model
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
        os.makedirs(self.save_dir, exist_ok=True)
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
            model_only: Load only model weights; optimizer, scheduler and
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
            self._load_model_weights(path)
            return {}
        return self._apply(read_checkpoint(path), path)

    def _load_model_weights(self, path: str) -> None:
        """Model weights of any supported framework, converted to this project's names.

        A file whose names are the model's (this project's checkpoints) loads as it is;
        otherwise torchvision, detectron2, maskrcnn-benchmark and Detectron/Caffe2 files are
        recognised and converted (``maskrcnn.checkpoint.convert``). Nothing is unpickled that
        could execute code (``torch.load(weights_only=True)`` or a numpy-only unpickler).
        """
        from .convert import convert_state_dict, detect_format, read_weights_file, unwrap
        from .convert.detect import NATIVE, UNKNOWN

        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        model_state = unwrap_model(self.model).state_dict()
        try:
            # .pkl: Detectron / detectron2 pickles of numpy arrays; anything else is a torch file.
            obj = read_weights_file(path) if path.endswith(".pkl") else read_checkpoint(path)
            tensors, extras = unwrap(obj)
            source = detect_format(obj)
            # Another framework's file is converted (torchvision's shares many names with ours,
            # so overlap alone does not tell); a file in the model's own names loads as it is.
            if source not in (NATIVE, UNKNOWN) or not set(tensors) & set(model_state):
                tensors, report = convert_state_dict(obj, "auto", model_state)
                report.log(self.logger, where=path)
        except (pickle.UnpicklingError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(str(e) if path in str(e) else f"{path}: {e}") from e
        load_model_state(self.model, tensors, self.logger)
        if any(k in extras for k in ("optimizer", "scheduler", "iteration")):
            self.logger.info("loaded model weights only; optimizer, scheduler and iteration start fresh")

    def _apply(self, data: dict[str, Any], path: str) -> dict[str, Any]:
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
            weights: Local weights file for initialisation ("" for none).
            resume: Resume the full training state from ``save_dir`` if a
                ``last_checkpoint`` exists.

        Returns:
            Extra state of the resumed checkpoint (with ``"iteration"``), or
            ``{}`` when starting fresh.

        Raises:
            ValueError: ``weights`` uses a URL-like scheme (only local files
                are supported).
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
        if not weights:
            return {}
        self._load_weights(weights)
        return {}

    def _load_weights(self, weights: str) -> None:
        """Initialise the model from ``MODEL.WEIGHT`` (model tensors only)."""
        from .model_zoo import resolve_weights

        self.load(resolve_weights(weights), model_only=True)

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
