from .inference import evaluate, gather_predictions, predict_dataset
from .trainer import NonFiniteLossError, Trainer

__all__ = ["evaluate", "gather_predictions", "predict_dataset", "Trainer", "NonFiniteLossError"]
