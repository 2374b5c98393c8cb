"""Mask head inference: the detected class's mask probabilities, added to new detection BoxLists."""
from __future__ import annotations

from typing import List

import torch

from ....structures.bounding_box import BoxList


@torch.no_grad()
def mask_head_inference(logits: torch.Tensor, detections: List[BoxList]) -> List[BoxList]:
    """Per image, a copy of the detections with a ``mask`` field.

    Args:
        logits: ``(K, C, M, M)`` for the detections of all images, in order.
        detections: per image, BoxLists with field ``labels``; they are not modified.

    Returns:
        Per image, a new BoxList with the same boxes and fields plus ``mask`` ``(N_i, 1, M, M)``:
        the sigmoid of the logits of the detected class.
    """
    labels = torch.cat([d.get_field("labels") for d in detections])
    probs = logits[torch.arange(labels.numel(), device=labels.device), labels][:, None].sigmoid()
    out = []
    for d, p in zip(detections, probs.split([len(d) for d in detections])):
        r = BoxList(d.bbox, d.size)
        for name in d.fields():
            r.add_field(name, d.get_field(name))
        r.add_field("mask", p)
        out.append(r)
    return out
