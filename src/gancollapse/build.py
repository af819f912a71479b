"""Turn a composed Hydra config into objects. Shared by ``train``, ``load`` and ``sample`` so a run is
rebuilt exactly as it was trained."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from gancollapse.instantiate import LEGACY_PRIOR_KEYS, instantiate_checked, prior_config
from gancollapse.models.gan import GANModule
from gancollapse.paths import CONF_DIR
from gancollapse.runio import RunError

NET_KEYS_RESERVED = ("module",)


def _tfrecord_meta(key: str, path: str, name: str) -> int:
    """``${tfrecord_meta:<img_size|channels>,<path>,<name>}`` (conf/dataset/tfrecord.yaml): read from the set's
    metadata. Registered here, where every entry point that resolves a composed config imports from."""
    from gancollapse.data.tfrecord_meta import meta_resolver  # lazy: only TFRecord runs read a set's metadata

    return meta_resolver(key, path, name)


OmegaConf.register_new_resolver("tfrecord_meta", _tfrecord_meta, replace=True)


def build_module(cfg: DictConfig) -> GANModule:
    """Instantiate nets, objective, regularizers, prior and the LightningModule that composes them.

    A module class with a ``from_config(cfg)`` classmethod builds itself from the whole config instead (models
    whose networks come from their own keys, e.g. MBRCE-AAE/ALAE)."""
    node = cfg.model.get("module")
    target = node.get("_target_") if node is not None else None
    cls = get_class(target) if target else GANModule
    if cfg.get("updates", "alternating") != "alternating" and "updates" not in inspect.signature(cls).parameters:
        raise ValueError(f"updates={cfg.updates}: {cls.__name__} has no simultaneous updates (GANModule has); use "
                         "updates=alternating")
    module = cls.from_config(cfg) if target and hasattr(cls, "from_config") else _build_gan(cfg, cls)
    module.max_g_steps = int(cfg.max_g_steps) if cfg.get("max_g_steps") else None  # the run's length, for schedules
    return module


def _build_gan(cfg: DictConfig, cls: type) -> GANModule:
    """A GAN-like module (GANModule, Dist-GAN) from its nets, loss, regularizers, prior and optimizers."""
    nets = {k: instantiate_checked(v) for k, v in cfg.model.items() if k not in NET_KEYS_RESERVED and isinstance(v, DictConfig) and "_target_" in v}
    if "generator" not in nets or "discriminator" not in nets:
        raise ValueError("model config must define 'generator' and 'discriminator' nodes with a _target_")
    regularizers = {name: instantiate_checked(node) for name, node in (cfg.get("regularizer") or {}).items() if node is not None}
    optim = {k: instantiate(v) for k, v in (cfg.get("optim") or {}).items() if v is not None}
    module_cfg = cfg.model.get("module") or OmegaConf.create({"_target_": "gancollapse.models.gan.GANModule"})
    # channels_last and updates are passed only when not the default, so modules without the switch keep building.
    extra: dict[str, Any] = {k: cfg[k] for k in ("n_critic", "g_reuse_z", "log_every_n_steps", "skip_nonfinite", "accumulate_grad_batches", "compile", "channels_last") if k in cfg and (k != "channels_last" or cfg[k])}
    if cfg.get("updates", "alternating") != "alternating":
        extra["updates"] = cfg.updates
    return instantiate_checked(
        module_cfg,
        **nets,
        objective=instantiate_checked(cfg.loss),
        regularizers=regularizers,
        prior=instantiate_checked(prior_config(cfg)),
        optim=optim,
        z_dim=cfg.z_dim,
        **extra,
        _recursive_=False,
    )


def find_checkpoint(run_dir: Path, which: str = "best") -> Path | None:
    """``best`` falls back to ``last``; returns None when the run has no checkpoint yet."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    order = ["best.ckpt", "last.ckpt"] if which == "best" else ["last.ckpt"]
    for name in order:
        if (ckpt_dir / name).is_file():
            return ckpt_dir / name
    return None


def with_run_prior(sampler_cfg: DictConfig, run_cfg: DictConfig) -> DictConfig:
    """``sampler_cfg`` with the run's training prior (``prior`` group; a run trained on a uniform prior must be
    sampled from it): its distribution keys replace the sampler's."""
    out = OmegaConf.create(OmegaConf.to_container(sampler_cfg))
    run_prior = prior_config(run_cfg)
    for key in LEGACY_PRIOR_KEYS:
        if key in run_prior:
            out[key] = run_prior[key]
    return out


def sampler_config(name: str, run_cfg: DictConfig, overrides: DictConfig | dict | None = None) -> DictConfig:
    """``conf/sampler/<name>.yaml`` (or a .yaml path) with the run's prior and ``overrides``."""
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else Path(CONF_DIR) / "sampler" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(CONF_DIR) / "sampler").glob("*.yaml"))
        raise RunError(f"sampler={name!r}: no config {path}", f"choose one of {', '.join(known)}, or give a .yaml path")
    return OmegaConf.merge(with_run_prior(OmegaConf.load(path), run_cfg), OmegaConf.create(overrides or {}))
