"""Install: pip install -e .

The CUDA extension in csrc/ (``maskrcnn._C``: the mask-pasting kernel, registered as
``torch.ops.maskrcnn_ops``) is optional. It is built only when all of these hold:

* torch can be imported while this file runs (it cannot under pip's default build isolation,
  so a plain ``pip install -e .`` never compiles anything),
* ``torch.cuda.is_available()`` or the environment sets ``FORCE_CUDA=1``,
* a CUDA toolkit is found (``CUDA_HOME`` / ``CUDA_PATH``, or the ``nvcc`` on ``PATH``).

Otherwise the package installs and runs with its pure-PyTorch paths. To build it::

    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 pip install -e . --no-build-isolation

(``TORCH_CUDA_ARCH_LIST`` picks the GPU architectures; without a GPU on the build machine it
must be given. ``MAX_JOBS`` limits parallel compile jobs.) ``csrc/compile_check.py`` builds
the same extension into a temporary folder, which is what ``.ci/run`` does when ``nvcc`` is
present. Without nvcc, the tests still compile the extension's CPU half with the C++ compiler
(``tests/layers/cpu_twin.py``; ``ninja`` comes with the ``test`` extra).
"""
import os
import shutil
import subprocess
from typing import Dict, List, Optional, Tuple

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")


def find_cuda_home() -> Optional[str]:
    """The CUDA toolkit folder: ``CUDA_HOME``/``CUDA_PATH``, else the one ``nvcc`` runs from.

    ``nvcc`` on ``PATH`` may be a wrapper script outside the toolkit, so its real location is
    asked from ``nvcc --dryrun`` (the ``_HERE_`` line) rather than taken from ``PATH``.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var) and os.path.isdir(os.environ[var]):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
        for line in (out.stdout + out.stderr).splitlines():
            if line.startswith("#$ _HERE_="):
                return os.path.dirname(line.split("=", 1)[1].strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def cuda_extension() -> Tuple[List[object], Dict[str, object]]:
    """``(ext_modules, cmdclass)`` for ``maskrcnn._C``, or ``([], {})`` when it is not built."""
    try:
        import torch
    except ImportError:  # pip build isolation: torch is not visible here, so no extension
        return [], {}
    if not (torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1"):
        return [], {}
    cuda_home = find_cuda_home()
    if cuda_home is None:
        print("maskrcnn: no CUDA toolkit found (set CUDA_HOME); building without maskrcnn._C")
        return [], {}
    os.environ["CUDA_HOME"] = cuda_home
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = cuda_home  # read at import time; nvcc on PATH may be a wrapper
    sources = [os.path.relpath(os.path.join(CSRC, p), ROOT) for p in
               ("register.cpp", "paste_masks/paste_masks_cpu.cpp", "paste_masks/paste_masks_cuda.cu")]
    ext = cpp_extension.CUDAExtension(
        "maskrcnn._C", sources=sources, include_dirs=[CSRC],
        # no contraction into FMAs: results must equal the pure-PyTorch path bit for bit
        extra_compile_args={"cxx": ["-O3", "-ffp-contract=off"],
                            "nvcc": ["-O3", "--fmad=false"]})
    return [ext], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = cuda_extension()

setup(
    name="maskrcnn",
    version="0.1.0",
    description="A pure-PyTorch Mask R-CNN framework in the spirit of maskrcnn-benchmark",
    packages=find_packages(include=["maskrcnn", "maskrcnn.*"]),
    python_requires=">=3.9",
    install_requires=[
        # torch and torchvision must be a matching pair. The whole test suite passed with
        # torch 2.4.1 + torchvision 0.19.1, 2.11.0 + 0.26.0 (the GPU machine's release) and
        # 2.14.1 + 0.29.1 (the development pair); these bounds admit those and the releases
        # between. Older releases are not admitted: nothing ran them.
        "torch>=2.4,<2.15",
        "torchvision>=0.19,<0.30",
        "pycocotools>=2.0.7,<3",
        "numpy>=1.23,<3",
        "pyyaml>=6.0,<7",
        "tensorboard>=2.14,<3",
        "pillow>=9.0",
    ],
    # ninja: tests/layers compiles the CPU twin of the CUDA kernel (torch.utils.cpp_extension)
    extras_require={"test": ["pytest>=7", "ninja"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
