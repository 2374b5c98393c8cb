"""Every tensor the training step, inference and the predictor make is placed on the data's device
(issue 13: the GPU path correct by construction, checked on the CPU).

On a GPU, a tensor made without ``device=`` lands on the CPU next to data on ``cuda``: the first
op that mixes them fails hours into a run, or copies and waits. Here both would be the CPU, so
these tests run the real code under ``device_guard.stray_factories_on_meta``, which puts every
device-less factory call of ``maskrcnn/`` on the ``meta`` device: any such tensor that meets the
data raises at once, naming the line. The batches are made before the guard starts (the data
pipeline builds CPU tensors on purpose; the prefetcher moves them), and everything after that
runs under it: the trainer with its hooks (guards, logs, TensorBoard, a checkpoint), mixed
precision and channels-last, the dataset prediction loop and the predictor with its mask
pasting.
"""
import itertools
import os

import pytest
import torch

from conftest import GN_HEADS, tiny_cfg
from device_guard import PACKAGE, stray_factories_on_meta
from maskrcnn.checkpoint import Checkpointer
from maskrcnn.config import resolve_num_classes
from maskrcnn.data.build import build_test_loaders, build_train_dataset, build_train_loader, dataset_categories
from maskrcnn.data.datasets.shapes import ensure_shapes_dataset
from maskrcnn.data.transforms import ResizeShortestEdge
from maskrcnn.engine import run
from maskrcnn.engine.inference import predict_dataset
from maskrcnn.modeling import build_model
from maskrcnn.predictor import Predictor
from maskrcnn.solver import make_lr_scheduler, make_optimizer
from maskrcnn.utils.events import TensorboardWriter


def _cfg(tmp_path, overrides=()):
    ann, img_dir = ensure_shapes_dataset(str(tmp_path / "data"), "train", 6, 0)
    cfg = tiny_cfg()
    cfg.merge_from_list([
        "DATASETS.CATALOG", {"toy": {"ANN_FILE": ann, "IMG_DIR": img_dir}}, "DATASETS.TRAIN", ("toy",),
        "DATASETS.TEST", ("toy",), "DATALOADER.NUM_WORKERS", 0, "INPUT.MIN_SIZE_TRAIN", (64,),
        "INPUT.MAX_SIZE_TRAIN", 96, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96,
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", (1,), "SOLVER.WARMUP_ITERS", 1,
        "SOLVER.CHECKPOINT_PERIOD", 2, "SOLVER.LOG_PERIOD", 1, "SOLVER.CLIP_GRADIENTS.ENABLED", True,
        "TEST.IMS_PER_BATCH", 3, "SEED", 0, "OUTPUT_DIR", str(tmp_path / "out"),
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 0, *overrides])
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    return cfg


def _in_package(source: str, **names):
    """Run ``source`` as if it were a line of ``maskrcnn/`` (what the guard watches)."""
    exec(compile(source, os.path.join(PACKAGE, "placed_here.py"), "exec"), {"torch": torch, **names})


def test_the_guard_catches_a_device_less_tensor_of_the_package():
    x = torch.ones(3)
    _in_package("torch.zeros(3) + x", x=x)  # without the guard: one device, nothing shows
    with stray_factories_on_meta() as guard:
        with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
            _in_package("torch.zeros(3) + x", x=x)
        with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
            _in_package("x * torch.tensor(2.0)", x=x)
        # A stray index: torch itself lets a meta index pass beside CPU data, the guard does not.
        for line in ("x[torch.tensor([0, 2])]", "x[torch.arange(2)] = 1.0", "x.index_select(0, torch.arange(2))",
                     "torch.gather(x, 0, torch.zeros(2, dtype=torch.long))",
                     "x[torch.arange(2), None]"):
            with pytest.raises(RuntimeError, match="device meta .* meets one on cpu"):
                _in_package(line, x=x)
        assert torch.equal(x, torch.ones(3))  # nothing was written
        _in_package("torch.zeros(3, device=x.device) + torch.as_tensor(x) + torch.arange(3, device=x.device)", x=x)
        _in_package("x[torch.arange(2, device=x.device)]", x=x)
        torch.zeros(3) + x  # a test's own line (and torch's, torchvision's) is left alone
    assert guard.redirected == 7


@pytest.mark.parametrize("overrides", [
    (),
    (*GN_HEADS, "MODEL.CHANNELS_LAST", True, "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.DTYPE", "bfloat16"),
], ids=["float32", "gn_heads-channels_last-bf16"])
def test_training_steps_place_every_tensor_on_the_data_device(tmp_path, overrides):
    cfg = _cfg(tmp_path, overrides)
    dataset = build_train_dataset(cfg)
    categories = dataset_categories(dataset)
    cfg = resolve_num_classes(cfg, len(categories), "toy")
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    loader = build_train_loader(cfg, dataset=dataset)
    batches = list(itertools.islice(loader, cfg.SOLVER.MAX_ITER))  # the host's part, before the guard
    trainer = run.build_trainer(cfg, model, batches, optimizer, scheduler)
    writer = TensorboardWriter(cfg.OUTPUT_DIR)
    checkpointer = Checkpointer(model, optimizer, scheduler, cfg.OUTPUT_DIR, cfg=cfg)
    trainer.register_hooks(run.build_hooks(cfg, checkpointer, loader, categories, writer, eval_fn=None))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with stray_factories_on_meta():
            trainer.train(0, cfg.SOLVER.MAX_ITER)
    finally:
        writer.close()
    assert trainer.iter == 2 and torch.isfinite(torch.tensor(trainer.loss))
    assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2  # the steps were applied


def test_inference_and_the_predictor_place_every_tensor_on_the_data_device(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 4
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.roi_heads.box.predictor.cls_score.bias[1] = 8.0  # confident: detections reach the mask head
    (name, loader), = build_test_loaders(cfg)
    batches = list(loader)
    image = (torch.rand(90, 120, 3) * 255).to(torch.uint8).numpy()
    predictor = Predictor(model, transform=ResizeShortestEdge(64, 96))
    with stray_factories_on_meta():
        predictions = predict_dataset(model, batches, name=name)
        out = predictor(image)
    assert len(predictions) == 6 and sum(len(p) for p in predictions.values()) > 0
    assert all(p.get_field("mask").device.type == "cpu" for p in predictions.values())
    n = len(out["boxes"])
    assert n > 0 and out["masks"].shape == (n, 90, 120)
