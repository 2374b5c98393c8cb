from .hooks import (DivergenceError, DivergenceGuard, EvalHook, IterationTimer, MetricsWriter, NonFiniteGuard,
                    PeriodicCheckpointer)
from .inference import evaluate, gather_predictions, predict_dataset
from .trainer import HookBase, NonFiniteLossError, Trainer

__all__ = ["evaluate", "gather_predictions", "predict_dataset", "Trainer", "HookBase", "NonFiniteLossError",
           "DivergenceError", "DivergenceGuard", "EvalHook", "IterationTimer", "MetricsWriter", "NonFiniteGuard",
           "PeriodicCheckpointer"]
