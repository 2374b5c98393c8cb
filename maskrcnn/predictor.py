"""Python API for predictions on single images.

    from maskrcnn import Predictor
    predictor = Predictor.from_config("configs/quickstart.yaml", weights="output/quickstart/model_final.pth")
    out = predictor("photo.jpg")          # or an RGB uint8 array (H, W, 3)
    out["boxes"], out["scores"], out["labels"], out["masks"]

Boxes are in the ORIGINAL image's pixels, labels are the dataset's category ids,
masks are ``(N, H, W)`` bool at the original resolution.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .checkpoint import Checkpointer, safe_load
from .checkpoint.io import CheckpointNotFoundError
from .config import ConfigError, load_cfg, resolve_num_classes
from .data.build import build_test_transform
from .data.image_io import read_image_rgb
from .layers.mask_ops import paste_masks_in_image
from .modeling import build_model


def _checkpoint_categories(weights: str) -> Optional[List[dict]]:
    """Categories saved by the trainer ([{"id", "name"}], contiguous order), if the file has them."""
    if os.fspath(weights).endswith(".pkl"):
        return None  # Detectron / detectron2 pickles (converted on load) carry none of ours
    state = safe_load(weights)
    if isinstance(state, dict) and isinstance(state.get("categories"), list):
        return state["categories"]
    return None


class Predictor:
    """Run a trained model on images.

    Args:
        model: the detector with its weights (put in eval mode here).
        transform: test-time resize, ``(image (3, H, W), None) -> (resized image, None)``; e.g.
            :func:`maskrcnn.data.build.build_test_transform` of the training config.
        paste_rule: how masks are pasted (``MODEL.ROI_MASK_HEAD.PASTE_RULE``, see
            :mod:`maskrcnn.layers.mask_ops`).
        mask_threshold: probability from which a pasted mask pixel is set
            (``MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD``).
        categories: ``[{"id": category_id, "name": name}, ...]`` for contiguous labels 1..K;
            labels are returned as-is when None.
    """

    def __init__(self, model: nn.Module, *, transform: Callable, paste_rule: str = "center",
                 mask_threshold: float = 0.5, categories: Optional[List[dict]] = None) -> None:
        if not mask_threshold >= 0.5:
            raise ConfigError(f"mask_threshold (MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD) is "
                             f"{mask_threshold}: it must be >= 0.5 (masks are pasted inside their box)")
        self.model = model.eval()
        self.transform = transform
        self.paste_rule = paste_rule
        self.mask_threshold = mask_threshold
        self.categories = categories
        ids = [c["id"] for c in categories] if categories else []
        self._label_to_id = torch.tensor([0] + ids, dtype=torch.int64) if ids else None
        self.class_names = ["__background__"] + [c["name"] for c in categories] if categories else None

    @classmethod
    def from_config(cls, config_file: str, weights: str, opts: Sequence[str] = ()) -> "Predictor":
        """Build from a YAML config plus ``KEY VALUE`` overrides and a checkpoint (model weights only).

        The class count comes from the checkpoint's saved categories when it has them (an
        explicit ``NUM_CLASSES`` must then agree); without them ``NUM_CLASSES`` must be set.
        """
        if not os.path.isfile(weights):
            raise CheckpointNotFoundError(f"weights file not found: {weights}")
        cfg = load_cfg(config_file, opts)
        categories = _checkpoint_categories(weights)
        if categories is not None:
            cfg = resolve_num_classes(cfg, len(categories), f"the checkpoint {weights}")
        elif cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0:
            raise ConfigError(f"{weights} does not record its categories: set "
                             "MODEL.ROI_BOX_HEAD.NUM_CLASSES (background included) in opts")
        model = build_model(cfg)
        Checkpointer(model, save_to_disk=False).load(weights, model_only=True)
        m = cfg.MODEL.ROI_MASK_HEAD
        return cls(model, transform=build_test_transform(cfg), paste_rule=m.PASTE_RULE,
                   mask_threshold=m.POSTPROCESS_MASKS_THRESHOLD, categories=categories)

    def label_name(self, category_id: int) -> str:
        """Name of a dataset category id (or the id as text when unknown)."""
        for c in self.categories or []:
            if c["id"] == category_id:
                return str(c["name"])
        return str(category_id)

    @torch.no_grad()
    def __call__(self, image: Union[str, os.PathLike, np.ndarray]) -> Dict[str, torch.Tensor]:
        """Predict on one RGB uint8 image ``(H, W, 3)`` or an image file.

        Returns:
            dict with ``boxes`` (N, 4) float xyxy in original pixels, ``scores`` (N,),
            ``labels`` (N,) dataset category ids, and ``masks`` (N, H, W) bool when the
            model has a mask head.
        """
        if isinstance(image, (str, os.PathLike)):
            image = read_image_rgb(image)
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                and image.dtype == np.uint8):
            raise ValueError("Predictor expects an RGB uint8 array of shape (H, W, 3) or a file path")
        h, w = image.shape[:2]
        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
        tensor, _ = self.transform(tensor, None)
        det = self.model.predict([tensor])[0].to("cpu").resize((h, w))
        labels = det.get_field("labels")
        out = {"boxes": det.bbox, "scores": det.get_field("scores"),
               "labels": self._label_to_id[labels] if self._label_to_id is not None else labels}
        if det.has_field("mask"):
            out["masks"] = paste_masks_in_image(det.get_field("mask"), det.bbox, (h, w),
                                                 threshold=self.mask_threshold, rule=self.paste_rule)
        return out
