"""maskrcnn.checkpoint.weights: torchvision://NAME weights resolve through torch's hub cache (no
download when cached), an ImageNet ResNet state dict lands on backbone.body.*, and MODEL.WEIGHT
takes one path for every source."""
import os

import pytest
import torch
import torchvision

from conftest import tiny_cfg
from maskrcnn.modeling import build_model
from maskrcnn.checkpoint import Checkpointer, load_weights_file
from maskrcnn.checkpoint.weights import resolve_weights, torchvision_weights_url


def test_torchvision_resnet_weights_from_cache_load_into_backbone(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    url = torchvision_weights_url("resnet18")
    cached = hub / "checkpoints" / os.path.basename(url)
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), cached)

    def no_download(*a, **k):
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    assert resolve_weights("torchvision://resnet18") == str(cached)

    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    model = build_model(cfg)
    Checkpointer(model, save_dir=str(tmp_path / "out")).resume_or_load("torchvision://resnet18", resume=False)
    body = model.backbone.body.state_dict()
    for name, value in reference.state_dict().items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        assert torch.equal(body[name], value), name


def test_weights_of_another_input_convention_are_named(tmp_path, caplog):
    """MODEL.WEIGHT checked against the config: an ImageNet ResNet expects torchvision's input; an
    ImageNet backbone says nothing of ROIAlign (POOLER_ALIGNED is a head's convention)."""
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    cfg = tiny_cfg()  # RGB in 0..1, mean 0.5, std 0.25
    cfg.merge_from_list(["MODEL.RESNETS.STEM_OUT_CHANNELS", 64, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                         "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.ROI_BOX_HEAD.POOLER_ALIGNED", True])
    model = build_model(cfg)
    with caplog.at_level("WARNING", logger="maskrcnn"):
        Checkpointer(model, save_to_disk=False, cfg=cfg).load(str(path), model_only=True)
    [warning] = [r.getMessage() for r in caplog.records if "input convention" in r.getMessage()]
    assert warning.startswith(f"{path} was trained with another input convention")
    assert "INPUT.PIXEL_MEAN: the config has [0.5, 0.5, 0.5], the weights expect [0.485, 0.456, 0.406]" in warning
    assert "INPUT.PIXEL_STD" in warning and "POOLER_ALIGNED" not in warning
    assert "TO_BGR255" not in warning and "STRIDE_IN_1X1" not in warning  # these agree
    caplog.clear()
    cfg.merge_from_list(["INPUT.PIXEL_MEAN", [0.485, 0.456, 0.406], "INPUT.PIXEL_STD", [0.229, 0.224, 0.225]])
    with caplog.at_level("WARNING", logger="maskrcnn"):
        Checkpointer(model, save_to_disk=False, cfg=cfg).load(str(path), model_only=True)
    assert "input convention" not in caplog.text


def test_uncached_download_failure_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="by hand"):
        resolve_weights("torchvision://resnet50")
    with pytest.raises(ValueError, match="unknown torchvision model"):
        resolve_weights("torchvision://not_a_model")


@pytest.mark.parametrize("name,file_prefix", [("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_coco-"),
                                              ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_coco-")])
def test_torchvision_coco_detectors_resolve_from_cache(tmp_path, monkeypatch, name, file_prefix):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    url = torchvision_weights_url(name)
    assert os.path.basename(url).startswith(file_prefix)  # COCO_V1, not an ImageNet backbone
    cached = hub / "checkpoints" / os.path.basename(url)
    cached.parent.mkdir(parents=True)
    # torchvision's names (legacy ones, as in the published file), small shapes
    torch.save({"backbone.body.conv1.weight": torch.randn(4, 3, 7, 7), "rpn.head.conv.weight": torch.randn(4, 4, 3, 3),
                "roi_heads.box_predictor.cls_score.weight": torch.randn(91, 8)}, cached)

    def no_download(*a, **k):
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    path = resolve_weights(f"torchvision://{name}")
    assert path == str(cached)
    state, report = load_weights_file(path)
    assert report.source == "torchvision"
    assert set(state) == {"backbone.body.conv1.weight", "rpn.head.conv.weight",
                          "roi_heads.box.predictor.cls_score.weight"}
