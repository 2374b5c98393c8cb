"""ImageList: a batch of images of different sizes, zero-padded to one tensor."""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch


class ImageList:
    """Padded batch of images.

    Args:
        tensors: ``(N, C, Hp, Wp)`` padded images.
        image_sizes: the ``(h, w)`` of each image before padding.
    """

    def __init__(self, tensors: torch.Tensor, image_sizes: Sequence[Tuple[int, int]]) -> None:
        self.tensors = tensors
        self.image_sizes: List[Tuple[int, int]] = [(int(h), int(w)) for h, w in image_sizes]

    def to(self, device) -> "ImageList":
        return ImageList(self.tensors.to(device), self.image_sizes)

    def __len__(self) -> int:
        return len(self.image_sizes)


def to_image_list(images: Sequence[torch.Tensor], size_divisibility: int = 0) -> ImageList:
    """Pad ``(C, H, W)`` images (bottom/right, zeros) into one ImageList.

    Args:
        images: list of ``(C, H_i, W_i)`` tensors.
        size_divisibility: pad H and W up to a multiple of this (FPN needs 32).
    """
    if isinstance(images, ImageList):
        return images
    if not images:
        raise ValueError("to_image_list needs at least one image")
    max_h = max(int(im.shape[-2]) for im in images)
    max_w = max(int(im.shape[-1]) for im in images)
    if size_divisibility > 0:
        max_h = int(math.ceil(max_h / size_divisibility) * size_divisibility)
        max_w = int(math.ceil(max_w / size_divisibility) * size_divisibility)
    batch = images[0].new_zeros((len(images), images[0].shape[0], max_h, max_w))
    for im, pad in zip(images, batch):
        pad[:, : im.shape[-2], : im.shape[-1]].copy_(im)
    return ImageList(batch, [(im.shape[-2], im.shape[-1]) for im in images])
