"""GeneralizedRCNN: normalise + pad, backbone, RPN, ROI heads.

``loss(images, targets)`` returns a dict of stage-prefixed losses;
``predict(images)`` returns detections in the coordinates of the images it was
given. ``forward`` dispatches on whether targets are given (never on
``self.training``), so DDP can wrap the loss call and a validation loss is possible.

Every head has the same public API: ``forward`` (raw predictions), ``losses(preds, ...)``
(a dict of weighted, stage-prefixed losses) and ``inference(preds, ...)`` (per-image results);
nothing in the training step waits for the device beyond the few read-backs listed in
``tests/modeling/test_no_host_sync.py``.

Mixed precision: under ``torch.autocast`` (the trainer's ``SOLVER.AMP``), the backbone and the
heads' layers run in float16 / bfloat16, and every head returns its predictions in float32, so
that box decoding, NMS, the proposals (ROIAlign's coordinates) and the losses are float32.
ROIAlign itself computes in float32 (torchvision's autocast rule) on the low-precision features.
With ``channels_last``, the batch enters the backbone in channels-last memory format (the
build converts the weights too), which convolutions keep through the network.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..structures.bounding_box import BoxList
from ..structures.image_list import ImageList, to_image_list


class GeneralizedRCNN(nn.Module):
    """Faster / Mask R-CNN.

    Args:
        backbone: returns the feature pyramid.
        rpn: region proposal network.
        roi_heads: box (and mask) heads; None for an RPN-only model.
        pixel_mean, pixel_std: per channel, in the model's channel order and range.
        to_bgr255: images arrive RGB uint8; True flips them to BGR in 0..255,
            False keeps RGB scaled to 0..1, before normalisation.
        size_divisibility: pad the batch to a multiple of this.
        channels_last: give the backbone the batch in ``torch.channels_last`` memory format
            (the weights must be converted too: ``model.to(memory_format=torch.channels_last)``).
    """

    def __init__(self, *, backbone: nn.Module, rpn: nn.Module, roi_heads: Optional[nn.Module],
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], to_bgr255: bool,
                 size_divisibility: int = 32, channels_last: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.to_bgr255 = to_bgr255
        self.size_divisibility = size_divisibility
        self.channels_last = channels_last

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: Union[List[torch.Tensor], ImageList]) -> ImageList:
        """RGB uint8 ``(3, H, W)`` images -> normalised, padded ImageList on the model's device."""
        if isinstance(images, ImageList):
            return images
        out = []
        for im in images:
            x = im.to(self.device, non_blocking=True).float()
            x = x.flip(0) if self.to_bgr255 else x / 255.0
            out.append((x - self.pixel_mean) / self.pixel_std)
        return to_image_list(out, self.size_divisibility)

    def _features(self, batch: ImageList) -> List[torch.Tensor]:
        x = batch.tensors
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def forward(self, images, targets: Optional[List[BoxList]] = None):
        """``loss`` when targets are given, else ``predict``."""
        if targets is not None:
            return self.loss(images, targets)
        return self.predict(images)

    def loss(self, images, targets: List[BoxList]) -> Dict[str, torch.Tensor]:
        """Training losses (``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``,
        ``loss_box_reg``, ``loss_mask``) for images with ground truth at their size."""
        batch = self.preprocess(images)
        targets = [t.to(self.device, non_blocking=True) for t in targets]
        for t, size in zip(targets, batch.image_sizes):
            if t.size != size:
                raise ValueError(f"target of size {t.size} for an image of size {size}")
        features = self._features(batch)
        rpn_out = self.rpn(features)
        losses = self.rpn.losses(rpn_out, targets)
        if self.roi_heads is not None:
            proposals = self.rpn.inference(rpn_out, batch.image_sizes, training=True)
            losses.update(self.roi_heads.loss(features, proposals, targets))
        return losses

    @torch.no_grad()
    def predict(self, images) -> List[BoxList]:
        """Detections per image (fields ``scores``, ``labels``, and ``mask`` (N, 1, M, M) when the
        mask head is on), in the pixel coordinates of the given images. An RPN-only model gives
        its proposals (field ``objectness``)."""
        batch = self.preprocess(images)
        features = self._features(batch)
        proposals = self.rpn.inference(self.rpn(features), batch.image_sizes)
        if self.roi_heads is None:
            return proposals
        return self.roi_heads.predict(features, proposals)
