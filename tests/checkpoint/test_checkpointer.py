"""Tests for maskrcnn.checkpoint."""

import logging
import os
import pathlib

import pytest
import torch
from torch import nn

from maskrcnn.checkpoint import CheckpointError, Checkpointer, load_model_state


@pytest.fixture(autouse=True)
def _propagate_package_logs(monkeypatch):
    """setup_logger() elsewhere may disable propagation; caplog needs it."""
    monkeypatch.setattr(logging.getLogger("maskrcnn"), "propagate", True)


class Net(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class Wrapper(nn.Module):
    """Mimics DDP's ``.module`` naming."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def _train_setup(seed=0, steps=3):
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def _fresh():
    torch.manual_seed(123)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.1)
    return model, opt, sched


def test_save_load_round_trip(tmp_path):
    model, opt, sched = _train_setup()
    ckpt = Checkpointer(model, opt, sched, save_dir=str(tmp_path))
    path = ckpt.save("model_0000003", iteration=3)
    assert path == os.path.join(str(tmp_path), "model_0000003.pth")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert ckpt.has_checkpoint()
    assert ckpt.get_checkpoint_file() == path

    model2, opt2, sched2 = _fresh()
    extra = Checkpointer(model2, opt2, sched2, save_dir=str(tmp_path)).load(path)
    assert extra == {"iteration": 3}
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    for p1, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(opt.state[p1]["momentum_buffer"], opt2.state[p2]["momentum_buffer"])
    assert sched2.last_epoch == 3
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_atomic_write_leaves_no_temp_files(tmp_path):
    model, opt, sched = _train_setup()
    ckpt = Checkpointer(model, opt, sched, save_dir=str(tmp_path))
    ckpt.save("model_a", iteration=1)
    ckpt.save("model_b", iteration=2)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_a.pth", "model_b.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_b.pth"
    data = torch.load(ckpt.get_checkpoint_file(), weights_only=True)
    assert data["iteration"] == 2 and set(data) == {"model", "optimizer", "scheduler", "iteration"}


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _train_setup()
    ckpt = Checkpointer(model, opt, sched, save_dir=str(tmp_path))
    ckpt.save("model_a", iteration=1)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        ckpt.save("model_b", iteration=2)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_a.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"


def test_no_save_when_not_main(tmp_path):
    model, opt, sched = _train_setup()
    assert Checkpointer(model, opt, save_dir=str(tmp_path), save_to_disk=False).save("x") is None
    assert os.listdir(tmp_path) == []


def test_relative_last_checkpoint_survives_moving_dir(tmp_path):
    model, opt, sched = _train_setup()
    Checkpointer(model, opt, sched, save_dir=str(tmp_path / "a")).save("m", iteration=7)
    os.rename(tmp_path / "a", tmp_path / "b")
    model2, opt2, sched2 = _fresh()
    ckpt = Checkpointer(model2, opt2, sched2, save_dir=str(tmp_path / "b"))
    assert ckpt.resume_or_load("", resume=True) == {"iteration": 7}


def test_model_only_ignores_optimizer(tmp_path, caplog):
    model, opt, sched = _train_setup()
    path = Checkpointer(model, opt, sched, save_dir=str(tmp_path)).save("m", iteration=3)
    model2, opt2, sched2 = _fresh()
    with caplog.at_level(logging.INFO, logger="maskrcnn"):
        extra = Checkpointer(model2, opt2, sched2).load(path, model_only=True)
    assert extra == {}
    assert torch.equal(model2.head.weight, model.head.weight)
    assert len(opt2.state) == 0
    assert sched2.last_epoch == 0
    assert "loaded model weights only; optimizer, scheduler and iteration start fresh" in caplog.text


def test_shape_mismatch_skipped_and_reported(tmp_path, caplog):
    torch.manual_seed(0)
    src = Net(num_classes=3)
    path = tmp_path / "w.pth"
    torch.save({"model": src.state_dict(), "extra_tensor": torch.zeros(1)}, path)
    dst = Net(num_classes=5)
    head_before = dst.head.weight.clone()
    with caplog.at_level(logging.INFO, logger="maskrcnn"):
        report = load_model_state(dst, torch.load(path, weights_only=True)["model"],
                                  logging.getLogger("maskrcnn.test"))
    names = {s[0] for s in report["skipped"]}
    assert names == {"head.weight", "head.bias"}
    assert ("head.weight", (3, 4), (5, 4)) in report["skipped"]
    assert torch.equal(dst.head.weight, head_before)
    assert torch.equal(dst.body[0].weight, src.body[0].weight)
    assert torch.equal(dst.body[1].running_mean, src.body[1].running_mean)
    assert report["missing"] == [] and report["unexpected"] == []
    assert "head.weight: (3, 4) -> (5, 4)" in caplog.text


def test_missing_unexpected_and_module_prefix(tmp_path):
    torch.manual_seed(0)
    src = Wrapper(Net())
    sd = src.state_dict()
    assert all(k.startswith("module.") for k in sd)
    sd.pop("module.head.bias")
    sd["module.extra.weight"] = torch.zeros(2)
    path = tmp_path / "raw.pth"
    torch.save(sd, path)  # raw state dict, no "model" key
    dst = Net()
    report = load_model_state(dst, torch.load(path, weights_only=True))
    assert report["missing"] == ["head.bias"]
    assert report["unexpected"] == ["extra.weight"]
    assert torch.equal(dst.head.weight, src.module.head.weight)

    dst2 = Net()
    assert Checkpointer(dst2).load(path) == {}
    assert torch.equal(dst2.body[0].weight, src.module.body[0].weight)


def test_missing_file_error(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        Checkpointer(Net()).load(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n", "truncate"])
def test_corrupt_file_error(tmp_path, content):
    model, opt, sched = _train_setup()
    good = Checkpointer(model, opt, sched, save_dir=str(tmp_path)).save("good")
    if content == "truncate":
        content = pathlib.Path(good).read_bytes()[:200]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(RuntimeError, match=r"bad\.pth is not a valid checkpoint"):
        Checkpointer(Net()).load(bad)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_code_executing_pickle_is_refused(tmp_path):
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "marker"
    torch.save({"model": Net().state_dict(), "payload": _Payload(str(marker))}, evil)
    with pytest.raises(RuntimeError) as info:
        Checkpointer(Net()).load(evil)
    msg = str(info.value)
    assert "evil.pth" in msg and "not a valid checkpoint" in msg
    assert "refused for safety" in msg
    assert not marker.exists()
    # sanity: the payload really would run under an unsafe load
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_resume_with_checkpoint(tmp_path, caplog):
    model, opt, sched = _train_setup()
    Checkpointer(model, opt, sched, save_dir=str(tmp_path)).save("model_0000003", iteration=3)
    model2, opt2, sched2 = _fresh()
    ckpt = Checkpointer(model2, opt2, sched2, save_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="maskrcnn"):
        extra = ckpt.resume_or_load("does_not_matter.pth", resume=True)
    assert extra == {"iteration": 3}
    assert len(opt2.state) > 0 and sched2.last_epoch == 3
    assert "resuming" in caplog.text


def test_resume_without_checkpoint_falls_back_to_weights(tmp_path, caplog):
    model, opt, sched = _train_setup()
    weights = Checkpointer(model, opt, sched, save_dir=str(tmp_path / "pre")).save("w", iteration=9)
    model2, opt2, sched2 = _fresh()
    ckpt = Checkpointer(model2, opt2, sched2, save_dir=str(tmp_path / "out"))
    with caplog.at_level(logging.INFO, logger="maskrcnn"):
        extra = ckpt.resume_or_load(weights, resume=True)
    assert extra == {}
    assert torch.equal(model2.head.weight, model.head.weight)
    assert len(opt2.state) == 0
    assert "no checkpoint found" in caplog.text
    assert ckpt.resume_or_load("", resume=True) == {}


def test_no_resume_warns_about_stale_checkpoint(tmp_path, caplog):
    model, opt, sched = _train_setup()
    out = tmp_path / "out"
    Checkpointer(model, opt, sched, save_dir=str(out)).save("model_0000003", iteration=3)
    weights = Checkpointer(model, save_dir=str(tmp_path / "pre")).save("w")
    model2, opt2, sched2 = _fresh()
    ckpt = Checkpointer(model2, opt2, sched2, save_dir=str(out))
    with caplog.at_level(logging.INFO, logger="maskrcnn"):
        extra = ckpt.resume_or_load(weights, resume=False)
    assert extra == {}
    assert len(opt2.state) == 0 and sched2.last_epoch == 0
    assert torch.equal(model2.head.weight, model.head.weight)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "IGNORED" in r.message]
    assert warnings and "--resume" in warnings[0].message

    # without weights: nothing loaded, still starts at 0
    model3, opt3, sched3 = _fresh()
    before = model3.head.weight.clone()
    assert Checkpointer(model3, opt3, sched3, save_dir=str(out)).resume_or_load("", False) == {}
    assert torch.equal(model3.head.weight, before)


@pytest.mark.parametrize("url", ["catalog://ImageNetPretrained/MSRA/R-50", "https://x/y.pth"])
def test_remote_weights_rejected(tmp_path, url):
    with pytest.raises(ValueError, match="only local files"):
        Checkpointer(Net(), save_dir=str(tmp_path)).resume_or_load(url, resume=False)


# ----------------------------------------------------------- bad checkpoints on resume
def _two_checkpoints(out):
    """model_0000002.pth then model_0000004.pth (newer mtime); last_checkpoint names the latter."""
    model, opt, sched = _train_setup()
    ckpt = Checkpointer(model, opt, sched, save_dir=str(out))
    old = ckpt.save("model_0000002", iteration=2)
    new = ckpt.save("model_0000004", iteration=4)
    os.utime(old, (1_000_000, 1_000_000))
    return old, new


def test_resume_from_truncated_last_checkpoint_names_the_intact_one(tmp_path):
    old, new = _two_checkpoints(tmp_path)
    pathlib.Path(new).write_bytes(pathlib.Path(new).read_bytes()[:1000])
    model, opt, sched = _fresh()
    before = model.head.weight.clone()
    ckpt = Checkpointer(model, opt, sched, save_dir=str(tmp_path))
    with pytest.raises(CheckpointError) as info:
        ckpt.resume_or_load("", resume=True)
    msg = str(info.value)
    assert "model_0000004.pth" in msg and "corrupt or truncated" in msg
    assert "newest intact checkpoint" in msg and "model_0000002.pth (iteration 2)" in msg
    tag = os.path.join(str(tmp_path), "last_checkpoint")
    assert f"echo model_0000002.pth > {tag}" in msg and "--resume" in msg
    assert "Nothing was rolled back" in msg
    # nothing was applied, and last_checkpoint is left alone
    assert torch.equal(model.head.weight, before) and len(opt.state) == 0
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    # following the advice resumes from the older checkpoint
    (tmp_path / "last_checkpoint").write_text("model_0000002.pth\n")
    assert ckpt.resume_or_load("", resume=True) == {"iteration": 2}


def test_resume_when_last_checkpoint_names_a_missing_file(tmp_path):
    _two_checkpoints(tmp_path)
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(CheckpointError, match=r"model_0000009\.pth.*not found.*model_0000004\.pth \(iteration 4\)"):
        Checkpointer(Net(), save_dir=str(tmp_path)).resume_or_load("", resume=True)


def test_resume_without_any_intact_checkpoint_says_so(tmp_path):
    old, new = _two_checkpoints(tmp_path)
    for f in (old, new):
        pathlib.Path(f).write_bytes(b"garbage")
    # weights without training state (a slimmed file) cannot be resumed from either
    torch.save({"model": Net().state_dict()}, tmp_path / "model_final-0123abcd.pth")
    with pytest.raises(CheckpointError) as info:
        Checkpointer(Net(), save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert "No intact checkpoint was found" in str(info.value)
    assert "run without --resume" in str(info.value)


def _evil_files(tmp_path, marker):
    """The same code-running payload as a torch.save file and as a raw (protocol 2) pickle."""
    import pickle

    by_torch = tmp_path / "model_0000006.pth"
    torch.save({"model": Net().state_dict(), "payload": _Payload(str(marker))}, by_torch)
    raw = tmp_path / "model_0000008.pth"
    with open(raw, "wb") as f:
        pickle.dump({"model": {"head.weight": _Payload(str(marker))}}, f, protocol=2)
    return by_torch, raw


@pytest.mark.parametrize("kind", ["torch.save", "raw pickle"])
@pytest.mark.parametrize("how", ["MODEL.WEIGHT", "--resume"])
def test_code_running_checkpoint_refused_as_weights_and_on_resume(tmp_path, kind, how):
    marker = tmp_path / "marker"
    by_torch, raw = _evil_files(tmp_path, marker)
    evil = by_torch if kind == "torch.save" else raw
    model, opt, sched = _fresh()
    out = tmp_path / "out"
    ckpt = Checkpointer(model, opt, sched, save_dir=str(out))
    if how == "--resume":
        ckpt.save("model_0000002", iteration=2)
        (out / "last_checkpoint").write_text(os.path.abspath(evil))
    with pytest.raises(CheckpointError) as info:
        ckpt.resume_or_load(str(evil) if how == "MODEL.WEIGHT" else "", resume=how == "--resume")
    msg = str(info.value)
    assert evil.name in msg and "refused for safety" in msg
    if how == "--resume":
        assert "model_0000002.pth (iteration 2)" in msg
    assert not marker.exists()


def test_resume_removes_files_of_interrupted_saves(tmp_path):
    model, opt, sched = _train_setup()
    Checkpointer(model, opt, sched, save_dir=str(tmp_path)).save("model_0000002", iteration=2)
    for stale in (".model_0000004.pth.1a2b3c4d.tmp", ".last_checkpoint.5e6f7a8b.tmp"):
        (tmp_path / stale).write_bytes(b"partial")
    (tmp_path / "notes.tmp").write_text("not ours")
    assert Checkpointer(Net(), save_dir=str(tmp_path)).resume_or_load("", resume=True) == {"iteration": 2}
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000002.pth", "notes.tmp"]


def test_checkpoint_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = Checkpointer(Net(), save_dir=str(tmp_path)).save("m")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "last_checkpoint").st_mode & 0o777 == 0o644


def test_load_table_lists_skipped_missing_and_unexpected(caplog):
    torch.manual_seed(0)
    sd = Net(num_classes=3).state_dict()
    sd.pop("body.0.bias")
    sd["extra.weight"] = torch.zeros(2)
    with caplog.at_level(logging.INFO, logger="maskrcnn"):
        report = load_model_state(Net(num_classes=5), sd, logging.getLogger("maskrcnn.test"))
    assert report["missing"] == ["body.0.bias"] and report["unexpected"] == ["extra.weight"]
    text = caplog.text
    assert "skipped 2 tensors with mismatched shape (file -> model)" in text
    assert "head.weight: (3, 4) -> (5, 4)" in text and "head.bias: (3,) -> (5,)" in text
    assert "missing from file (1), left as initialised:\n  body.0.bias" in text
    assert "unexpected in file (1), ignored:\n  extra.weight" in text
    assert any(r.levelno == logging.WARNING for r in caplog.records)
