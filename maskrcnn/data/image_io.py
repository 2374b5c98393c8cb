"""Image decoding shared by the datasets and the Predictor, and a header-only inspection."""
from __future__ import annotations

import os
from typing import List, NamedTuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..utils.errors import DataError


class ImageFileNotFoundError(DataError, FileNotFoundError, ValueError):
    """A dataset or image file does not exist (both a FileNotFoundError and a ValueError)."""


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # these swap height and width
# What read_image_rgb converts, by PIL mode (RGB needs nothing).
_MODE_LABELS = {**{m: "16-bit" for m in _SIXTEEN_BIT_MODES}, "F": "32-bit float", "CMYK": "CMYK",
                "P": "palette", "PA": "palette", "L": "grayscale", "1": "grayscale",
                "LA": "grayscale+alpha", "La": "grayscale+alpha", "RGBA": "RGBA", "RGBa": "RGBA"}


class ImageHeader(NamedTuple):
    """What :func:`inspect_image` learns about an image file.

    ``height`` and ``width`` are the displayed size, after EXIF orientation, i.e. the
    shape :func:`read_image_rgb` returns.
    """

    height: int
    width: int
    mode: str  # PIL mode as stored, e.g. "RGB", "L", "CMYK", "I;16"
    orientation: int  # EXIF orientation 1..8 (1: none or invalid)
    format: str  # PIL format name, e.g. "PNG", "JPEG"

    def conversions(self) -> List[str]:
        """Labels of what :func:`read_image_rgb` converts, e.g. ``["CMYK", "EXIF-rotated"]``."""
        labels = [] if self.mode == "RGB" else [_MODE_LABELS.get(self.mode, f"mode {self.mode}")]
        if self.orientation != 1:
            labels.append("EXIF-rotated")
        return labels


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


def inspect_image(path: Union[str, os.PathLike], full_decode: bool = False) -> ImageHeader:
    """Read an image's size, mode and EXIF orientation, decoding the pixels only if asked.

    Without ``full_decode`` only the file header is parsed (tens of microseconds per file):
    a truncated or corrupt pixel stream is not noticed. With it, the pixels are decoded as
    :func:`read_image_rgb` would, and a truncated JPEG/PNG raises.

    Args:
        path: image file.
        full_decode: decode the whole image.

    Returns:
        The :class:`ImageHeader`, with the size after EXIF orientation.

    Raises:
        ImageFileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image (or, with ``full_decode``, does not decode).
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as img:
            if full_decode:
                img.load()
                exif = img.getexif()
            else:
                # PngImageFile.getexif() decodes the whole image to reach chunks after the
                # pixels; the base method reads only what the header parse found.
                exif = Image.Image.getexif(img)
            orientation = exif.get(_EXIF_ORIENTATION, 1)
            width, height = img.size
            mode, fmt = img.mode, str(img.format)
    except (FileNotFoundError, IsADirectoryError) as exc:  # one open() instead of a stat() first
        raise ImageFileNotFoundError(f"image file not found: {path}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot {'decode' if full_decode else 'read'} image file {path}: {exc}") from exc
    if not isinstance(orientation, int) or not 2 <= orientation <= 8:
        orientation = 1  # ImageOps.exif_transpose ignores invalid values too
    if orientation in _TRANSPOSING_ORIENTATIONS:
        height, width = width, height
    return ImageHeader(height, width, mode, orientation, fmt)


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
