"""``import maskrcnn`` raises oneDNN's kernel cache (see the package docstring), and the cache
it sets really holds more kernels: oneDNN's own verbose log counts its cache misses.

Each check runs in a new process, because oneDNN sizes its cache once per process.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import maskrcnn

REPO_ROOT = Path(__file__).resolve().parents[2]

# Two passes over the same 800 convolution shapes. Each shape needs its own kernels (the
# convolution and a reorder), about 1,600 in all: more than oneDNN's default of 1024, fewer
# than the package's capacity.
CONVS = textwrap.dedent(
    """
    import maskrcnn, torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    w = torch.randn(4, 4, 3, 3)
    xs = [torch.randn(2, 4, 4 + k % 25, 4 + k // 25) for k in range(800)]
    for _ in range(2):
        for x in xs:
            F.conv2d(x, w, padding=1)
    """
)


def _env(capacity=None, **extra):
    """This process's environment without the variable, or with ``capacity`` as the user's."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    env.update(extra, PYTHONPATH=str(REPO_ROOT))
    if capacity is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(capacity)
    return env


def _cache_misses(capacity):
    out = subprocess.run([sys.executable, "-c", CONVS], env=_env(capacity, ONEDNN_VERBOSE="2"), cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("onednn_verbose")]
    return (sum(",create:cache_miss," in ln for ln in lines),
            sum(",exec," in ln and ",convolution," in ln for ln in lines))


def test_import_sets_capacity_and_keeps_the_users_value():
    code = "import maskrcnn, os; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    ours = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert ours.stdout.strip() == str(maskrcnn.ONEDNN_CACHE_CAPACITY) == "8192"
    theirs = subprocess.run([sys.executable, "-c", code], env=_env(300), capture_output=True, text=True,
                            timeout=120)
    assert theirs.stdout.strip() == "300"


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_the_larger_cache_compiles_each_kernel_once():
    ours, ours_execs = _cache_misses(None)
    small, small_execs = _cache_misses(1024)  # the user's value wins: oneDNN's default
    # Both ran the 1,600 convolutions in oneDNN, the log shows them.
    assert ours_execs == small_execs == 1600
    # With the package's capacity only the first pass compiles; with 1024 the cache cycles
    # and the second pass compiles everything again.
    assert ours > 1024
    assert small >= 1.9 * ours, (ours, small)
