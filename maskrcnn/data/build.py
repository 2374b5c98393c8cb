"""Datasets and data loaders from the config.

Training determinism: every sample gets its own seed derived from
``(SEED, rank, iteration, position in batch)`` and its transforms run under
that seed (in a forked torch RNG state), so the batches do not depend on
``NUM_WORKERS`` and a resumed run (``start_iter``) continues the same sequence.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, ConcatDataset, DataLoader, Dataset, Sampler

from maskrcnn.config import ConfigError
from maskrcnn.utils.errors import DataError
from maskrcnn.data.collate import BatchCollator
from maskrcnn.data.datasets.catalog import resolve_dataset
from maskrcnn.data.datasets.coco import COCODataset
from maskrcnn.data.samplers import (GroupedBatchSampler, InferenceSampler, IterationBasedBatchSampler,
                                    TrainingSampler, get_world_size_and_rank)
from maskrcnn.data.transforms import Compose, build_transforms

__all__ = ["build_dataset", "build_test_transform", "build_train_dataset", "dataset_categories", "build_train_loader", "build_test_loaders", "CategoryConcatDataset",
           "SeededDataset", "SeededBatchSampler", "per_process_batch_size", "aspect_ratio_group_ids"]

logger = logging.getLogger(__name__)


class CategoryConcatDataset(ConcatDataset):
    """ConcatDataset of datasets with identical categories; exposes those categories."""

    def __init__(self, datasets: Sequence[COCODataset]) -> None:
        super().__init__(datasets)
        first = datasets[0]
        for ds in datasets[1:]:
            if (ds.class_names != first.class_names
                    or ds.contiguous_to_category_id != first.contiguous_to_category_id):
                raise DataError(f"cannot concatenate datasets {first.name!r} and {ds.name!r}: their "
                                 f"categories differ ({first.class_names[1:]} vs {ds.class_names[1:]})")
        self.name = "+".join(ds.name for ds in datasets)
        self.class_names = first.class_names
        self.num_classes = first.num_classes
        self.category_id_to_contiguous = first.category_id_to_contiguous
        self.contiguous_to_category_id = first.contiguous_to_category_id

    def get_img_info(self, index: int) -> Dict[str, Any]:
        """Image info of global ``index`` (see :meth:`COCODataset.get_img_info`)."""
        ds_idx = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        offset = index - (self.cumulative_sizes[ds_idx - 1] if ds_idx > 0 else 0)
        return self.datasets[ds_idx].get_img_info(offset)


class SeededDataset(Dataset):
    """Wraps a dataset; indexed by ``(index, seed)``, it runs ``dataset[index]`` under ``seed``.

    Other attributes (``class_names``, ``get_img_info``...) are forwarded to the wrapped dataset.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: it is the one fork_rng restores, and torch.manual_seed would
            # also reseed the accelerators' (moving the training process's CUDA stream when
            # NUM_WORKERS is 0), at 0.8 ms a call for the stack trace that its lazy CUDA call keeps.
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _sample_seed(seed: int, rank: int, iteration: int, position: int) -> int:
    state = np.random.SeedSequence([seed, rank, iteration, position]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededBatchSampler(Sampler[List[Tuple[int, int]]]):
    """Pairs each index of an iteration-based batch sampler with its per-sample seed."""

    def __init__(self, batch_sampler: IterationBasedBatchSampler, seed: int, rank: int) -> None:
        self.batch_sampler = batch_sampler
        self.seed, self.rank = int(seed), int(rank)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        for it, batch in enumerate(self.batch_sampler, start=self.batch_sampler.start_iter):
            yield [(int(i), _sample_seed(self.seed, self.rank, it, j)) for j, i in enumerate(batch)]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def state_at(self, iteration: int) -> Dict[str, int]:
        """Plain-data position of the sequence after ``iteration`` batches (for checkpoints).

        With the per-sample seeds, ``(seed, iteration)`` fixes the rest; epoch and batch
        offset are recorded so a resume can check that it reads the same sequence.
        """
        epoch, offset = self.batch_sampler.position(iteration)
        return {"seed": self.seed, "iteration": int(iteration), "epoch": epoch, "batch_in_epoch": offset}


def per_process_batch_size(total: int, key: str) -> int:
    """``total`` divided by the world size; ValueError when not divisible."""
    world, _ = get_world_size_and_rank()
    if total <= 0 or total % world != 0:
        raise ConfigError(f"{key} ({total}) is the total batch size over all processes and must be "
                         f"a positive multiple of the number of processes ({world})")
    return total // world


def _shared_seed(seed: int) -> int:
    """``SEED``, already resolved by the caller: a negative one is drawn (the same on every rank)
    and recorded by ``maskrcnn.engine.resume.seed_all`` / ``with_seed``."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"SEED is {seed}: the training loader needs the run's resolved seed (>= 0); "
                         "tools/train_net.py draws one and records it in OUTPUT_DIR/config.yaml")
    return seed


def _pin_memory(cfg: Any) -> bool:
    """Page-locked batches when the model runs on CUDA (``MODEL.DEVICE``), so that their copies
    to the GPU are asynchronous (see :class:`maskrcnn.data.prefetch.DevicePrefetcher`)."""
    return str(cfg.MODEL.DEVICE).startswith("cuda") and torch.cuda.is_available()


def _worker_init_fn(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from its (loader-derived) torch seed."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def aspect_ratio_group_ids(dataset: Any) -> List[int]:
    """Group 0 for portrait images (``w / h < 1``), 1 otherwise, from ``get_img_info``."""
    ids = []
    for i in range(len(dataset)):
        info = dataset.get_img_info(i)
        ids.append(0 if info["width"] < info["height"] else 1)
    return ids


def build_test_transform(cfg: Any) -> Compose:
    """The test-time resize of ``INPUT.*`` (``MIN_SIZE_TEST``, ``MAX_SIZE_TEST``, ``RESIZE_MODE``):
    what the test loaders apply, and the :class:`maskrcnn.Predictor` built from a config."""
    return build_transforms(cfg, is_train=False)


def build_dataset(cfg: Any, name: str, is_train: bool) -> COCODataset:
    """Resolve ``name`` in the catalog and build its dataset with the transforms of the mode.

    Reads ``DATASETS.CATALOG`` / ``DATASETS.DATA_DIR`` (via the catalog), ``INPUT.*``,
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` (training only) and ``MODEL.MASK_ON``: Mask R-CNN
    needs masks, so images with box-only annotations are left out of both splits; Faster R-CNN
    trains and is evaluated on box-only annotations too (see ``datasets/coco.py``).
    """
    spec = resolve_dataset(name, cfg.DATASETS)
    filter_empty = bool(cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS) if is_train else False
    return COCODataset(spec["ann_file"], spec["img_dir"], name, transforms=build_transforms(cfg, is_train),
                       is_train=is_train, filter_empty=filter_empty,
                       check=cfg.DATASETS.CHECK,  # checks: see datasets/check.py
                       require_masks=bool(cfg.MODEL.MASK_ON))


def build_train_dataset(cfg: Any):
    """The training set: one COCODataset, or a CategoryConcatDataset of ``DATASETS.TRAIN``."""
    names = tuple(cfg.DATASETS.TRAIN)
    if not names:
        raise ConfigError("DATASETS.TRAIN is empty: name at least one training set")
    datasets = [build_dataset(cfg, n, is_train=True) for n in names]
    dataset = datasets[0] if len(datasets) == 1 else CategoryConcatDataset(datasets)
    if len(dataset) == 0:
        raise DataError(f"training dataset {names} has no images (after filtering empty ones)")
    return dataset


def dataset_categories(dataset: Any) -> List[Dict[str, Any]]:
    """``[{"id": category_id, "name": name}]`` for contiguous labels 1..K, in order."""
    inner = getattr(dataset, "dataset", dataset)
    return [{"id": int(inner.contiguous_to_category_id[k]), "name": str(inner.class_names[k])}
            for k in range(1, len(inner.class_names))]


def build_train_loader(cfg: Any, start_iter: int = 0, dataset: Any = None) -> DataLoader:
    """Iteration-based training loader yielding ``(images, targets, infos)`` batches.

    Args:
        cfg: config (``DATASETS.TRAIN``, ``DATALOADER.*``, ``SOLVER.IMS_PER_BATCH``,
            ``SOLVER.MAX_ITER``, ``SEED``, ``INPUT.*``; ``MODEL.DEVICE``: pinned memory on CUDA).
        start_iter: iteration to resume from; the loader yields ``MAX_ITER - start_iter`` batches,
            the tail of the uninterrupted sequence.
        dataset: the training set if already built (see :func:`build_train_dataset`).

    Returns:
        DataLoader whose ``.dataset.dataset`` is the COCODataset (or CategoryConcatDataset).
    """
    if dataset is None:
        dataset = build_train_dataset(cfg)
    batch = per_process_batch_size(int(cfg.SOLVER.IMS_PER_BATCH), "SOLVER.IMS_PER_BATCH")
    world, rank = get_world_size_and_rank()
    seed = _shared_seed(cfg.SEED)
    sampler = TrainingSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    if bool(cfg.DATALOADER.ASPECT_RATIO_GROUPING):
        batch_sampler: Sampler = GroupedBatchSampler(sampler, aspect_ratio_group_ids(dataset), batch)
    else:
        batch_sampler = BatchSampler(sampler, batch, drop_last=False)
    iter_sampler = IterationBasedBatchSampler(batch_sampler, int(cfg.SOLVER.MAX_ITER), start_iter)
    return DataLoader(SeededDataset(dataset), batch_sampler=SeededBatchSampler(iter_sampler, seed, rank),
                      num_workers=int(cfg.DATALOADER.NUM_WORKERS), collate_fn=BatchCollator(),
                      worker_init_fn=_worker_init_fn, pin_memory=_pin_memory(cfg),
                      generator=torch.Generator().manual_seed(seed + rank))


def build_test_loaders(cfg: Any) -> List[Tuple[str, DataLoader]]:
    """One loader per ``DATASETS.TEST`` name: this rank's contiguous shard, in order, no flip.

    Reads ``DATASETS.TEST``, ``TEST.IMS_PER_BATCH`` (total), ``DATALOADER.NUM_WORKERS``, ``INPUT.*``.
    """
    batch = per_process_batch_size(int(cfg.TEST.IMS_PER_BATCH), "TEST.IMS_PER_BATCH")
    loaders = []
    for name in tuple(cfg.DATASETS.TEST):
        dataset = build_dataset(cfg, name, is_train=False)
        batch_sampler = BatchSampler(InferenceSampler(len(dataset)), batch, drop_last=False)
        loaders.append((name, DataLoader(dataset, batch_sampler=batch_sampler,
                                         num_workers=int(cfg.DATALOADER.NUM_WORKERS), pin_memory=_pin_memory(cfg),
                                         collate_fn=BatchCollator(), worker_init_fn=_worker_init_fn)))
    return loaders
