"""Image decoding shared by the datasets and the Predictor."""
from __future__ import annotations

import os
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageFileNotFoundError(FileNotFoundError, ValueError):
    """A dataset or image file does not exist (both a FileNotFoundError and a ValueError)."""


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def read_image_rgb(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decode an image file to an RGB array, applying its EXIF orientation.

    Grayscale, palette, alpha (dropped), CMYK and 16-bit grayscale images are
    converted to 8-bit RGB.

    Args:
        path: image file.

    Returns:
        ``(H, W, 3)`` uint8 array, H and W as displayed (after EXIF transpose).

    Raises:
        ImageFileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageFileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return _to_rgb_array(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image file {path}: {exc}") from exc


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any common mode to ``(H, W, 3)`` uint8 RGB."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img).astype(np.int64)
        arr = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode == "F":
        arr = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        # Drop the alpha channel (colour values as stored).
        return np.ascontiguousarray(np.asarray(img.convert("RGBA"))[..., :3])
    if mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
