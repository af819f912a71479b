"""Datamodules: toy mixtures, torchvision image sets, TFRecords."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


def images_of(batch: Any) -> Tensor:
    """The images of a datamodule's batch: a tensor, an (images, labels) pair, or a mapping with ``image``."""
    if isinstance(batch, (list, tuple)):
        return batch[0]
    if isinstance(batch, Mapping):
        return batch["image"]
    return batch


def held_out_real(datamodule: Any, n: int, seed: int) -> Tensor:
    """Fresh real samples for calibration: toy data are redrawn from the mixture (independent of the
    training set); image datamodules return a seeded subset of their data."""
    if not hasattr(datamodule, "sample"):
        raise ValueError(f"{type(datamodule).__name__} has no sample(n, seed); cannot draw held-out real data")
    if hasattr(datamodule, "setup"):
        datamodule.setup("fit")
    out = datamodule.sample(n, seed=seed)
    return out[0] if isinstance(out, (tuple, list)) else out


#: where torchvision looks for a data set's files, below ``dataset.root`` (for the messages of a missing set)
DATA_FILES = {
    "mnist": "MNIST/raw/ (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
             "t10k-labels-idx1-ubyte.gz)",
    "cifar10": "cifar-10-python.tar.gz (or its unpacked folder cifar-10-batches-py/)",
    "celeba": "celeba/ (img_align_celeba/ and list_eval_partition.txt, list_attr_celeba.txt, identity_CelebA.txt, "
              "list_bbox_celeba.txt, list_landmarks_align_celeba.txt)",
}

DATA_FILES["stacked_mnist"] = DATA_FILES["mnist"]
