"""``import maskrcnn`` tunes glibc's malloc (``maskrcnn/_malloc.py``): freed activations stay in
the heap instead of being page-faulted back in at the next step. The kernel's own count of minor
page faults tells whether they did. Each check runs in a new process: glibc's settings are
per process, and this one's are already tuned.
"""
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc only")

# A training step's pattern, in the calls PyTorch's CPU allocator makes (posix_memalign, free):
# 40 activations of 1 MiB alive at once, each written, all freed after the step. Prints the page
# faults per step, after one step to warm up. No Python object is allocated between the blocks,
# so the heap's layout, and the count, are the same at every run.
STEPS = textwrap.dedent(
    """
    import ctypes, resource
    import maskrcnn, maskrcnn._malloc
    libc = ctypes.CDLL("libc.so.6")
    libc.free.argtypes = [ctypes.c_void_p]
    ptrs = [ctypes.c_void_p() for _ in range(40)]
    def step():
        for p in ptrs:
            assert libc.posix_memalign(ctypes.byref(p), 64, 1 << 20) == 0
            ctypes.memset(p, 1, 1 << 20)
        for p in reversed(ptrs):
            libc.free(p)
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(maskrcnn._malloc.STATE)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    """
)


def _run(**env_extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("MASKRCNN_MALLOC_TUNING", "LD_PRELOAD")}
    env.update(env_extra, PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, "-c", STEPS], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    state, faults = out.stdout.strip().splitlines()[-2:]
    return state, float(faults)


def test_freed_memory_is_reused_instead_of_faulted_back():
    state, tuned = _run()
    assert state.startswith("mmap threshold 32 MiB, trim threshold 64 MiB")
    untuned_state, untuned = _run(MASKRCNN_MALLOC_TUNING="0")
    assert untuned_state == "left as it is (MASKRCNN_MALLOC_TUNING=0)"
    # glibc's defaults give the 40 MiB back and fault in its 10,240 pages again at every step.
    assert untuned > 5000, untuned
    assert tuned < untuned / 10, (tuned, untuned)


@pytest.mark.parametrize("variable, value, reason", [
    ("MALLOC_TRIM_THRESHOLD_", "67108864", "MALLOC_TRIM_THRESHOLD_ set"),
    ("MALLOC_MMAP_THRESHOLD_", "67108864", "MALLOC_MMAP_THRESHOLD_ set"),
    ("MALLOC_TOP_PAD_", "0", "MALLOC_TOP_PAD_ set"),
    ("LD_PRELOAD", "libjemalloc.so.2", "another allocator in LD_PRELOAD"),
    ("LD_PRELOAD", "/usr/lib/libtcmalloc_minimal.so.4", "another allocator in LD_PRELOAD"),
    ("MASKRCNN_MALLOC_TUNING", "0", "MASKRCNN_MALLOC_TUNING=0"),
])
def test_left_alone_where_the_user_decides(monkeypatch, variable, value, reason):
    # These return before mallopt is called, so they can run in this process.
    from maskrcnn import _malloc
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD",
                 "MASKRCNN_MALLOC_TUNING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(_malloc, "STATE", _malloc.STATE)  # this process's real state, back afterwards
    state = _malloc.tune_malloc()
    assert state == f"left as it is ({reason})" == _malloc.STATE
