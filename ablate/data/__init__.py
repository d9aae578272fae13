"""Data: an embedded procedural dataset, and any ImageFolder root, streamed or decoded into memory.

Two pipelines draw the same augmentations, seeded per (seed, epoch, sample), so a run's data are the same
whatever the worker count, the number of processes or an interruption:
- per_sample: timm's `create_transform` (random-resized crop, flip, RandAugment, random erasing) on one PIL image
  at a time, for streamed folders and the full recipe;
- batched: images held as one uint8 tensor, and random-resized crop + flip (the light augmentation) applied to
  whole batches with tensor ops, as the fast CIFAR trainers do (airbench, hlb-CIFAR10). Same crop distribution
  as torchvision's RandomResizedCrop (integer boxes, 10 tries, centre-crop fallback).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import DataConfig, RecipeConfig
from ..errors import DataError
from .batched import BatchedImages, BatchedLoader
from .geometry import crop_resize, eval_resize, resample_matrix, resize_shorter
from .loaders import GlobalBatchSampler, default_workers, shard
from .per_sample import ImageDataset, SeededTransform, build_transforms
from .sources import (fixed_subset, load_image, scan_folder_splits, scan_image_folder, synthetic_class_names,
                      synthetic_dataset, synthetic_fingerprint, synthetic_images)

# the package's face: what the toolkit and its users build, batch and evaluate data with
__all__ = ["DataError", "Splits", "build_datasets", "resolve_pipeline", "batched_pipeline_blocker",
           "ImageDataset", "SeededTransform", "build_transforms", "BatchedImages", "BatchedLoader",
           "GlobalBatchSampler", "shard", "default_workers", "load_image", "scan_image_folder",
           "synthetic_images", "synthetic_class_names", "eval_resize", "resize_shorter", "resample_matrix",
           "crop_resize"]


@dataclass
class Splits:
    train: ImageDataset | BatchedImages
    val: ImageDataset | BatchedImages
    classes: list[str]
    pipeline: str                       # batched | per_sample, as resolved from data.pipeline
    fingerprint: str                    # what the data are (data_fingerprint): runs on other copies differ


def batched_pipeline_blocker(data: DataConfig, recipe: RecipeConfig) -> str | None:
    """Why the batched pipeline cannot serve this data and augmentation, or None if it can."""
    if data.kind == "folder" and not data.in_memory:
        return "the images are streamed from disk (data.in_memory=false)"
    extras = [k for k in recipe.IMAGE_AUGMENTATION if getattr(recipe, k)]
    if extras:
        return f"the augmentation has {', '.join(extras)} (the batched pipeline does crop + flip only)"
    return None


def resolve_pipeline(data: DataConfig, recipe: RecipeConfig) -> str:
    blocker = batched_pipeline_blocker(data, recipe)
    if data.pipeline == "batched" and blocker:
        raise DataError(f"data.pipeline=batched is not possible: {blocker}; use data.pipeline=auto or per_sample")
    if data.pipeline == "auto":
        return "per_sample" if blocker else "batched"
    return data.pipeline


def build_datasets(data: DataConfig, recipe: RecipeConfig, seed: int, train_size: int | None = None) -> Splits:
    """The train and val splits of `data`, with `recipe`'s augmentation, in the pipeline data.pipeline picks; the
    training crops at `train_size` (default data.image_size; RunConfig.train_image_size)."""
    train_size = train_size or data.image_size
    pipeline = resolve_pipeline(data, recipe)
    if data.kind == "synthetic":
        # the data seed is fixed (not the run seed): every run sees the same dataset
        xs, ys = synthetic_dataset(data.train_size + data.val_size, data.image_size, data.num_classes, data.seed)
        train = fixed_subset(data.train_size, data.train_subset, data.seed)
        val = data.train_size + fixed_subset(data.val_size, data.val_subset, data.seed)
        arrays = {"train": (xs[train], ys[train]), "val": (xs[val], ys[val])}
        classes = synthetic_class_names(data.num_classes)
        fingerprint, sources = synthetic_fingerprint(data), {}
    else:
        arrays, classes, fingerprint, sources = scan_folder_splits(data, recipe.interpolation)
    if pipeline == "batched":
        splits = {k: BatchedImages(x, y, data, recipe.interpolation, train=k == "train", seed=seed,
                                   sources=sources.get(k), train_size=train_size) for k, (x, y) in arrays.items()}
    else:
        transforms = dict(zip(("train", "val"), build_transforms(data, recipe, seed, train_size)))
        splits = {k: ImageDataset(y, transforms[k], images=x, sources=sources.get(k)) if isinstance(x, np.ndarray)
                  else ImageDataset(y, transforms[k], paths=x) for k, (x, y) in arrays.items()}
    return Splits(splits["train"], splits["val"], classes, pipeline, fingerprint)
