"""Resolve ``torchvision://NAME`` weight names to a local file through torch's own cache.

``torchvision://resnet50`` and ``torchvision://resnet101`` are torchvision's ImageNet
weights (``IMAGENET1K_V1``, the ones detection recipes start from);
``torchvision://maskrcnn_resnet50_fpn`` and ``torchvision://fasterrcnn_resnet50_fpn`` are its
COCO detectors (``COCO_V1``; load them through ``maskrcnn.checkpoint.convert.load_weights_file``,
which renames them). The file is looked up in ``torch.hub.get_dir()/checkpoints`` first; only
when it is not there is a download attempted, and a failure says where to put the file by hand.
"""
from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)

SCHEME = "torchvision://"


# Which published weights a bare model name means: ImageNet V1 for classifiers (what the
# detection recipes were tuned with), COCO for torchvision's detectors.
PREFERRED_WEIGHTS = ("IMAGENET1K_V1", "COCO_V1")


def torchvision_weights_url(name: str) -> str:
    """The download address of torchvision's weights for model ``name``.

    Args:
        name: a torchvision model name, e.g. ``resnet50`` (ImageNet ``IMAGENET1K_V1``) or
            ``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` (COCO ``COCO_V1``).

    Raises:
        ValueError: torchvision has no such model.
    """
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(name)
    except (ValueError, KeyError) as e:
        raise ValueError(f"unknown torchvision model '{name}' in '{SCHEME}{name}'") from e
    weights = next((getattr(enum, w) for w in PREFERRED_WEIGHTS if hasattr(enum, w)), enum.DEFAULT)
    return weights.url


def resolve_weights(name: str) -> str:
    """A local file for ``name``: local paths are returned as they are.

    Raises:
        ValueError: an unsupported scheme.
        RuntimeError: the file is not cached and could not be downloaded.
    """
    if "://" not in name:
        return name
    if not name.startswith(SCHEME):
        raise ValueError(f"cannot load weights '{name}': only local files and {SCHEME}<model> "
                         "names (e.g. torchvision://resnet50) are supported")
    url = torchvision_weights_url(name[len(SCHEME):])
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    if os.path.isfile(cached):
        logger.info("%s -> %s (cached)", name, cached)
        return cached
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    logger.info("downloading %s to %s", url, cached)
    try:
        torch.hub.download_url_to_file(url, cached, progress=False)
    except Exception as e:  # no network, proxy, ...
        raise RuntimeError(f"could not download {url} for '{name}' ({type(e).__name__}: {e}); "
                           f"download it by hand to {cached}, or set MODEL.WEIGHT to a local file") from e
    return cached


def add_backbone_prefix(state_dict: dict, model_keys) -> dict:
    """Map an ImageNet ResNet state dict (``conv1.weight``, ``layer1.0...``) onto ``backbone.body.*``.

    Used when none of the file's keys are model keys but the prefixed ones are; the
    classifier (``fc.*``) is dropped.
    """
    keys = set(model_keys)
    if any(k in keys for k in state_dict):
        return state_dict
    prefixed = {f"backbone.body.{k}": v for k, v in state_dict.items() if not k.startswith("fc.")}
    if sum(k in keys for k in prefixed) == 0:
        return state_dict
    return prefixed
