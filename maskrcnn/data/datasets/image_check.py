"""Checks of the image files of a COCO-format dataset against its JSON entries.

Part of :mod:`maskrcnn.data.datasets.check` (see there for what is checked when): each file
is opened (header only, or fully decoded), and missing, empty (0 bytes), unreadable and
mis-sized files are errors, images that :func:`~maskrcnn.data.image_io.read_image_rgb`
converts are counted. A missing file whose name exists with other letter case (``IMG_1.JPG``
for ``img_1.jpg``: found on macOS and Windows, not on Linux) names the file that exists.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from maskrcnn.data.datasets.report import CONVERTED, ERROR, DatasetReport
from maskrcnn.data.image_io import ImageFileNotFoundError, ImageHeader, inspect_image

__all__ = ["check_image_files"]

_THREADS = 8  # header reads wait on the disk; threads overlap that on network file systems
_CHUNK = 512  # paths per thread task (a task per file costs more than a local header read)


def check_image_files(images: Dict[Any, dict], img_dir: str, report: DatasetReport,
                      full_decode: bool = False) -> None:
    """Open every image (header only unless ``full_decode``); record errors and conversions.

    Args:
        images: well-formed image entries by id.
        img_dir: directory of the ``file_name`` entries.
        report: where findings go.
        full_decode: decode every image (finds truncated files; much slower).
    """
    entries = list(images.values())
    paths = [os.path.join(img_dir, img["file_name"]) for img in entries]

    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    if len(chunks) > 1:
        with ThreadPoolExecutor(_THREADS) as pool:
            results = [r for chunk in pool.map(_inspect_all, chunks, [full_decode] * len(chunks))
                       for r in chunk]
    else:
        results = _inspect_all(paths, full_decode)
    listings: Dict[str, Dict[str, List[str]]] = {}
    for img, path, result in zip(entries, paths, results):
        if isinstance(result, ImageFileNotFoundError):
            other = _other_case(img_dir, img["file_name"], listings)
            detail = f"no such file: {img['file_name']}; did you mean {other}?" if other else "no such file"
            report.add(ERROR, "missing image file", path, img["id"], detail=detail)
        elif isinstance(result, Exception):
            if _is_empty(path):
                report.add(ERROR, "empty image file", path, img["id"], detail="empty file (0 bytes)")
            else:
                report.add(ERROR, "unreadable image", path, img["id"], detail=str(result))
        else:
            _check_header(img, path, result, report, full_decode)


def _is_empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _other_case(img_dir: str, file_name: str, listings: Dict[str, Dict[str, List[str]]]
                ) -> Optional[str]:
    """The existing file whose path (under ``img_dir``) equals ``file_name`` but for letter
    case, component by component, or None. Directory listings are cached in ``listings``."""
    parts = [p for p in file_name.replace(os.sep, "/").split("/") if p not in ("", ".")]
    found: List[str] = []
    for part in parts:
        folder = os.path.join(img_dir, *found)
        if folder not in listings:
            try:
                names = os.listdir(folder)
            except OSError:
                names = []
            by_lower: Dict[str, List[str]] = {}
            for name in names:
                by_lower.setdefault(name.lower(), []).append(name)
            listings[folder] = by_lower
        candidates = listings[folder].get(part.lower(), [])
        if not candidates:
            return None
        found.append(part if part in candidates else sorted(candidates)[0])
    return "/".join(found) if found and found != parts else None


def _inspect_all(paths: List[str], full_decode: bool) -> List[Any]:
    """:func:`inspect_image` of each path, or the exception it raised."""
    results: List[Any] = []
    for path in paths:
        try:
            results.append(inspect_image(path, full_decode))
        except ValueError as exc:  # ImageFileNotFoundError is a ValueError too
            results.append(exc)
    return results


def _check_header(img: dict, path: str, header: ImageHeader, report: DatasetReport,
                  full_decode: bool) -> None:
    expected = (int(img["height"]), int(img["width"]))
    got = (header.height, header.width)
    if got != expected and header.format == "PNG" and not full_decode:
        try:  # an EXIF chunk may follow the pixels, where a header read does not look
            header = inspect_image(path, full_decode=True)
        except ValueError as exc:
            report.add(ERROR, "unreadable image", path, img["id"], detail=str(exc))
            return
        got = (header.height, header.width)
    if got != expected:
        detail = (f"the file is (h, w) = {got} after EXIF orientation, the JSON says "
                  f"(height, width) = {expected}")
        if header.orientation in (5, 6, 7, 8) and expected == got[::-1]:
            detail += (f"; the JSON holds the stored size before EXIF orientation {header.orientation}. "
                       "Images are loaded rotated as displayed: set the JSON height/width to the "
                       "displayed size and give the annotations in displayed coordinates")
        report.add(ERROR, "image size mismatch", path, img["id"], detail=detail)
        return
    for label in header.conversions():
        report.add(CONVERTED, label, path, img["id"], detail=f"mode {header.mode}, EXIF "
                   f"orientation {header.orientation}")
