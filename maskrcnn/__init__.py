"""maskrcnn: a pure-PyTorch Mask R-CNN framework.

Importing the package never needs a compiled extension. ``Predictor`` is
imported lazily so that ``import maskrcnn`` stays light.

Importing it also raises oneDNN's primitive cache to :data:`ONEDNN_CACHE_CAPACITY` kernels
(``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, unless that variable is already set). oneDNN, PyTorch's
CPU convolution library, compiles a kernel (a "primitive") for each convolution shape and pass,
and keeps 1024 of them by default. Detection training changes shapes at every step: images of
several sizes, a varying number of boxes per ROI head. In the 2-core quickstart the kernels of
a few hundred iterations number about 2,000, so the default cache evicted kernels before their
shape came back and recompiled about 46 per step: 14 ms of a 170 ms step, against 1.45 ms
with this cache (``ONEDNN_VERBOSE=2``, 300 iterations; README, "torchvision's Mask
R-CNN, and speed against it").
The cache is sized once, when the process creates its first oneDNN kernel, so the variable
only takes effect when this package is imported before any convolution runs on the CPU; it
has no effect on GPUs.

It also sets glibc's malloc thresholds so that a training step's freed activations are reused
instead of returned to the system and page-faulted back at the next step (steps 1.5 to 10% shorter
on the CPU; :mod:`maskrcnn._malloc` says why, when it is left alone, and how to opt out).
"""
import os

from ._malloc import tune_malloc

__version__ = "0.1.0"

__all__ = ["ONEDNN_CACHE_CAPACITY", "Predictor", "__version__"]

ONEDNN_CACHE_CAPACITY = 8192
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))
tune_malloc()


def __getattr__(name):
    if name == "Predictor":
        from .predictor import Predictor
        return Predictor
    raise AttributeError(f"module 'maskrcnn' has no attribute {name!r}")
