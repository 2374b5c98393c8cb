"""ROIAlign: torchvision's forward, and on the CPU a faster backward for a fixed sampling grid.

torchvision's CPU ``roi_align`` backward visits every output element one at a time and
recomputes its bilinear weights; in a small CPU training run it took about as long as all the
convolutions of a ResNet stage. With a fixed ``sampling_ratio`` (> 0) every sample point is
known in advance, and ROIAlign is bilinear sampling at those points followed by a mean over
each bin. Its gradient is therefore the gradient of ``grid_sample`` (bilinear, ``"border"``
padding, ``align_corners=True``) at the same points, with each bin's gradient spread evenly over
its samples, and samples that torchvision reads as zero (more than one pixel outside the map)
masked out. ATen's vectorised ``grid_sampler_2d_backward`` computes that, one image per
thread.

The forward is torchvision's own, so outputs are bit-identical; the gradient agrees with
torchvision's to float rounding (the summation order differs; ``tests/layers/test_roi_align.py``
compares both in float64 and float32). On CUDA, with the adaptive grid (``sampling_ratio`` <= 0),
or without a gradient, this is torchvision's ``roi_align`` unchanged.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torchvision.ops import roi_align as tv_roi_align

__all__ = ["roi_align"]


def _sample_points(rois: torch.Tensor, pooled: Tuple[int, int], scale: float, ratio: int,
                   aligned: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sample coordinates (feature pixels) as torchvision computes them.

    Returns:
        ``ys (R, PH * ratio)`` and ``xs (R, PW * ratio)``, bin-major.
    """
    offset = 0.5 if aligned else 0.0
    x0, y0 = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
    w, h = rois[:, 3] * scale - offset - x0, rois[:, 4] * scale - offset - y0
    if not aligned:
        w, h = w.clamp(min=1.0), h.clamp(min=1.0)

    def along(start: torch.Tensor, length: torch.Tensor, bins: int) -> torch.Tensor:
        b = torch.arange(bins, dtype=rois.dtype, device=rois.device).repeat_interleave(ratio)
        i = torch.arange(ratio, dtype=rois.dtype, device=rois.device).repeat(bins)
        size = (length / bins)[:, None]
        return start[:, None] + b * size + (i + 0.5) * size / ratio

    return along(y0, h, pooled[0]), along(x0, w, pooled[1])


def _grid_backward(grad: torch.Tensor, feature: torch.Tensor, rois: torch.Tensor,
                   pooled: Tuple[int, int], scale: float, ratio: int, aligned: bool) -> torch.Tensor:
    """Gradient of ROIAlign with respect to ``feature (N, C, H, W)``, through grid_sample's
    backward. ``grad (R, C, PH, PW)``; ``rois (R, 5)`` as torchvision's (batch index first)."""
    n, c, height, width = feature.shape
    if rois.shape[0] == 0:
        return torch.zeros_like(feature)
    ys, xs = _sample_points(rois.to(feature.dtype), pooled, scale, ratio, aligned)
    sh, sw = ys.shape[1], xs.shape[1]
    # Each bin's gradient is spread evenly over its ratio x ratio samples; samples torchvision
    # reads as zero (farther than one pixel outside the map) get none.
    valid = ((ys >= -1.0) & (ys <= height))[:, :, None] & ((xs >= -1.0) & (xs <= width))[:, None, :]
    weight = valid.to(grad.dtype) / (ratio * ratio)  # (R, SH, SW)
    # align_corners=True maps -1..1 to pixel 0..size-1; "border" padding then clamps to the map,
    # which is torchvision's clamp of samples within one pixel outside it.
    gy = ys * (2.0 / max(height - 1, 1)) - 1.0
    gx = xs * (2.0 / max(width - 1, 1)) - 1.0
    # One batch of N images, each with its rois stacked along the height (padded to the largest
    # count with zero gradient), so that ATen spreads the images over its threads. The sample
    # gradients are written straight into that layout, one sample offset of the bins at a time,
    # so that no (R, C, SH, SW) temporary besides the batch itself is made.
    image = rois[:, 0].to(torch.int64)
    order = torch.argsort(image, stable=True)
    image = image[order]
    counts = torch.bincount(image, minlength=n)
    most = int(counts.max())
    slot = torch.arange(len(image), device=image.device) - (torch.cumsum(counts, 0) - counts)[image]
    grid_b = gy.new_zeros((n, most, sh, sw, 2))
    grid_b[image, slot] = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)[order]
    grad_b = grad.new_zeros((n, c, most, sh, sw))
    by_roi = grad_b.permute(0, 2, 1, 3, 4)  # (N, most, C, SH, SW) view
    grad, weight = grad[order], weight[order]
    for dy in range(ratio):
        for dx in range(ratio):
            by_roi[image, slot, :, dy::ratio, dx::ratio] = grad * weight[:, None, dy::ratio, dx::ratio]
    grad_input, _ = torch.ops.aten.grid_sampler_2d_backward(
        grad_b.view(n, c, most * sh, sw), feature, grid_b.view(n, most * sh, sw, 2), 0, 1, True,
        [True, False])
    return grad_input


def _grid_backward_applies(feature: torch.Tensor, sampling_ratio: int) -> bool:
    """The grid backward serves CPU tensors with a fixed sampling grid. It reads back the
    largest number of boxes of an image (a wait on a GPU, none on the CPU)."""
    return feature.device.type == "cpu" and sampling_ratio > 0


class _ROIAlignCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feature: torch.Tensor, rois: torch.Tensor, pooled: Tuple[int, int], scale: float,
                ratio: int, aligned: bool) -> torch.Tensor:
        ctx.save_for_backward(feature, rois)
        ctx.args = (pooled, scale, ratio, aligned)
        return tv_roi_align(feature, rois, pooled, scale, ratio, aligned)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        feature, rois = ctx.saved_tensors
        grad_feature = _grid_backward(grad.to(feature.dtype).contiguous(), feature, rois, *ctx.args)
        return grad_feature, None, None, None, None, None


def roi_align(feature: torch.Tensor, rois: torch.Tensor, output_size: Tuple[int, int], spatial_scale: float,
              sampling_ratio: int, aligned: bool = False) -> torch.Tensor:
    """``torchvision.ops.roi_align(feature, rois, output_size, spatial_scale, sampling_ratio,
    aligned)`` with the faster CPU backward described in the module docstring.

    Args:
        feature: ``(N, C, H, W)``.
        rois: ``(R, 5)``: batch index, x1, y1, x2, y2 in input pixels.
        output_size: ``(PH, PW)``.
        spatial_scale: feature pixels per input pixel.
        sampling_ratio: samples per bin side; <= 0: torchvision's adaptive grid.
        aligned: the half-pixel shift.

    Returns:
        ``(R, C, PH, PW)``, in the dtype torchvision returns.
    """
    if not (_grid_backward_applies(feature, sampling_ratio) and torch.is_grad_enabled()
            and feature.requires_grad):
        return tv_roi_align(feature, rois, output_size, spatial_scale, sampling_ratio, aligned)
    dtype = feature.dtype
    work = feature if dtype in (torch.float32, torch.float64) else feature.float()  # autocast: float32
    out = _ROIAlignCPU.apply(work, rois.to(work.dtype), tuple(output_size), float(spatial_scale),
                             int(sampling_ratio), bool(aligned))
    return out.to(dtype)
