"""Compile check of the CUDA extension: ``python csrc/compile_check.py``.

``.ci/run`` runs it when ``nvcc`` is on ``PATH``. It builds ``maskrcnn._C`` exactly as
``setup.py`` does (``FORCE_CUDA=1``), but into a temporary folder, so nothing is left in the
package and the test suite keeps exercising the "extension not built" path. One GPU
architecture (``TORCH_CUDA_ARCH_LIST``, default ``9.0``) and ``MAX_JOBS`` (default 2) keep it
to a few minutes on a 2-core machine.

After building, the library is loaded in a fresh process and checked: the CPU reference op
(the same per-pixel code as the CUDA kernel, see ``csrc/paste_masks/paste_masks.h``) must
equal the pure-PyTorch path bit for bit on random boxes and masks; with a GPU, the CUDA ops
too. Exits non-zero if the build or a check fails.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from maskrcnn.layers.ext_build import build_extension, random_paste_cases  # noqa: E402


def build(out_dir: str) -> str:
    """Build the extension under ``out_dir``; return the path of the shared library."""
    build_extension(arch="9.0", max_jobs=2, out_dir=out_dir, check=True)
    libs = glob.glob(os.path.join(out_dir, "lib", "maskrcnn", "_C*.so"))
    if len(libs) != 1:
        raise RuntimeError(f"expected one maskrcnn/_C*.so under {out_dir}, found {libs}")
    return libs[0]


def verify(library: str) -> None:
    """Load ``library`` and compare its ops with the pure-PyTorch path; raise on a mismatch."""
    import torch

    from maskrcnn.layers.mask_ops import paste_masks_in_image
    from maskrcnn.layers.mask_window import box_window

    torch.ops.load_library(library)
    ops = torch.ops.maskrcnn_ops
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for name, masks, boxes, height, width in random_paste_cases(gen, trials=40, max_side=120):
        expected = paste_masks_in_image(masks, boxes, (height, width), impl="torch")
        wins = [box_window(b, height, width) or (0, 0, 0, 0) for b in boxes.double().tolist()]
        windows = torch.tensor(wins, dtype=torch.int64).reshape(-1, 4)
        packed = torch.cat([expected[i, y0:y1, x0:x1].t().reshape(-1)
                            for i, (y0, y1, x0, x1) in enumerate(wins)] + [torch.zeros(0, dtype=torch.bool)])
        for device in devices:
            got = ops.paste_masks(masks.to(device), boxes.to(device), height, width, 0.5).cpu()
            got_packed = ops.paste_masks_packed(masks.to(device), boxes.to(device), windows, 0.5).cpu()
            if not torch.equal(got, expected) or not torch.equal(got_packed, packed):
                raise AssertionError(f"{device} op differs from the PyTorch path ({name})")
            checked += 1
    print(f"compile check: {checked} comparisons on {devices}: identical to the PyTorch path")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", metavar="LIB", help="only check an already built library")
    parser.add_argument("--keep", metavar="DIR", help="build into DIR and keep it")
    args = parser.parse_args()
    if args.verify:
        verify(args.verify)
        return 0
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="maskrcnn_C_") as tmp:
        out_dir = args.keep or tmp
        library = build(out_dir)
        print(f"compile check: built {os.path.basename(library)} in {time.time() - start:.0f} s")
        # a fresh process: the one that imported setup.py's torch stays free of the library
        subprocess.run([sys.executable, os.path.abspath(__file__), "--verify", library], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
