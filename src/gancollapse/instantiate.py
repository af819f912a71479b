"""Config nodes to objects, at the bottom of the layers (models build their parts with it too, and build.py
composes whole runs from it): Hydra's instantiate with one-line errors, a dataset node's datamodule, a run's
latent prior."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gancollapse.schema import DATASET_META_KEYS  # a dataset node's keys that are not its datamodule's


def instantiate_checked(node: Any, *args: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that re-raises a component's own ValueError unwrapped, so the user
    sees the message naming the bad key rather than Hydra's InstantiationException around it."""
    try:
        return instantiate(node, *args, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ValueError):
            raise ValueError(str(cause)) from None
        raise


def dataset_kwargs(cfg: DictConfig) -> DictConfig:
    node = OmegaConf.to_container(cfg.dataset, resolve=True)
    for key in DATASET_META_KEYS:
        node.pop(key, None)
    return OmegaConf.create(node)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    return instantiate_checked(dataset_kwargs(cfg))


#: the keys of a sampler node that describe the prior, in runs saved before the ``prior`` group
LEGACY_PRIOR_KEYS = ("distribution", "low", "high")


def prior_config(cfg: DictConfig) -> DictConfig:
    """The run's ``prior`` node; runs saved before the ``prior`` group kept it in ``sampler`` (its distribution
    keys), which training used only to draw z."""
    if cfg.get("prior"):
        return cfg.prior
    legacy = cfg.get("sampler") or {}
    node = {"_target_": "gancollapse.samplers.prior.PriorSampler"}
    node.update({k: legacy[k] for k in LEGACY_PRIOR_KEYS if k in legacy})
    return OmegaConf.create(node)
