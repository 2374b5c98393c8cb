"""Batch collation: keep per-image lists (the model pads images itself)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from maskrcnn.structures.bounding_box import BoxList

__all__ = ["BatchCollator"]

Sample = Tuple[torch.Tensor, Optional[BoxList], Dict[str, Any]]


class BatchCollator:
    """Turn a list of ``(image, target, info)`` samples into three lists.

    Returns:
        ``(images: list[Tensor (3, H_i, W_i) uint8], targets: list[BoxList | None],
        infos: list[dict])``, in sample order, without padding.
    """

    def __call__(self, batch: Sequence[Sample]) -> Tuple[List[torch.Tensor], List[Optional[BoxList]],
                                                          List[Dict[str, Any]]]:
        images = [sample[0] for sample in batch]
        targets = [sample[1] for sample in batch]
        infos = [sample[2] for sample in batch]
        return images, targets, infos

    def __repr__(self) -> str:
        return "BatchCollator()"
