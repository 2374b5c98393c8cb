"""SOLVER.OPTIMIZER AdamW: its parameter groups, the keys of the other optimizer refused, exact
resume through real `tools/train_net.py` runs, and a resume with the other optimizer refused
before anything is loaded or written."""
import os
import shutil

import pytest
import torch
from torch import nn

from maskrcnn.config import ConfigError, load_cfg
from maskrcnn.solver import make_optimizer
from test_train_net import TOOLS, run, tiny_yaml

TRAIN = os.path.join(TOOLS, "train_net.py")
ADAMW = ["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BASE_LR", "0.001", "SOLVER.WEIGHT_DECAY", "0.05",
         "DATASETS.TEST", "()"]


def test_adamw_gets_the_sgd_groups_and_its_betas():
    cfg = load_cfg(opts=["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BASE_LR", "0.001", "SOLVER.WEIGHT_DECAY", "0.05",
                         "SOLVER.BIAS_LR_FACTOR", "2", "SOLVER.BETAS", "(0.8, 0.99)"])
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Linear(4, 2))
    opt = make_optimizer(cfg, model)
    assert type(opt) is torch.optim.AdamW
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["weight"]["lr"] == pytest.approx(0.001) and groups["weight"]["weight_decay"] == 0.05
    assert groups["bias"]["lr"] == pytest.approx(0.002) and groups["bias"]["weight_decay"] == 0.0
    assert groups["norm"]["weight_decay"] == 0.0
    assert all(g["betas"] == (0.8, 0.99) for g in opt.param_groups)
    assert type(make_optimizer(load_cfg(), model)) is torch.optim.SGD  # the default


@pytest.mark.parametrize("opts,words", [
    (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.MOMENTUM", "0.8"], ["SOLVER.MOMENTUM", "not used", "SOLVER.BETAS"]),
    (["SOLVER.BETAS", "(0.8, 0.99)"], ["SOLVER.BETAS", "not used", "'SGD'", "SOLVER.MOMENTUM"]),
    (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BETAS", "(0.9, 0.99, 0.5)"], ["SOLVER.BETAS", "two numbers"]),
    (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BETAS", "(0.9, 1.0)"], ["SOLVER.BETAS", "out of range"]),
    (["SOLVER.OPTIMIZER", "Adam"], ["SOLVER.OPTIMIZER", "'AdamW'"]),
])
def test_the_other_optimizers_keys_are_refused(opts, words):
    with pytest.raises(ConfigError) as e:
        load_cfg(opts=opts)
    assert all(w in str(e.value) for w in words), str(e.value)


@pytest.fixture(scope="module")
def adamw_run(tmp_path_factory):
    """One uninterrupted 4-iteration AdamW run (a checkpoint at iteration 2)."""
    base = tmp_path_factory.mktemp("adamw")
    cfg = tiny_yaml(str(base / "data"), base / "out")
    run([TRAIN, "--config-file", cfg] + ADAMW)
    return {"base": base, "cfg": cfg, "out": base / "out"}


def _resumable_copy(src, dst):
    """``src`` as it was after iteration 2: its later files gone, last_checkpoint at model_0000002."""
    shutil.copytree(src, dst)
    for name in os.listdir(dst):
        if name == "model_final.pth" or name.startswith("events.out"):
            os.remove(dst / name)
    (dst / "last_checkpoint").write_text("model_0000002.pth")
    return dst


def test_adamw_run_resumed_at_a_checkpoint_ends_bit_identical(adamw_run, tmp_path):
    out = _resumable_copy(adamw_run["out"], tmp_path / "out")
    run([TRAIN, "--config-file", adamw_run["cfg"], "--resume", "OUTPUT_DIR", str(out)] + ADAMW)
    a = torch.load(adamw_run["out"] / "model_final.pth", weights_only=True)
    b = torch.load(out / "model_final.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 4
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    states = list(zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()))
    assert states and all({"exp_avg", "exp_avg_sq", "step"} <= set(sa) for sa, _ in states)
    for sa, sb in states:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[key], sb[key]), key
    assert all("betas" in g for g in b["optimizer"]["param_groups"])
    assert "resuming training state from" in (out / "log.txt").read_text()


def test_resuming_with_the_other_optimizer_is_refused_before_anything_is_written(adamw_run, tmp_path):
    out = _resumable_copy(adamw_run["out"], tmp_path / "out")
    before = {n: (out / n).read_bytes() for n in os.listdir(out) if n != "log.txt"}
    opts = [o for o in ADAMW if o not in ("SOLVER.OPTIMIZER", "AdamW")]
    proc = run([TRAIN, "--config-file", adamw_run["cfg"], "--resume", "OUTPUT_DIR", str(out)] + opts,
               check=False)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    for words in ("model_0000002.pth holds an AdamW optimizer state", "SOLVER.OPTIMIZER is SGD",
                  "resume with SOLVER.OPTIMIZER AdamW", "MODEL.WEIGHT"):
        assert words in message, proc.stderr[-2000:]
    after = {n: (out / n).read_bytes() for n in os.listdir(out) if n != "log.txt"}
    assert after == before  # no checkpoint, config.yaml or event file written or changed


def test_the_lr_advice_of_a_diverging_run_fits_the_optimizer():
    from maskrcnn.engine.hooks import lr_advice
    sgd, adamw = lr_advice(50, 2, 300), lr_advice(50, 2, 300, "AdamW")
    assert "SOLVER.OPTIMIZER SGD" in sgd and "about 0.0025 for your batch" in sgd
    assert "SOLVER.OPTIMIZER AdamW" in adamw and "not scaled linearly" in adamw and "0.0025" not in adamw
    assert all("SOLVER.WARMUP_ITERS (now 300)" in a for a in (sgd, adamw))


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_fused_where_torch_has_it_and_the_same_steps_as_the_per_tensor_optimizer(optimizer):
    """On the CPU the fused implementation is used, and 3 steps of it match torch's per-tensor
    optimizer with the same groups."""
    cfg = load_cfg(opts=["SOLVER.OPTIMIZER", optimizer, "SOLVER.BASE_LR", "0.01", "SOLVER.WEIGHT_DECAY", "0.01"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    twin = [p.detach().clone().requires_grad_() for p in model.parameters()]
    start = [p.detach().clone() for p in model.parameters()]
    fused = make_optimizer(cfg, model)
    assert fused.defaults["fused"] is True
    index = {id(p): i for i, p in enumerate(model.parameters())}
    groups = [{k: v for k, v in g.items() if k in ("lr", "weight_decay", "betas", "momentum")}
              | {"params": [twin[index[id(p)]] for p in g["params"]]} for g in fused.param_groups]
    reference = (torch.optim.AdamW if optimizer == "AdamW" else torch.optim.SGD)(groups, foreach=False)
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        for p, q in zip(model.parameters(), twin):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        fused.step()
        reference.step()
    for p, q, p0 in zip(model.parameters(), twin, start):
        assert not torch.equal(p, p0)  # the steps moved every parameter
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_without_fused_kernels_for_the_device_the_per_tensor_optimizer_is_used(monkeypatch, caplog):
    class NoFused(torch.optim.SGD):  # what torch raises for parameters of such a device
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors "
                                   "of supported devices")
            super().__init__(params, **kw)
    monkeypatch.setattr(torch.optim, "SGD", NoFused)
    with caplog.at_level("INFO", logger="maskrcnn"):
        opt = make_optimizer(load_cfg(), nn.Linear(2, 2))
    assert type(opt) is NoFused and not opt.defaults["fused"]
    assert "no fused implementation" in caplog.text
