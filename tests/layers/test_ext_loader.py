"""The lazy loader of maskrcnn._C: one INFO line per process, fallback when it is absent."""
import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from maskrcnn.layers import _ext
from maskrcnn.layers.mask_ops import paste_masks_in_image

REPO_ROOT = Path(__file__).resolve().parents[2]
FALLBACK = "mask pasting: pure-PyTorch path (extension not built: "
KERNEL = "mask pasting: CUDA kernel from maskrcnn._C"


@pytest.fixture
def fresh_loader():
    _ext._reset()
    yield
    _ext._reset()


def messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "maskrcnn.layers._ext"]


def test_fallback_when_extension_absent(fresh_loader, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "maskrcnn._C", None)  # import raises ImportError
    with caplog.at_level(logging.INFO, logger="maskrcnn.layers._ext"):
        assert _ext.load_status()[0] is False
        assert _ext.paste_ops() is None
        assert _ext.load_status()[0] is False
    logged = messages(caplog)
    assert len(logged) == 1 and logged[0].startswith(FALLBACK) and "maskrcnn._C" in logged[0]


def test_fallback_when_library_lacks_the_op(fresh_loader, caplog, monkeypatch):
    """A stale build that loads but does not register paste_masks is not used."""
    monkeypatch.setitem(sys.modules, "maskrcnn._C", types.ModuleType("maskrcnn._C"))
    monkeypatch.setattr(torch.ops, "maskrcnn_ops", types.SimpleNamespace(), raising=False)
    with caplog.at_level(logging.INFO, logger="maskrcnn.layers._ext"):
        assert _ext.paste_ops() is None
    logged = messages(caplog)
    assert len(logged) == 1 and logged[0].startswith(FALLBACK) and "paste_masks" in logged[0]


def test_cuda_impl_without_extension_is_an_error(fresh_loader, monkeypatch):
    monkeypatch.setitem(sys.modules, "maskrcnn._C", None)
    masks = torch.rand(1, 1, 5, 5)
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="maskrcnn._C is not available"):
            paste_masks_in_image(masks.cuda(), torch.tensor([[0.0, 0.0, 3.0, 3.0]]), (4, 4), impl="cuda")
    assert paste_masks_in_image(masks, torch.tensor([[0.0, 0.0, 3.0, 3.0]]), (4, 4)).shape == (1, 4, 4)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_one_log_line_per_process_matching_the_checkout():
    """In a fresh process: exactly one line, the fallback unless _C is built in this checkout."""
    out = run_python("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        from maskrcnn.layers import _ext
        for _ in range(3):
            _ext.load_status()
        print(_ext.load_status()[0])
    """)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("mask pasting:")]
    built = importlib.util.find_spec("maskrcnn._C") is not None
    assert len(lines) == 1, out.stderr
    assert lines[0] == KERNEL if built else lines[0].startswith(FALLBACK)
    assert out.stdout.strip() == str(built)


def test_package_import_and_cpu_paste_never_load_the_extension():
    out = run_python("""
        import sys, torch
        import maskrcnn
        from maskrcnn.layers.mask_ops import masks_to_rle, paste_masks_in_image
        paste_masks_in_image(torch.rand(2, 1, 7, 7), torch.tensor([[1.0, 1, 5, 6]] * 2), (9, 9))
        masks_to_rle(torch.rand(2, 1, 7, 7), torch.tensor([[1.0, 1, 5, 6]] * 2), (9, 9))
        assert "maskrcnn._C" not in sys.modules
    """)
    assert out.returncode == 0, out.stderr
