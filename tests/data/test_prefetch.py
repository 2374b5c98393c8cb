"""DevicePrefetcher: on the CPU a pass-through of the loader; on CUDA the same batches, in order,
on the GPU (the copy of the next batch overlapping the current step); pinned loaders on CUDA,
targets pinned too (``BoxList.pin_memory``), every tensor copied with ``non_blocking``."""
import json
import shutil

import pytest
import torch

from conftest import square_target, tiny_cfg
from maskrcnn.data.build import build_train_loader
from maskrcnn.data.datasets.shapes import ensure_shapes_dataset
from maskrcnn.data.prefetch import DevicePrefetcher, to_device
from maskrcnn.structures.bounding_box import BoxList

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _batches(n):
    """``n`` batches shaped like the training loader's: (images, targets, infos)."""
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        images = [torch.randint(0, 256, (3, 32 + 8 * j, 40), dtype=torch.uint8, generator=g) for j in range(2)]
        targets = [square_target(tuple(im.shape[1:]), [[2.0, 3.0, 20.0, 25.0]], [1 + j]) for j, im in enumerate(images)]
        out.append((images, targets, [{"id": 10 * i + j, "file_name": f"{i}_{j}.png"} for j in range(2)]))
    return out


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    """A real training loader (shapes data, 2 workers), 5 iterations of 2 images."""
    base = tmp_path_factory.mktemp("prefetch")
    ann, img_dir = ensure_shapes_dataset(str(base), "train", 6, 0)
    cfg = tiny_cfg()
    cfg.merge_from_list(["DATASETS.CATALOG", {"toy": {"ANN_FILE": ann, "IMG_DIR": img_dir}},
                         "DATASETS.TRAIN", ("toy",), "DATALOADER.NUM_WORKERS", 2, "SOLVER.IMS_PER_BATCH", 2,
                         "SOLVER.MAX_ITER", 5, "SEED", 3, "INPUT.MIN_SIZE_TRAIN", (64,),
                         "INPUT.MAX_SIZE_TRAIN", 96])
    yield cfg, build_train_loader(cfg)
    shutil.rmtree(base, ignore_errors=True)


def _same_batch(a, b):
    (ims_a, tg_a, info_a), (ims_b, tg_b, info_b) = a, b
    assert len(ims_a) == len(ims_b) and info_a == info_b
    for x, y in zip(ims_a, ims_b):
        assert torch.equal(x.cpu(), y.cpu())
    for x, y in zip(tg_a, tg_b):
        assert x.size == y.size and torch.equal(x.bbox.cpu(), y.bbox.cpu())
        assert torch.equal(x.get_field("labels").cpu(), y.get_field("labels").cpu())
        assert torch.equal(x.get_field("masks").points.cpu(), y.get_field("masks").points.cpu())


def test_cpu_is_a_pass_through_in_order():
    batches = _batches(4)
    out = list(DevicePrefetcher(batches, "cpu"))
    assert len(out) == 4 and all(a is b for a, b in zip(out, batches))  # the loader's own objects
    assert len(DevicePrefetcher(batches, torch.device("cpu"))) == 4
    assert list(DevicePrefetcher([], "cpu")) == []


def test_cpu_pass_through_of_a_real_loader_with_workers(loader):
    cfg, data = loader
    expected = list(data)
    got = list(DevicePrefetcher(data, "cpu"))
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected):
        _same_batch(a, b)
    assert not data.pin_memory  # MODEL.DEVICE cpu: nothing to pin for


def test_to_device_moves_every_tensor_and_keeps_the_rest():
    images, targets, infos = _batches(1)[0]
    moved = to_device((images, targets, infos, None, "x"), torch.device("meta"))
    assert all(im.device.type == "meta" for im in moved[0])
    assert all(isinstance(t, BoxList) and t.bbox.device.type == "meta"
               and t.get_field("labels").device.type == "meta"
               and t.get_field("masks").points.device.type == "meta" for t in moved[1])
    assert moved[2] == infos and moved[3] is None and moved[4] == "x"
    assert images[0].device.type == "cpu"  # the originals are untouched


def _record_copies(monkeypatch, device_type):
    """Every ``Tensor.to`` towards ``device_type`` from now on, as ``(non_blocking, source pinned)``."""
    calls = []
    original = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        if args and isinstance(args[0], (str, torch.device)) and torch.device(args[0]).type == device_type:
            calls.append((kwargs.get("non_blocking", False), self.is_pinned()))
        return original(self, *args, **kwargs)
    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    return calls


def test_to_device_copies_every_tensor_non_blocking(monkeypatch):
    """The prefetcher's copy, ``to_device(batch, device, non_blocking=True)``, hands
    ``non_blocking`` down to every tensor: the images and the targets' boxes, labels and
    polygon points (through ``BoxList.to`` and ``InstanceMasks.to``)."""
    images, targets, infos = _batches(1)[0]
    calls = _record_copies(monkeypatch, "meta")
    to_device((images, targets, infos), torch.device("meta"), non_blocking=True)
    assert len(calls) == len(images) + 3 * len(targets)
    assert all(non_blocking for non_blocking, _ in calls)


@requires_cuda
def test_cuda_same_batches_in_order_on_the_gpu(loader, monkeypatch):
    cfg, _ = loader
    cfg = cfg.clone()
    cfg.MODEL.DEVICE = "cuda"
    data = build_train_loader(cfg)
    assert data.pin_memory
    expected = list(data)
    for _, targets, _ in expected:  # the loader pinned the targets too, not only the images
        assert all(t.bbox.is_pinned() and t.get_field("labels").is_pinned()
                   and t.get_field("masks").points.is_pinned() for t in targets)
    calls = _record_copies(monkeypatch, "cuda")
    got = []
    for batch in DevicePrefetcher(data, "cuda"):
        images, targets, _ = batch
        assert all(im.is_cuda for im in images) and all(t.bbox.is_cuda for t in targets)
        torch.cuda.synchronize()
        got.append(to_device(batch, torch.device("cpu")))
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected):
        _same_batch(a, b)
    json.dumps([b[2] for b in got])  # infos stay plain data
    # Images, boxes, labels, points of 5 batches of 2: all copied asynchronously from pinned memory.
    assert len(calls) >= 5 * 2 * 4 and all(non_blocking and pinned for non_blocking, pinned in calls)
