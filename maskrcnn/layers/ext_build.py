"""Building ``maskrcnn._C`` from ``csrc/`` in a source checkout, and the cases a build is checked on.

Used by ``csrc/compile_check.py`` (CI: build into a temporary folder, compare with the PyTorch
path) and ``benchmarks/gpu_check.py`` (build in place when missing). The package never needs
this module: :mod:`._ext` loads the extension if it was built, and the PyTorch paths run if not.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from typing import Iterator, Optional, Tuple

import torch

__all__ = ["BuildResult", "build_extension", "random_paste_cases", "source_root"]


@dataclasses.dataclass
class BuildResult:
    """What :func:`build_extension` did.

    Attributes:
        returncode: ``setup.py build_ext``'s exit status (0: built).
        arch: the ``TORCH_CUDA_ARCH_LIST`` it used.
        seconds: how long it took.
        log: its stdout and stderr when captured, else ``""``.
    """

    returncode: int
    arch: str
    seconds: float
    log: str = ""


def source_root() -> str:
    """The checkout that holds ``setup.py`` and ``csrc/`` (the folder above the package)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_extension(*, arch: str, max_jobs: int, out_dir: Optional[str] = None, capture_output: bool = False,
                    check: bool = False) -> BuildResult:
    """Run ``setup.py build_ext`` with ``FORCE_CUDA=1``, as ``pip install`` does with a CUDA toolkit.

    ``TORCH_CUDA_ARCH_LIST`` and ``MAX_JOBS`` already set in the environment win over ``arch``
    and ``max_jobs``.

    Args:
        arch: GPU architectures, e.g. ``"9.0"``.
        max_jobs: parallel compile jobs.
        out_dir: None builds in place (``maskrcnn/_C*.so`` next to the sources); else the library
            goes to ``out_dir/lib/maskrcnn/`` and the objects to ``out_dir/temp``.
        capture_output: keep the compiler's output in :attr:`BuildResult.log` instead of printing it.
        check: raise ``subprocess.CalledProcessError`` when the build fails.

    Returns:
        A :class:`BuildResult`.

    Raises:
        FileNotFoundError: no ``setup.py`` above the package (an installed copy, not a checkout).
    """
    root = source_root()
    if not os.path.isfile(os.path.join(root, "setup.py")):
        raise FileNotFoundError(f"no setup.py in {root}: the extension is built from a source checkout "
                                "of this repository (pip install -e .)")
    env = dict(os.environ, FORCE_CUDA="1")
    env.setdefault("TORCH_CUDA_ARCH_LIST", arch)
    env.setdefault("MAX_JOBS", str(max_jobs))
    where = ["--inplace"] if out_dir is None else [
        "--build-temp", os.path.join(out_dir, "temp"), "--build-lib", os.path.join(out_dir, "lib")]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", *where], cwd=root, env=env,
                          capture_output=capture_output, text=True, check=check)
    log = (proc.stdout + proc.stderr) if capture_output else ""
    return BuildResult(proc.returncode, env["TORCH_CUDA_ARCH_LIST"], time.perf_counter() - start, log)


def random_paste_cases(gen: torch.Generator, trials: int = 40, max_side: int = 160
                       ) -> Iterator[Tuple[str, torch.Tensor, torch.Tensor, int, int]]:
    """Random masks and boxes on which the kernel must equal the PyTorch path bit for bit.

    Boxes partly outside the image, tiny and huge (by turns), integer boxes (exact ties between
    taps) every fifth trial, many mask values exactly 0.5 (ties at the threshold), mask sizes
    28, 14, 5 and 1, float16 masks every other trial, and N = 0 now and then.

    Args:
        gen: the random generator (a generator seeded alike gives the same cases); it is
            advanced as the cases are drawn.
        trials: cases yielded.
        max_side: image height and width are drawn from ``[1, max_side)``.

    Yields:
        ``(name, masks (N, M, M), boxes (N, 4) xyxy, height, width)``.
    """
    for trial in range(trials):
        height, width = [int(v) for v in torch.randint(1, max_side, (2,), generator=gen)]
        n, m = int(torch.randint(0, 12, (1,), generator=gen)), [28, 14, 5, 1][trial % 4]
        centre = torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * 1.4 - 10
        size = torch.rand(n, 2, generator=gen) * torch.tensor([width, height]) * [0.05, 0.6, 3.0][trial % 3]
        boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
        if trial % 5 == 0:
            boxes = boxes.round()  # integer boxes: exact ties between taps
        masks = torch.rand(n, m, m, generator=gen)
        masks = torch.where(masks < 0.2, torch.full_like(masks, 0.5), masks)  # exact ties at 0.5
        yield f"random {trial}", (masks.half() if trial % 2 else masks), boxes, height, width
