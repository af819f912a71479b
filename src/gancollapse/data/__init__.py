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
