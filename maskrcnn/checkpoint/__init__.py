"""Checkpoints: atomic I/O and the one safe reader, the Checkpointer, ``MODEL.WEIGHT`` loading,
and converters from other frameworks' formats (``convert/``)."""

from .checkpointer import (CheckpointError, Checkpointer, atomic_write, load_model_state,
                           read_checkpoint, unwrap_model)

__all__ = ["CheckpointError", "Checkpointer", "atomic_write", "load_model_state", "read_checkpoint",
           "unwrap_model"]
