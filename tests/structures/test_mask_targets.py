"""mask_targets: the batch at once equals image by image; device, dtype, empty cases."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maskrcnn.structures.mask_targets import mask_targets
from maskrcnn.structures.segmentation_mask import InstanceMasks

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _instances(rng, h, w, n, rle_every=3):
    polys, rles = [], []
    for i in range(n):
        cx, cy = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.3 * h, 0.7 * h)
        ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(4, 12))))
        r = rng.uniform(3, 0.4 * min(h, w), ang.size)
        parts = [np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).ravel().tolist()]
        if i % 2:
            parts.append([cx, cy, cx + 9, cy, cx + 9, cy + 7])
        if i % rle_every == rle_every - 1:
            rles.append(mask_utils.merge(mask_utils.frPyObjects(parts, h, w)))
            polys.append(None)
        else:
            rles.append(None)
            polys.append(parts)
    return InstanceMasks(polys, (h, w), rles=rles)


def _boxes(rng, h, w, k):
    xy = rng.uniform(0, 0.7, (k, 2)) * [w, h]
    wh = rng.uniform(0.05, 0.6, (k, 2)) * [w, h]
    b = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1)
    return torch.tensor(b, dtype=torch.float32)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    masks = [_instances(rng, 60, 90, 7), _instances(rng, 120, 50, 4).flip_horizontal().resize((180, 75)),
             _instances(rng, 40, 40, 5, rle_every=1).crop((2, 3, 38, 36)), _instances(rng, 30, 30, 3, rle_every=10),
             InstanceMasks([], (20, 20))]
    boxes = [_boxes(rng, *mk.size, k) for mk, k in zip(masks, (25, 11, 9, 6, 0))]
    indices = [torch.from_numpy(rng.integers(0, max(len(mk), 1), b.shape[0])) for mk, b in zip(masks, boxes)]
    return masks, boxes, indices


def test_batch_equals_image_by_image():
    masks, boxes, indices = _batch()
    batched = mask_targets(masks, boxes, indices, 14)
    single = torch.cat([mk.crop_and_resize(b, i, 14) for mk, b, i in zip(masks, boxes, indices)])
    assert batched.shape == (51, 14, 14) and batched.dtype == torch.float32
    assert torch.equal(batched, single)
    assert 0 < batched.mean() < 1


def test_points_on_the_device_give_the_same_targets():
    masks, boxes, indices = _batch(1)
    moved = [mk.to("cpu", non_blocking=True) for mk in masks]
    assert torch.equal(mask_targets(moved, boxes, indices, 9), mask_targets(masks, boxes, indices, 9))


def test_empty_inputs():
    assert mask_targets([], [], [], 7).shape == (0, 7, 7)
    masks = [InstanceMasks([], (10, 10)), InstanceMasks([[[1, 1, 5, 1, 5, 5]]], (10, 10))]
    out = mask_targets(masks, [torch.zeros(0, 4), torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)] * 2, 7)
    assert out.shape == (0, 7, 7)
    no_parts = InstanceMasks([[]], (10, 10))  # a polygon instance with no part is empty
    out = mask_targets([no_parts], [torch.tensor([[0.0, 0.0, 10.0, 10.0]])], [torch.tensor([0])], 5)
    assert torch.equal(out, torch.zeros(1, 5, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_targets_equal_cpu_targets():
    masks, boxes, indices = _batch(2)
    cpu = mask_targets(masks, boxes, indices, 28)
    cuda = mask_targets([mk.to("cuda") for mk in masks], [b.cuda() for b in boxes], [i.cuda() for i in indices], 28)
    assert cuda.device.type == "cuda"
    # the same arithmetic; roi_align's CUDA kernel may round RLE cells at exactly 0.5 differently
    assert (cuda.cpu() != cpu).float().mean() < 1e-3
