from .build import build_model, resolve_device
from .detector import GeneralizedRCNN

__all__ = ["build_model", "resolve_device", "GeneralizedRCNN"]
