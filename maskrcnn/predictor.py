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
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .config import CfgNode, get_cfg
from .data.image_io import read_image_rgb
from .data.transforms import ResizeShortestEdge
from .layers.mask_ops import paste_masks_in_image
from .modeling import build_model
from .checkpoint import Checkpointer


def _checkpoint_categories(weights: str) -> Optional[List[dict]]:
    """Categories saved by the trainer ([{"id", "name"}], contiguous order), if the file has them."""
    if os.fspath(weights).endswith(".pkl"):
        return None  # Detectron / detectron2 pickles (converted on load) carry none of ours
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("categories"), list):
        return state["categories"]
    return None


class Predictor:
    """Run a trained model on images.

    Args:
        cfg: a config whose ``MODEL.ROI_BOX_HEAD.NUM_CLASSES`` is resolved (> 0).
        weights: checkpoint file (model weights are loaded; nothing else).
        categories: ``[{"id": category_id, "name": name}, ...]`` for contiguous labels
            1..K; taken from the checkpoint when None; labels are returned as-is if unknown.
    """

    def __init__(self, cfg: CfgNode, weights: str, categories: Optional[List[dict]] = None) -> None:
        self.cfg = cfg
        self.model = build_model(cfg)
        Checkpointer(self.model, save_to_disk=False).load(weights, model_only=True)
        self.model.eval()
        self.resize = ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST,
                                         cfg.INPUT.RESIZE_MODE)
        self.categories = categories
        ids = [c["id"] for c in categories] if categories else []
        self._label_to_id = torch.tensor([0] + ids, dtype=torch.int64) if ids else None
        self.class_names = ["__background__"] + [c["name"] for c in categories] if categories else None

    @classmethod
    def from_config(cls, config_file: str, weights: str, opts: Sequence[str] = ()) -> "Predictor":
        """Build from a YAML config plus ``KEY VALUE`` overrides and a checkpoint.

        When ``NUM_CLASSES`` is 0 it is taken from the checkpoint's saved categories.
        """
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file not found: {weights}")
        cfg = get_cfg()
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
        categories = _checkpoint_categories(weights)
        if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0:
            if categories is None:
                raise ValueError(f"{weights} does not record its categories: set "
                                 "MODEL.ROI_BOX_HEAD.NUM_CLASSES (background included) in opts")
            cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = len(categories) + 1
        cfg.freeze()
        return cls(cfg, weights, categories)

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
        tensor, _ = self.resize(tensor)
        det = self.model.predict([tensor])[0].to("cpu").resize((h, w))
        labels = det.get_field("labels")
        out = {"boxes": det.bbox, "scores": det.get_field("scores"),
               "labels": self._label_to_id[labels] if self._label_to_id is not None else labels}
        if det.has_field("mask"):
            thr = self.cfg.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD
            out["masks"] = paste_masks_in_image(det.get_field("mask"), det.bbox, (h, w), threshold=thr,
                                                 rule=self.cfg.MODEL.ROI_MASK_HEAD.PASTE_RULE)
        return out
