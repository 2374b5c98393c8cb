"""ROIAlign with the CPU grid backward (maskrcnn/layers/roi_align.py) against torchvision's."""
import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from maskrcnn.layers.roi_align import roi_align


def _rois(gen, n, r, dtype):
    """Boxes of ``n`` images in a 68 x 52 input (feature scale 1/4), among them boxes reaching
    far outside the map, boxes with samples within one pixel outside it, and tiny boxes."""
    image = torch.randint(0, n, (r,), generator=gen).to(dtype)
    xy = torch.rand(r, 2, generator=gen, dtype=dtype) * torch.tensor([90.0, 70.0], dtype=dtype) - 10
    wh = torch.rand(r, 2, generator=gen, dtype=dtype) * 40
    rois = torch.cat([image[:, None], xy, xy + wh], 1)
    rois[0, 1:] = torch.tensor([-30.0, -30.0, 100.0, 100.0])
    rois[1, 1:] = torch.tensor([5.0, 5.0, 5.2, 5.1])
    rois[2, 1:] = torch.tensor([-3.0, 40.0, 70.0, 54.0])
    return rois


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [1, 2, 3])
def test_gradient_is_torchvisions(dtype, tol, aligned, ratio):
    gen = torch.Generator().manual_seed(ratio + 10 * aligned)
    feature = torch.randn(3, 5, 13, 17, generator=gen, dtype=dtype, requires_grad=True)
    rois = _rois(gen, 3, 60, dtype)
    grad = torch.randn(60, 5, 7, 6, generator=gen, dtype=dtype)
    ref = tv_roi_align(feature, rois, (7, 6), 0.25, ratio, aligned)
    (ref_grad,) = torch.autograd.grad(ref, feature, grad)
    out = roi_align(feature, rois, (7, 6), 0.25, ratio, aligned)
    (out_grad,) = torch.autograd.grad(out, feature, grad)
    assert torch.equal(out, ref)  # the forward is torchvision's
    assert out.grad_fn is not None and type(out.grad_fn).__name__ != type(ref.grad_fn).__name__
    assert (out_grad - ref_grad).abs().max() <= tol * ref_grad.abs().max()


def test_images_without_boxes_one_pixel_maps_and_no_boxes():
    gen = torch.Generator().manual_seed(0)
    for shape in [(4, 3, 1, 1), (4, 3, 1, 9), (4, 3, 6, 1)]:
        feature = torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)
        rois = torch.tensor([[2.0, 0.0, 0.0, 3.0, 2.0], [2.0, -2.0, 1.0, 8.0, 9.0]], dtype=torch.float64)
        ref = torch.autograd.grad(tv_roi_align(feature, rois, (2, 2), 0.5, 2).sum(), feature)[0]
        out = torch.autograd.grad(roi_align(feature, rois, (2, 2), 0.5, 2).sum(), feature)[0]
        assert torch.allclose(out, ref, rtol=0, atol=1e-12), shape
    feature = torch.randn(2, 3, 5, 5, requires_grad=True)
    empty = roi_align(feature, torch.zeros((0, 5)), (2, 2), 1.0, 2)
    assert empty.shape == (0, 3, 2, 2)
    (g,) = torch.autograd.grad(empty.sum(), feature, allow_unused=True, materialize_grads=True)
    assert torch.count_nonzero(g) == 0


def test_bfloat16_feature_pools_in_float32_like_torchvision():
    gen = torch.Generator().manual_seed(1)
    feature = torch.randn(2, 4, 9, 11, generator=gen).to(torch.bfloat16).requires_grad_()
    rois = _rois(gen, 2, 20, torch.float32)
    out = roi_align(feature, rois, (3, 3), 0.25, 2)
    assert out.dtype == torch.bfloat16
    ref = tv_roi_align(feature.detach().float(), rois, (3, 3), 0.25, 2).to(torch.bfloat16)
    assert torch.equal(out, ref)
    (g,) = torch.autograd.grad(out.float().sum(), feature)
    assert g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all()


def test_adaptive_grid_and_no_grad_are_torchvisions_own():
    feature = torch.randn(1, 2, 8, 8, requires_grad=True)
    rois = torch.tensor([[0.0, 1.0, 1.0, 20.0, 18.0]])
    assert roi_align(feature, rois, (2, 2), 0.25, 0).grad_fn.name() == tv_roi_align(
        feature, rois, (2, 2), 0.25, 0).grad_fn.name()
    with torch.no_grad():
        assert torch.equal(roi_align(feature, rois, (2, 2), 0.25, 2), tv_roi_align(feature, rois, (2, 2), 0.25, 2))
