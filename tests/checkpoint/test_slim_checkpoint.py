"""tools/slim_checkpoint.py, run as a real process on a real training checkpoint."""
import hashlib
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from maskrcnn.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "slim_checkpoint.py")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.BatchNorm2d(8)  # int64 num_batches_tracked stays int64 with --half
        self.head = nn.Linear(8, 4)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    cats = [{"id": 7, "name": "cat"}]
    path = Checkpointer(model, opt, save_dir=str(tmp_path / "train")).save(
        "model_final", iteration=100, categories=cats, rng=[{"torch": torch.get_rng_state()}],
        recommended_config={"INPUT.TO_BGR255": True})
    return model, path


def _slim(src, dst, *flags):
    proc = subprocess.run([sys.executable, TOOL, str(src), str(dst), *flags], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    final = proc.stdout.split(" (")[0].strip()
    return final, proc.stdout


@pytest.mark.parametrize("half", [False, True])
def test_slim_keeps_weights_only_and_names_the_hash(tmp_path, checkpoint, half):
    model, src = checkpoint
    final, stdout = _slim(src, tmp_path / "pub" / "model_final.pth", *(["--half"] if half else []))
    with open(final, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert os.path.basename(final) == f"model_final-{digest[:8]}.pth"
    assert os.path.dirname(final) == str(tmp_path / "pub")
    assert "MiB" in stdout
    assert sorted(os.listdir(tmp_path / "pub")) == [os.path.basename(final)]  # no temp files left

    data = torch.load(final, map_location="cpu", weights_only=True)
    assert set(data) == {"model", "categories", "recommended_config"}  # no optimizer, iteration, RNG states
    assert data["categories"] == [{"id": 7, "name": "cat"}]
    assert data["recommended_config"] == {"INPUT.TO_BGR255": True}
    own = model.state_dict()
    assert data["model"].keys() == own.keys()
    for k, v in own.items():
        if half and v.is_floating_point():
            assert data["model"][k].dtype == torch.float16
            assert torch.equal(data["model"][k], v.half()), k
        else:
            assert data["model"][k].dtype == v.dtype and torch.equal(data["model"][k], v), k
    if half:
        assert os.path.getsize(final) < os.path.getsize(src)

    # The slimmed file initialises a model through the normal path (cast back to float32).
    fresh = Net()
    Checkpointer(fresh).load(final, model_only=True)
    tol = 1e-3 if half else 0
    assert torch.allclose(fresh.head.weight, model.head.weight, atol=tol, rtol=tol)
    assert fresh.head.weight.dtype == torch.float32


def test_slim_refuses_untrusted_input(tmp_path):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": {"w": torch.zeros(1)}, "x": Payload()}, tmp_path / "evil.pth")
    proc = subprocess.run([sys.executable, TOOL, str(tmp_path / "evil.pth"), str(tmp_path / "o.pth")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode != 0 and "evil.pth" in proc.stderr and "refused for safety" in proc.stderr
    assert not marker.exists() and not list(tmp_path.glob("o*.pth"))
