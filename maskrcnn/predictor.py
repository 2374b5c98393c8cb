"""Python API for predictions on images.

    from maskrcnn import Predictor
    predictor = Predictor.from_config("configs/quickstart.yaml", weights="output/quickstart/model_final.pth")
    out = predictor("photo.jpg")          # or an array, a PIL image, a tensor (see Predictor.__call__)
    out["boxes"], out["scores"], out["labels"], out["masks"]
    outs = predictor(["a.jpg", pil_image, array])   # a list: one forward pass, a list of outputs

Boxes are in the ORIGINAL image's pixels, labels are the dataset's category ids,
masks are ``(N, H, W)`` bool at the original resolution.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from .checkpoint import Checkpointer, safe_load
from .checkpoint.io import CheckpointNotFoundError
from .config import ConfigError, load_cfg, resolve_num_classes
from .data.build import build_test_transform
from .data.image_io import _to_rgb_array, read_image_rgb
from .layers.mask_ops import paste_masks_in_image
from .modeling import build_model


ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image, torch.Tensor]

_ACCEPTED = ("an image file path, an RGB uint8 array (H, W, 3), a grayscale uint8 array (H, W) or (H, W, 1), "
             "a PIL image, a uint8 tensor (3, H, W), or a list of these")


def to_rgb_tensor(image: Any, bgr: bool = False) -> torch.Tensor:
    """One image as the model takes it: a ``(3, H, W)`` uint8 RGB tensor (CPU).

    Args:
        image: a file path (decoded, EXIF orientation applied); a uint8 array ``(H, W, 3)``
            (RGB, or BGR with ``bgr``), ``(H, W)`` or ``(H, W, 1)`` (grayscale); a PIL image of
            any mode (EXIF orientation applied, converted to RGB as image files are: alpha
            dropped, 16-bit scaled to 8); a uint8 tensor ``(3, H, W)`` (RGB, or BGR with ``bgr``)
            or ``(1, H, W)``.
        bgr: the array or tensor holds its channels in BGR order (OpenCV's ``cv2.imread``).

    Raises:
        ValueError: anything else (another dtype, shape or type), naming what was given and
            what is accepted; ``bgr`` with a path or a PIL image.
    """
    if isinstance(image, (str, os.PathLike, Image.Image)):
        if bgr:
            raise ValueError("bgr=True is for arrays and tensors holding BGR channels (e.g. from cv2.imread); "
                             "files and PIL images are decoded as RGB")
        if isinstance(image, Image.Image):
            array = _to_rgb_array(ImageOps.exif_transpose(image))
        else:
            array = read_image_rgb(image)
        return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)  # writable, contiguous
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
            raise ValueError(f"Predictor got a {image.dtype} array of shape {image.shape}; it takes {_ACCEPTED}. "
                             "Convert other arrays first, e.g. (x * 255).round().astype(np.uint8) for "
                             "floats in 0..1, x[..., :3] to drop an alpha channel")
        t = torch.from_numpy(np.array(image, copy=True))
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"Predictor got a {image.dtype} tensor of shape {tuple(image.shape)}; it takes "
                             f"{_ACCEPTED} (tensors are channels first, as torchvision.io.read_image gives)")
        t = image.detach().to("cpu").clone()
    else:
        raise ValueError(f"Predictor got {type(image).__name__}; it takes {_ACCEPTED}")
    if t.shape[0] == 1:
        return t.expand(3, -1, -1).contiguous()
    return t.flip(0).contiguous() if bgr else t.contiguous()


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
        Checkpointer(model, save_to_disk=False, cfg=cfg).load(weights, model_only=True)
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
    def __call__(self, image: Union[ImageInput, Sequence[ImageInput]], *,
                 bgr: bool = False) -> Union[Dict[str, torch.Tensor], List[Dict[str, torch.Tensor]]]:
        """Predict on one image, or on a list of images in one forward pass.

        Args:
            image: an image file path, an RGB uint8 array ``(H, W, 3)``, a grayscale uint8 array
                ``(H, W)`` or ``(H, W, 1)``, a PIL image (any mode), a uint8 tensor ``(3, H, W)``
                (see :func:`to_rgb_tensor`); or a list (or tuple) of these, of any sizes.
            bgr: arrays and tensors hold BGR channels (e.g. from ``cv2.imread``).

        Returns:
            For one image, a dict with ``boxes`` (N, 4) float xyxy in original pixels, ``scores``
            (N,), ``labels`` (N,) dataset category ids, and ``masks`` (N, H, W) bool when the
            model has a mask head; for a list, a list of such dicts in the same order.

        Raises:
            ValueError: an input of another type, dtype or shape (see :func:`to_rgb_tensor`).
        """
        if isinstance(image, (list, tuple)):
            return self._predict([to_rgb_tensor(im, bgr) for im in image])
        return self._predict([to_rgb_tensor(image, bgr)])[0]

    def _predict(self, images: List[torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        """One forward pass over RGB uint8 ``(3, H, W)`` images; outputs at each image's size."""
        if not images:
            return []
        sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        batch = [self.transform(im, None)[0] for im in images]
        outputs = []
        for det, (h, w) in zip(self.model.predict(batch), sizes):
            det = det.resize((h, w))
            masks = None
            if det.has_field("mask"):  # pasted where the model runs (the CUDA kernel on a GPU), same masks
                masks = paste_masks_in_image(det.get_field("mask"), det.bbox, (h, w),
                                             threshold=self.mask_threshold, rule=self.paste_rule).cpu()
            det = det.to("cpu")
            labels = det.get_field("labels")
            out = {"boxes": det.bbox, "scores": det.get_field("scores"),
                   "labels": self._label_to_id[labels] if self._label_to_id is not None else labels}
            if masks is not None:
                out["masks"] = masks
            outputs.append(out)
        return outputs
