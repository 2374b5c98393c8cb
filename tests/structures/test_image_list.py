"""to_image_list: zero padding to a size multiple, (h, w) image sizes."""
import pytest
import torch

from maskrcnn.structures.image_list import ImageList, to_image_list


def test_padding_to_size_divisibility():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 50, 70, generator=gen) + 0.5  # strictly positive content
    b = torch.rand(3, 65, 33, generator=gen) + 0.5
    il = to_image_list([a, b], size_divisibility=32)
    assert isinstance(il, ImageList)
    assert il.tensors.shape == (2, 3, 96, 96)
    assert il.image_sizes == [(50, 70), (65, 33)]
    assert len(il) == 2
    assert torch.equal(il.tensors[0, :, :50, :70], a)
    assert torch.equal(il.tensors[1, :, :65, :33], b)
    # zero padding, bottom / right only
    assert (il.tensors[0, :, 50:, :] == 0).all() and (il.tensors[0, :, :, 70:] == 0).all()
    assert (il.tensors[1, :, 65:, :] == 0).all() and (il.tensors[1, :, :, 33:] == 0).all()
    assert (il.tensors[0, :, :50, :70] > 0).all()


def test_exact_multiple_is_not_padded_further():
    a = torch.ones(1, 64, 32)
    il = to_image_list([a], size_divisibility=32)
    assert il.tensors.shape == (1, 1, 64, 32)
    assert il.image_sizes == [(64, 32)]


def test_non_square_sizes_are_height_width():
    a = torch.ones(3, 40, 100)
    il = to_image_list([a], size_divisibility=32)
    assert il.image_sizes == [(40, 100)]
    assert il.tensors.shape[-2:] == (64, 128)


def test_no_divisibility_pads_to_max():
    a, b = torch.ones(2, 5, 9), torch.full((2, 7, 3), 2.0)
    il = to_image_list([a, b])
    assert il.tensors.shape == (2, 2, 7, 9)
    assert il.tensors.dtype == a.dtype
    assert il.tensors[1, :, :7, :3].eq(2).all() and il.tensors[1, :, :, 3:].eq(0).all()
    assert il.image_sizes == [(5, 9), (7, 3)]


def test_passthrough_and_errors():
    il = to_image_list([torch.ones(1, 4, 4)])
    assert to_image_list(il) is il
    with pytest.raises(ValueError):
        to_image_list([])
    moved = il.to("cpu")
    assert torch.equal(moved.tensors, il.tensors) and moved.image_sizes == il.image_sizes
