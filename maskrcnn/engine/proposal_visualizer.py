"""A training hook that draws ground truth | the top RPN proposals of one training image."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import torch

from ..checkpoint import unwrap_model
from ..evaluation.figures import draw_gt_and_proposals
from ..utils.events import TensorboardWriter
from .trainer import HookBase

__all__ = ["ProposalVisualizer"]


class ProposalVisualizer(HookBase):
    """Every ``period`` iterations, ground truth | the top RPN proposals of one training image.

    As detectron2's ``visualize_training``: the first image of the iteration's batch (resized
    and flipped, as the model sees it) with its ground-truth masks, boxes and class names, and
    beside it the ``top_k`` best proposals of that forward pass (boxes, objectness), selected by
    the RPN's training selection (the proposals the box head samples from), written to
    TensorBoard as ``train/proposals``.

    How it sees the batch: on those iterations only, it hooks the detector's forward (for the
    images and targets) and its RPN's forward (for the raw predictions), and removes both hooks
    after the step; other iterations run exactly as without it, and ``VIS_PERIOD 0`` does not
    register it. Only the process that writes TensorBoard (rank 0) does anything.

    Args:
        period: ``VIS_PERIOD``.
        writer: the TensorBoard writer (rank 0), or None (then the hook does nothing).
        categories: ``[{"id", "name"}]`` of contiguous labels 1..K (names and colours as in the
            other pictures of this project).
        top_k: proposals drawn.
    """

    TAG = "train/proposals"

    def __init__(self, period: int, writer: Optional[TensorboardWriter], categories: List[Dict[str, Any]],
                 top_k: int = 20) -> None:
        self.period = int(period)
        self.writer = writer
        self.to_id = {k + 1: int(c["id"]) for k, c in enumerate(categories)}
        self.names = {int(c["id"]): str(c["name"]) for c in categories}
        self.top_k = int(top_k)
        self._handles: List[Any] = []
        self._seen: Dict[str, Any] = {}

    def before_step(self) -> None:
        self._remove()
        if self.writer is None or self.period <= 0 or self.trainer.iter % self.period != 0:
            return
        model = unwrap_model(self.trainer.model)
        if not hasattr(model, "rpn"):
            return
        self._handles = [model.register_forward_pre_hook(self._batch, with_kwargs=True),
                         model.rpn.register_forward_hook(self._rpn_output)]

    def _batch(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        images = args[0] if args else kwargs.get("images")
        targets = args[1] if len(args) > 1 else kwargs.get("targets")
        if isinstance(images, (list, tuple)) and images and targets:
            self._seen.setdefault("image", images[0])
            self._seen.setdefault("target", targets[0])

    def _rpn_output(self, module: torch.nn.Module, inputs: tuple, output: Any) -> None:
        if "rpn" not in self._seen:  # the first image's predictions, off the autograd graph
            self._seen["rpn"] = dataclasses.replace(output, objectness=output.objectness[:1].detach(),
                                                    deltas=output.deltas[:1].detach())

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def after_step(self) -> None:
        seen, self._seen = self._seen, {}
        self._remove()
        if not {"image", "target", "rpn"} <= set(seen):
            return
        image, target = seen["image"], seen["target"].to("cpu")
        size = tuple(int(v) for v in image.shape[-2:])
        rpn = unwrap_model(self.trainer.model).rpn
        with torch.no_grad():
            proposals = rpn.inference(seen["rpn"], [size], training=True)[0][: self.top_k].to("cpu")
        picture = draw_gt_and_proposals(image, target, proposals, class_names=self.names,
                                        to_category_id=self.to_id, top_k=self.top_k)
        self.writer.add_image(self.TAG, picture, self.trainer.iter)
