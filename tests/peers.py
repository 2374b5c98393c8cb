"""Peer models with seeded random weights, for parity tests and benchmarks against torchvision.

Random initialisation alone gives a network that detects nothing (every class score near
``1 / num_classes``) and whose deep features are badly scaled. :func:`make_confident`
adjusts a torchvision Mask R-CNN so that it behaves like a trained one for the purpose of
comparing implementations: its norm layers are calibrated on images (each takes the
per-channel mean and variance of its input, as BatchNorm statistics would be after
training), residual branches are damped (trained ResNets are close to identity maps), and
the prediction layers are scaled so that objectness and mask logits spread over a useful
range. The class logits are then standardised on the proposals of a calibration image (each
class's logit gets the same mean and spread), so that many classes win somewhere: random
weights alone let the few classes best aligned with the mean feature take nearly every
detection. Scores range from about 0.1 to 0.9, with few ties. Nothing here downloads.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HEAD_SCALES", "smooth_images", "torchvision_maskrcnn", "make_confident"]

#: Multipliers of the prediction layers' random weights (see module docstring); the class
#: logits are standardised instead (``class_spread``, ``background_bias`` of make_confident).
HEAD_SCALES: Dict[str, float] = {
    "rpn.head.cls_logits": 30.0,
    "roi_heads.box_predictor.bbox_pred": 3.0,
    "roi_heads.mask_predictor.mask_fcn_logits": 30.0,
}


def smooth_images(sizes: Sequence[Tuple[int, int]], seed: int = 0) -> List[torch.Tensor]:
    """Photo-like RGB uint8 images ``(3, H, W)``: bilinearly upsampled coarse noise.

    Smooth content gives the network edges and blobs to respond to, unlike white noise.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        coarse = torch.rand(1, 3, max(h // 16, 2), max(w // 16, 2), generator=g) * 255
        out.append(F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
                   .round().to(torch.uint8))
    return out


def torchvision_maskrcnn(frozen_bn: bool = False, num_classes: int = 91, seed: int = 0) -> nn.Module:
    """torchvision's ``maskrcnn_resnet50_fpn`` with seeded random weights, in eval mode.

    Args:
        frozen_bn: False: exactly ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``
            (``BatchNorm2d``, all layers trainable). True: the model torchvision builds when
            pretrained weights are given (``FrozenBatchNorm2d``, stem and stage 2 frozen), i.e.
            what users fine-tune; built without downloading anything.
        num_classes: outputs of the box predictor, background included.
        seed: torch seed of the initialisation.
    """
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(seed)
    if not frozen_bn:
        return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes).eval()
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    return MaskRCNN(backbone, num_classes=num_classes).eval()


@torch.no_grad()
def make_confident(model: nn.Module, seed: int = 0, residual_gain: float = 0.3,
                   head_scales: Dict[str, float] = HEAD_SCALES, class_spread: float = 1.5,
                   background_bias: float = 1.0) -> nn.Module:
    """Calibrate and scale a torchvision Mask R-CNN in place (see module docstring).

    Args:
        model: from :func:`torchvision_maskrcnn`.
        seed: seed of the calibration images and of the norm layers' affine parameters.
        residual_gain: multiplier of the last norm layer (``bn3``) of every bottleneck.
        head_scales: multipliers of the prediction layers' weights.
        class_spread: standard deviation of every class logit over the calibration proposals
            (their mean is the layer's random bias).
        background_bias: added to the background logit (lowers every score).

    Returns:
        ``model``, in eval mode.
    """
    model.eval()
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.backbone.body.modules() if hasattr(m, "running_var")]
    hooks = [m.register_forward_pre_hook(_calibrate_hook) for m in norms]
    for m in norms:
        c = m.weight.shape[0]
        m.weight.copy_(1 + 0.1 * torch.randn(c, generator=g))
        m.bias.copy_(0.1 * torch.randn(c, generator=g))
    images = [im.float() / 255 for im in smooth_images([(480, 640), (512, 512)], seed)]
    try:
        batch, _ = model.transform(images)
        model.backbone.body(batch.tensors)
    finally:
        for h in hooks:
            h.remove()
    for name, m in model.backbone.body.named_modules():
        if name.endswith("bn3"):
            m.weight.mul_(residual_gain)
            m.bias.mul_(residual_gain)
    for name, scale in head_scales.items():
        model.get_submodule(name).weight.mul_(scale)
    _standardise_class_logits(model, images[0], class_spread, background_bias)
    return model


def _standardise_class_logits(model: nn.Module, image: torch.Tensor, spread: float,
                              background_bias: float) -> None:
    """Rescale ``cls_score`` so that each class logit, over the proposals of ``image``
    ``(3, H, W)`` float in 0..1, has mean 0 (background: ``background_bias``) and standard
    deviation ``spread``."""
    predictor = model.roi_heads.box_predictor
    features: List[torch.Tensor] = []
    hook = predictor.register_forward_pre_hook(lambda module, args: features.append(args[0]))
    try:
        model([image])
    finally:
        hook.remove()
    cls = predictor.cls_score
    logits = cls(features[0])  # (proposals, classes)
    factor = spread / logits.std(0).clamp_min(1e-6)
    cls.weight.mul_(factor[:, None])
    cls.bias.sub_(logits.mean(0)).mul_(factor)
    cls.bias[0] += background_bias


def _calibrate_hook(module: nn.Module, args: tuple) -> None:
    """Set a norm layer's running statistics to those of its input (before it is applied)."""
    x = args[0]
    module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False))
