"""TensorBoard pictures and per-class numbers of a real short training run, read back from the
event files: ground truth | predictions of the first TEST.VIS_IMAGES validation images at each
evaluation, ground truth | top RPN proposals every VIS_PERIOD iterations, per-class AP scalars
and the precision-recall curve of each task."""
import io
import json
import os
import types

import numpy as np
import pytest
import torch
from PIL import Image

from test_train_net import TOOLS, run, tiny_yaml
from maskrcnn.config import load_cfg
from maskrcnn.data.build import build_train_dataset, build_train_loader
from maskrcnn.data.transforms import get_resize_size
from maskrcnn.engine import run as engine_run
from maskrcnn.engine.proposal_visualizer import ProposalVisualizer
from maskrcnn.evaluation.figures import GT_TITLE, drawn_size, predictions_title, proposals_title
from maskrcnn.modeling import build_model
from maskrcnn.utils.visualizer import class_color, side_by_side

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SCORE_THR = 0.05  # the 4-iteration model scores low: a low threshold gets predictions drawn


def _events(out):
    acc = EventAccumulator(str(out), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("tb_images")
    out = base / "out"
    cfg = tiny_yaml(str(base / "data"), out)
    run([os.path.join(TOOLS, "train_net.py"), "--config-file", cfg, "TEST.EVAL_PERIOD", "2", "VIS_PERIOD", "2",
         "TEST.VIS_IMAGES", "3", "TEST.VIS_SCORE_THRESHOLD", str(SCORE_THR)])
    catalog = load_cfg(cfg).DATASETS.CATALOG
    data = {split: json.loads(open(catalog[f"toy_{split}"].ANN_FILE).read()) for split in ("train", "val")}
    return {"out": out, "cfg": cfg, "events": _events(out), "val": data["val"], "train": data["train"],
            "val_dir": catalog.toy_val.IMG_DIR}


def _decode(event):
    picture = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert picture.shape == (event.height, event.width, 3)
    return picture


def _panels(picture, h, w, titles):
    """The two image panels of a side_by_side picture of (h, w) panels, and its expected size."""
    blank = side_by_side([torch.zeros(3, h, w, dtype=torch.uint8)] * 2, titles)
    top = blank.shape[1] - h
    gap = blank.shape[2] - 2 * w
    return (blank.shape[1], blank.shape[2]), picture[top:top + h, :w], picture[top:top + h, w + gap:]


def _has_color(panel, rgb):
    return bool((panel == np.array(rgb, dtype=np.uint8)).all(-1).any())


def test_evaluation_images_are_ground_truth_and_predictions_side_by_side(trained):
    acc, val = trained["events"], trained["val"]
    first = sorted(val["images"], key=lambda im: im["id"])[:3]
    tags = {f"eval/toy_val/images/{im['id']}": im for im in first}
    assert set(acc.Tags()["images"]) == set(tags) | {"train/proposals"}
    for tag, info in tags.items():
        events = acc.Images(tag)
        assert [e.step for e in events] == [2, 4]  # every evaluation, the same images
        h, w = drawn_size(info["height"], info["width"], 800)
        raw = np.asarray(Image.open(os.path.join(trained["val_dir"], info["file_name"])).convert("RGB"))
        for e in events:
            picture = _decode(e)
            size, left, right = _panels(picture, h, w, [GT_TITLE, predictions_title(SCORE_THR)])
            assert picture.shape[:2] == size
            assert (left != raw).any(-1).mean() > 0.02 and (right != raw).any(-1).mean() > 0.02  # drawn on
            labels = {a["category_id"] for a in val["annotations"] if a["image_id"] == info["id"]}
            assert labels and all(_has_color(left, class_color(c)) for c in labels)  # box outlines
            assert any(_has_color(right, class_color(c["id"])) for c in val["categories"])  # predictions


def test_proposal_images_every_vis_period(trained):
    acc = trained["events"]
    events = acc.Images("train/proposals")
    assert [e.step for e in events] == [2, 4]
    cfg = load_cfg(trained["cfg"])
    sizes = {get_resize_size(im["height"], im["width"], cfg.INPUT.MIN_SIZE_TRAIN[0], cfg.INPUT.MAX_SIZE_TRAIN)
             for im in trained["train"]["images"]}
    for e in events:
        picture = _decode(e)
        matches = [(h, w) for h, w in sizes
                   if _panels(picture, h, w, [GT_TITLE, proposals_title(20)])[0] == picture.shape[:2]]
        assert matches, (picture.shape, sizes)
        _, left, right = _panels(picture, *matches[0], [GT_TITLE, proposals_title(20)])
        assert _has_color(right, class_color(0)) and not _has_color(left, class_color(0))  # proposal outlines
        assert any(_has_color(left, class_color(c["id"])) for c in trained["val"]["categories"])


def test_per_class_ap_scalars_average_to_the_ap(trained):
    acc, val = trained["events"], trained["val"]
    scalars = set(acc.Tags()["scalars"])
    names = [c["name"] for c in val["categories"] if any(a["category_id"] == c["id"] for a in val["annotations"])]
    for task in ("bbox", "segm"):
        tags = [f"eval/toy_val/{task}/AP-{n}" for n in names]
        assert set(tags) <= scalars, sorted(scalars)
        for step in (2, 4):
            per_class = [next(e.value for e in acc.Scalars(t) if e.step == step) for t in tags]
            ap = next(e.value for e in acc.Scalars(f"eval/toy_val/{task}/AP") if e.step == step)
            assert np.mean(per_class) == pytest.approx(ap, abs=1e-4)


def test_precision_recall_curves_whose_mean_is_the_ap(trained):
    acc = trained["events"]
    assert {"eval/toy_val/bbox/pr_curve", "eval/toy_val/segm/pr_curve"} <= set(acc.Tags()["tensors"])
    assert acc.SummaryMetadata("eval/toy_val/bbox/pr_curve").plugin_data.plugin_name == "pr_curves"
    for task in ("bbox", "segm"):
        events = acc.Tensors(f"eval/toy_val/{task}/pr_curve")
        assert [e.step for e in events] == [2, 4]
        for e in events:
            dims = [d.size for d in e.tensor_proto.tensor_shape.dim]
            data = np.asarray(e.tensor_proto.float_val, dtype=np.float64).reshape(dims)
            assert data.shape == (6, 101)  # TP, FP, TN, FN, precision, recall at 101 recall levels
            precision, recall = data[4], data[5]
            assert recall == pytest.approx(np.linspace(0, 1, 101), abs=1e-6)
            assert ((precision >= 0) & (precision <= 1)).all()
            ap = next(s.value for s in acc.Scalars(f"eval/toy_val/{task}/AP") if s.step == e.step)
            assert 100 * precision.mean() == pytest.approx(ap, abs=1e-3)
    bbox = np.asarray(acc.Tensors("eval/toy_val/bbox/pr_curve")[-1].tensor_proto.float_val).reshape(6, 101)
    assert bbox[4].max() > 0  # something was detected: the test can tell a curve from zeros


def test_proposal_hook_costs_nothing_off_period(trained, tmp_path):
    """Forward hooks exist only during the iterations it draws, and are gone after them."""
    cfg = load_cfg(trained["cfg"], ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "3"])
    dataset = build_train_dataset(cfg)
    cfg.defrost()
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = dataset.num_classes + 1
    model = build_model(cfg)
    written = []
    writer = types.SimpleNamespace(add_image=lambda tag, image, step: written.append((tag, tuple(image.shape), step)))
    hook = ProposalVisualizer(3, writer, [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"},
                                          {"id": 3, "name": "triangle"}])
    hook.trainer = types.SimpleNamespace(model=model, iter=0)
    for it, (images, targets, _) in enumerate(build_train_loader(cfg, dataset=dataset), start=1):
        hook.trainer.iter = it
        hook.before_step()
        hooked = bool(model._forward_pre_hooks) or bool(model.rpn._forward_hooks)
        assert hooked == (it == 3), it
        model(images, targets)
        hook.after_step()
        assert not model._forward_pre_hooks and not model.rpn._forward_hooks
    assert [(tag, step) for tag, _, step in written] == [("train/proposals", 3)]
    def visualizers(period):
        cfg.VIS_PERIOD = period
        return [h for h in engine_run.build_hooks(cfg, None, None, [], None, None) if isinstance(h, ProposalVisualizer)]
    assert visualizers(0) == [] and [h.period for h in visualizers(3)] == [3]  # VIS_PERIOD 0: not registered


def test_writer_refuses_what_tensorboard_would_misread(tmp_path):
    from maskrcnn.utils.events import TensorboardWriter

    with TensorboardWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match=r"\(3, H, W\) uint8 tensor, got \(5, 6, 3\)"):
            writer.add_image("x", torch.zeros(5, 6, 3, dtype=torch.uint8), 0)
        with pytest.raises(ValueError, match="uint8"):
            writer.add_image("x", torch.zeros(3, 5, 6), 0)
        with pytest.raises(ValueError, match="same 2..127 points, got 3 and 2"):
            writer.add_pr_curve("pr", [0, 0.5, 1], [1, 0.5], 0)
        writer.add_pr_curve("pr", [0, 0.5, 1], [1.0, 0.75, 0.0], 7)
    e = _events(tmp_path).Tensors("pr")[0]
    data = np.asarray(e.tensor_proto.float_val).reshape(6, 3)
    assert e.step == 7 and data[4].tolist() == [1.0, 0.75, 0.0] and data[5].tolist() == [0, 0.5, 1]
