"""The image datamodules' former single module, kept so that old imports and ``_target_`` strings still work.

Backward-compatible re-exports only: the code lives in one module per job (new code imports from there) —
:mod:`~gancollapse.data.convert` (pixel conversions), :mod:`~gancollapse.data.in_memory` (uint8 sets and device
batches), :mod:`~gancollapse.data.downloads` (data root, missing-set message),
:mod:`~gancollapse.data.image_datamodule` (the base datamodule) and one module per ``conf/dataset/<name>.yaml``:
:mod:`~gancollapse.data.digits`, :mod:`~gancollapse.data.mnist`, :mod:`~gancollapse.data.mnist5k`,
:mod:`~gancollapse.data.cifar10`, :mod:`~gancollapse.data.celeba`, :mod:`~gancollapse.data.image_folder` and
:mod:`~gancollapse.data.stacked` (Stacked MNIST).
"""

from __future__ import annotations

from gancollapse.data.celeba import CelebADataModule
from gancollapse.data.cifar10 import CIFAR10DataModule
from gancollapse.data.convert import (
    match_channels,
    pad_or_resize,
    random_hflip,
    resize_uint8,
    to_float,
    to_uint8,
)
from gancollapse.data.digits import DigitsDataModule
from gancollapse.data.downloads import DEFAULT_ROOT
from gancollapse.data.image_datamodule import ImageDataModule
from gancollapse.data.image_folder import IMAGE_SUFFIXES, FolderDataModule, PILImages
from gancollapse.data.in_memory import DeviceBatches, UInt8Images, materialise
from gancollapse.data.mnist import MNISTDataModule
from gancollapse.data.mnist5k import (
    MNIST5K_HELD_OUT_PER_CLASS,
    MNIST5K_SPLIT_SEED,
    MNIST5kDataModule,
    stratified_split,
)
from gancollapse.data.stacked import StackedImages, StackedMNISTDataModule, stack_triples

__all__ = [
    "DEFAULT_ROOT", "IMAGE_SUFFIXES", "MNIST5K_HELD_OUT_PER_CLASS", "MNIST5K_SPLIT_SEED", "CIFAR10DataModule",
    "CelebADataModule", "DeviceBatches", "DigitsDataModule", "FolderDataModule", "ImageDataModule",
    "MNIST5kDataModule", "MNISTDataModule", "PILImages", "StackedImages", "StackedMNISTDataModule", "UInt8Images",
    "match_channels", "materialise", "pad_or_resize", "random_hflip", "resize_uint8", "stack_triples",
    "stratified_split", "to_float", "to_uint8",
]
