"""maskrcnn: a pure-PyTorch Mask R-CNN framework.

Importing the package never needs a compiled extension. ``Predictor`` is
imported lazily so that ``import maskrcnn`` stays light.
"""
__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name):
    if name == "Predictor":
        from .predictor import Predictor
        return Predictor
    raise AttributeError(f"module 'maskrcnn' has no attribute {name!r}")
