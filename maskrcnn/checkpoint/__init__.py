"""Checkpoints: atomic I/O and the one safe reader (``io``), the ``Checkpointer`` (save, resume,
recovery), ``MODEL.WEIGHT`` loading (``weights``), and converters from other frameworks' formats
(``convert/``)."""

from .checkpointer import LAST_CHECKPOINT_FILE, Checkpointer
from .io import CheckpointError, UnsafePickleError, atomic_write, read_checkpoint, safe_load
from .weights import load_model_state, load_weights, load_weights_file, resolve_weights, unwrap_model

__all__ = ["CheckpointError", "Checkpointer", "LAST_CHECKPOINT_FILE", "UnsafePickleError", "atomic_write",
           "load_model_state", "load_weights", "load_weights_file", "read_checkpoint", "resolve_weights",
           "safe_load", "unwrap_model"]
