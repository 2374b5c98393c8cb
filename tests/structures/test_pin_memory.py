"""``pin_memory()`` of the targets (BoxList, InstanceMasks): what a DataLoader with
``pin_memory=True`` calls on them, so that the prefetcher's ``non_blocking`` copies of the targets
are asynchronous like those of the images.

Pinning needs a CUDA driver: on a machine without one, torch's ``Tensor.pin_memory`` raises
(``test_torch_cannot_pin_without_cuda``). There, and only there, that one call is replaced by a
copy that remembers what it returned; everything around it (which tensors are pinned, the
structure and content of the copy, the DataLoader's own pinning function) runs as it is. With
CUDA the real pinning runs and ``is_pinned()`` is checked.
"""
from typing import Callable

import pytest
import torch
from torch.utils.data._utils.pin_memory import pin_memory as dataloader_pin_memory

from maskrcnn.structures.bounding_box import BoxList
from maskrcnn.structures.segmentation_mask import InstanceMasks

SIZE = (40, 60)
RLE = {"size": [40, 60], "counts": [130, 6, 34, 6, 34, 6, 2184]}  # uncompressed COCO RLE: a 6 x 3 block


@pytest.fixture
def pinned(monkeypatch) -> Callable[[torch.Tensor], bool]:
    """``pinned(t)``: ``t`` is in page-locked memory (CUDA), or, without CUDA, ``t`` is what
    ``Tensor.pin_memory`` returned (a copy standing in for the pinned one)."""
    if torch.cuda.is_available():
        return lambda t: t.is_pinned()
    made = []  # kept alive: their addresses stay theirs

    def pin_copy(self, device=None):
        out = self.clone()
        made.append(out)
        return out
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_copy)
    # By memory, like is_pinned(): views of a copy (BoxList reshapes empty boxes) count too.
    return lambda t: t.numel() > 0 and t.untyped_storage().data_ptr() in {m.untyped_storage().data_ptr() for m in made}


def _target() -> BoxList:
    """Three instances: two polygon instances (one of two parts) and one RLE instance."""
    polys = [[[5.0, 5.0, 20.0, 5.0, 20.0, 18.0, 5.0, 18.0]],
             [[30.0, 10.0, 50.0, 12.0, 40.0, 30.0], [52.0, 2.0, 58.0, 2.0, 55.0, 9.0]],
             None]
    t = BoxList(torch.tensor([[5.0, 5.0, 20.0, 18.0], [30.0, 2.0, 58.0, 30.0], [3.0, 10.0, 6.0, 16.0]]), SIZE)
    t.add_field("labels", torch.tensor([1, 4, 2]))
    t.add_field("scores", torch.tensor([0.9, 0.5, 0.7]))
    t.add_field("masks", InstanceMasks(polys, SIZE, rles=[None, None, RLE]))
    return t


def _assert_pinned_copy(got: BoxList, target: BoxList, pinned) -> None:
    assert isinstance(got, BoxList) and got is not target
    assert got.size == target.size and got.fields() == target.fields()
    assert torch.equal(got.bbox, target.bbox) and pinned(got.bbox) and not pinned(target.bbox)
    for name in ("labels", "scores"):
        a, b = got.get_field(name), target.get_field(name)
        assert torch.equal(a, b) and a.dtype == b.dtype and pinned(a) and not pinned(b)
    if target.has_field("source"):
        assert got.get_field("source") is target.get_field("source")
    masks, original = got.get_field("masks"), target.get_field("masks")
    assert isinstance(masks, InstanceMasks) and masks is not original
    for name in ("points", "part_ptr", "part_owner"):  # every tensor the container holds
        a, b = getattr(masks, name), getattr(original, name)
        assert torch.equal(a, b) and a.dtype == b.dtype and pinned(a) and not pinned(b), name
    assert masks.rles == original.rles and masks.size == original.size and masks.affine == original.affine
    # The same masks: the same targets in every box, polygon and RLE instances alike.
    boxes, idx = target.bbox + torch.tensor([-1.0, -1.0, 1.0, 1.0]), torch.arange(len(target))
    expected = original.crop_and_resize(boxes, idx, 14)
    assert expected.sum() > 0 and torch.equal(masks.crop_and_resize(boxes, idx, 14), expected)


def test_boxlist_pins_every_tensor_and_keeps_its_content(pinned):
    target = _target()
    target.add_field("source", "annotations.json")  # neither a tensor nor pinnable: shared
    _assert_pinned_copy(target.pin_memory(), target, pinned)


def test_instance_masks_alone_and_empty_targets(pinned):
    masks = _target().get_field("masks")
    copy = masks.pin_memory()
    assert all(pinned(getattr(copy, n)) for n in ("points", "part_ptr", "part_owner"))
    assert torch.equal(copy.points, masks.points) and len(copy) == len(masks) == 3
    empty = BoxList(torch.zeros(0, 4), SIZE)
    empty.add_field("labels", torch.zeros(0, dtype=torch.int64))
    empty.add_field("masks", InstanceMasks([], SIZE))
    got = empty.pin_memory()  # nothing to pin, but the same structure
    assert isinstance(got, BoxList) and got is not empty and got.size == SIZE
    assert len(got) == 0 and got.bbox.shape == (0, 4) and got.get_field("labels").shape == (0,)
    got_masks = got.get_field("masks")
    assert isinstance(got_masks, InstanceMasks) and len(got_masks) == 0 and got_masks.points.shape == (0, 2)


def test_the_dataloaders_pinning_reaches_the_targets(pinned):
    """torch's own function, the one a DataLoader's pinning thread applies to each batch."""
    image = torch.randint(0, 256, (3, *SIZE), dtype=torch.uint8)
    targets = [_target(), _target()[torch.tensor([0, 2])]]
    infos = [{"id": 1}, {"id": 2}]
    images, got, got_infos = dataloader_pin_memory(([image, image.clone()], targets, infos))
    assert all(pinned(im) for im in images) and got_infos == infos
    for g, t in zip(got, targets):
        _assert_pinned_copy(g, t, pinned)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, pinning works (the tests above pin for real)")
def test_torch_cannot_pin_without_cuda():
    """Why the tests above stand in for the pinning call here: torch itself refuses it."""
    with pytest.raises(RuntimeError):
        _target().pin_memory()
