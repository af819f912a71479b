"""What a model's training step uses from the run config, and what it applied.

A run records what it did, not what it was asked. Every model class declares, in :class:`ConfigUse`, the parts
of the composed config its step really reads: which losses, which regularizer hooks, which nets, which
top-level keys, whether D-guided samplers can score it. :func:`check_config` refuses at start-up — one line
naming the key and what the model accepts — any choice outside that declaration, so nothing the model ignores
reaches ``config.yaml``'s run, ``summary.json`` or a leaderboard row. After training, ``summary.json["applied"]``
is read from the objects the step called (:meth:`gancollapse.models.phased.PhasedModule.applied`), not copied
from the config.

A regularizer is accepted when every hook it overrides (:data:`REGULARIZER_HOOKS`) is one the model's step
calls, or when the model maps it onto its own term (MBRCE-AAE's R1 is ``model.module.r1_gamma``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from gancollapse.regularizers.base import Regularizer, constructor_params, plain
from gancollapse.runio import RunError
from gancollapse.schema import TOP_LEVEL_DEFAULTS


# ---------------------------------------------------------------------------- what a trained model offers
@runtime_checkable
class Generative(Protocol):
    """What every model offers callbacks, samplers, evaluators and the API (:func:`gancollapse.load`): its
    latent prior and samples, its step counts, and the record of what its step applied."""

    z_dim: int
    prior: Any  # a gancollapse.samplers.prior.PriorSampler
    max_g_steps: int | None

    @property
    def g_steps(self) -> int: ...

    @property
    def nonfinite_skips(self) -> dict[str, int]: ...

    @property
    def consecutive_skips(self) -> dict[str, int]: ...

    def sample_z(self, n: int, device: Any = None, generator: Any = None) -> Any: ...

    def generate(self, n: int, z: Any = None, batch_size: int = ...) -> Any: ...

    def applied(self) -> dict[str, Any]: ...


@runtime_checkable
class Adversarial(Protocol):
    """A generator and a per-sample discriminator: D-guided samplers (MH-GAN, DRS, WL-GAN...) and the collapse
    observatory's D codes need both."""

    generator: Any
    discriminator: Any


@runtime_checkable
class HessianProbe(Protocol):
    """The training losses with the parameters they are minimised over (the observatory's Hessian spectra)."""

    def hessian_losses(self, real: Any, z: Any) -> dict[str, tuple[Any, list[Any]]]: ...


@runtime_checkable
class Autoencoding(Protocol):
    """An encoder and a decoder (MBRCE-AAE / ALAE): reconstructions, interpolations, style mixing."""

    def encode(self, x: Any, lod: int | None = None, batch_size: int = ...) -> Any: ...

    def decode(self, styles: Any, lod: int | None = None, ema: bool | None = None, noise: bool = True,
               batch_size: int = ...) -> Any: ...

    def reconstruct(self, x: Any, lod: int | None = None, ema: bool | None = None, noise: bool = True) -> Any: ...


@runtime_checkable
class Progressive(Protocol):
    """A level-of-detail schedule (progressive growing): the current and the top lod."""

    lod: int
    max_lod: int


#: each capability in a few words, for the refusal line
CAPABILITIES = {Generative: "a latent prior, samples and an applied record",
                Adversarial: "a generator and a per-sample discriminator",
                HessianProbe: "its training losses for Hessian spectra",
                Autoencoding: "an encoder and a decoder", Progressive: "a level-of-detail schedule"}


def refuse_missing_capabilities(module: Any, callbacks: Mapping[str, Any]) -> None:
    """A callback whose ``requires`` (capabilities: the protocols above) the model lacks is refused in one line
    naming the callback, at start-up, instead of failing on its first use mid-run."""
    name = getattr(getattr(module, "config_use", None), "name", type(module).__name__)
    for key, callback in callbacks.items():
        for capability in getattr(callback, "requires", ()):
            if not isinstance(module, capability):
                raise RunError(f"{key}: needs a model with {capability.__name__} ({CAPABILITIES[capability]}); "
                               f"{name} has none",
                               f"drop {key} for this model")


#: the hooks of :class:`~gancollapse.regularizers.base.Regularizer` a step may call
REGULARIZER_HOOKS = ("d_terms", "g_terms", "apply_to_nets", "after_d_step", "filter_fake", "on_epoch_end",
                     "g_discriminator")
#: top-level keys that only some models' steps read; a model that does not read one refuses any value other
#: than the default (:data:`TOP_LEVEL_DEFAULTS`), which stands for "not chosen"
MODEL_KEYS = ("n_critic", "g_reuse_z", "accumulate_grad_batches", "compile", "channels_last", "ensemble", "updates")


@dataclass(frozen=True)
class ConfigUse:
    """The parts of a run config a model's training step reads.

    Args:
        name: the model's name in messages and in ``applied["model"]``.
        nets: the ``model.<net>`` nodes it builds (besides ``model.module``).
        losses: accepted ``loss._target_`` classes; ``None``: any GAN objective; ``()``: no loss node
            (``loss=none``: the model's own latent loss).
        loss_hint: what to choose instead, for the refusal line.
        hooks: the regularizer hooks its step calls.
        mapped: regularizer ``_target_`` → how the model applies it instead (its own term).
        keys: which of :data:`MODEL_KEYS` it reads.
        samplers: D-guided latent samplers can score it (it has a per-sample discriminator).
        d_features: its G and D steps hand D's penultimate features to regularizers that ask for them
            (:attr:`~gancollapse.regularizers.base.Regularizer.uses_d_features`, GDPP).
    """

    name: str
    nets: tuple[str, ...] = ("generator", "discriminator")
    losses: tuple[str, ...] | None = None
    loss_hint: str = ""
    hooks: frozenset[str] = frozenset(REGULARIZER_HOOKS)
    mapped: Mapping[str, str] = field(default_factory=dict)
    keys: frozenset[str] = frozenset(MODEL_KEYS)
    samplers: bool = True
    d_features: bool = True


def overridden_hooks(cls: type) -> set[str]:
    """The :data:`REGULARIZER_HOOKS` a regularizer class overrides (what it needs a step to call)."""
    return {h for h in REGULARIZER_HOOKS
            if getattr(cls, h, None) is not None and getattr(cls, h) is not getattr(Regularizer, h, None)}


def _choice(cfg: DictConfig, group: str) -> str | None:
    return (cfg.get("choices") or {}).get(group)


def _label(cfg: DictConfig, group: str, node: Any) -> str:
    """``loss=hinge`` when Hydra's choice is known, else the node's class (``loss=HingeLoss``)."""
    choice = _choice(cfg, group)
    if choice:
        return f"{group}={choice}"
    target = str((node or {}).get("_target_", "")) if isinstance(node, (Mapping, DictConfig)) else ""
    return f"{group}={target.rsplit('.', 1)[-1] or 'none'}"


def module_class(cfg: DictConfig) -> type:
    """The LightningModule class a config builds (``model.module._target_``, else the GAN)."""
    node = OmegaConf.select(cfg, "model.module")
    target = node.get("_target_") if node is not None else None
    return get_class(target or "gancollapse.models.gan.GANModule")


def check_config(cfg: DictConfig) -> None:
    """Refuse (RunError, one line naming the key) every config choice the model's step would not apply."""
    cls = module_class(cfg)
    use: ConfigUse = cls.config_use
    _check_loss(cfg, use)
    _check_regularizers(cfg, use)
    _check_nets(cfg, use)
    _check_keys(cfg, use)
    _check_optim(cfg, cls)
    _check_samplers(cfg, use)
    cls.check_config_extra(cfg)


def _check_loss(cfg: DictConfig, use: ConfigUse) -> None:
    node = cfg.get("loss") or None
    target = str(node.get("_target_", "")) if node is not None else ""
    if use.losses is None:
        if not target or not getattr(get_class(target), "gan_objective", True):
            raise RunError(f"{_label(cfg, 'loss', node)}: the {use.name} step needs a GAN objective (d_loss/g_loss "
                           "of D's outputs)", "choose one, e.g. loss=non_saturating (conf/loss/)")
        return
    if target in use.losses or (not use.losses and not target):
        return
    raise RunError(f"{_label(cfg, 'loss', node)}: {use.name} {'uses its own loss' if use.losses else 'has no GAN loss'}",
                   use.loss_hint or "drop the override")


def _check_regularizers(cfg: DictConfig, use: ConfigUse) -> None:
    for name, node in (cfg.get("regularizer") or {}).items():
        if node is None:
            continue
        target = str(node.get("_target_", ""))
        if target in use.mapped:
            continue
        cls = get_class(target)
        missing = overridden_hooks(cls) - use.hooks
        if getattr(cls, "uses_d_features", False) and not use.d_features:
            missing.add("D-features")
        if missing:
            accepted = sorted(t.rsplit(".", 1)[-1] for t in use.mapped)
            raise RunError(f"regularizer.{name} ({target.rsplit('.', 1)[-1]}) needs the {'/'.join(sorted(missing))} "
                           f"hook, which the {use.name} step does not call",
                           f"drop it{'; ' + use.name + ' applies ' + ', '.join(accepted) if accepted else ''}")


def _check_nets(cfg: DictConfig, use: ConfigUse) -> None:
    model = cfg.get("model") or {}
    for key, node in model.items():
        if key == "module" or not isinstance(node, DictConfig):
            continue
        if key not in use.nets:
            nets = ", ".join(f"model.{n}" for n in use.nets) or "model.module only"
            raise RunError(f"model.{key}: the {use.name} step builds {nets}; it would never train model.{key}",
                           f"drop model.{key} (use an experiment per model when sweeping models)")


def _check_keys(cfg: DictConfig, use: ConfigUse) -> None:
    for key in MODEL_KEYS:
        if key in use.keys or key not in cfg:
            continue
        value, default = cfg.get(key), TOP_LEVEL_DEFAULTS[key]
        if value != default and value is not None:
            raise RunError(f"{key}={value}: the {use.name} step does not use {key}",
                           f"drop the override ({key}={str(default).lower()} is the default)")


#: an optimizer argument and the words torch's own check uses for it ("Invalid learning rate: -1")
OPTIMIZER_ARG_WORDS = {"lr": ("learning rate", "lr"), "betas": ("beta",), "eps": ("epsilon", "eps"),
                       "weight_decay": ("weight_decay",), "momentum": ("momentum",), "alpha": ("alpha",)}


def _check_optim(cfg: DictConfig, cls: type) -> None:
    """Every ``optim.<name>`` is an optimizer the model steps (or ``scheduler``), and builds: torch's own
    argument checks (lr ≥ 0, betas in [0, 1), eps ≥ 0) run here on a dummy parameter, before any file exists."""
    names = tuple(cls.optimizer_names)
    for key, node in (cfg.get("optim") or {}).items():
        if node is None:
            continue
        if key == "scheduler":
            continue
        if key not in names:
            raise RunError(f"optim.{key}: the {cls.config_use.name} step has no {key} optimizer",
                           f"its optimizers are {', '.join(f'optim.{n}' for n in names)}")
        for arg in cls.optim_keys_refused:
            if arg in node:
                raise RunError(f"optim.{key}.{arg}={node[arg]}: {cls.optim_keys_refused[arg]}",
                               f"drop optim.{key}.{arg}")
        try:
            factory = instantiate(node)
            factory([torch.zeros(1, requires_grad=True)]) if callable(factory) else None
        except (ValueError, TypeError) as err:
            cause = err.__cause__ if err.__cause__ is not None else err
            message = " ".join(str(cause).split())
            named = [k for k, words in OPTIMIZER_ARG_WORDS.items() if k in node and any(w in message for w in words)]
            bad = ", ".join(f"optim.{key}.{k}={node[k]}" for k in named) or f"optim.{key}"
            raise RunError(f"{bad}: {message}", "fix the value (see torch.optim's docs)") from err


def _check_samplers(cfg: DictConfig, use: ConfigUse) -> None:
    node = cfg.get("sampler") or {}
    target = str(node.get("_target_", "gancollapse.samplers.prior.PriorSampler"))
    listed = [str(s) for s in (OmegaConf.select(cfg, "evaluator.samplers") or [])]
    from gancollapse.paths import CONF_DIR

    known = sorted(p.stem for p in (Path(CONF_DIR) / "sampler").glob("*.yaml"))
    unknown = [s for s in listed if s not in known and not s.endswith((".yaml", ".yml"))]
    if unknown:
        raise RunError(f"evaluator.samplers={listed}: no sampler {', '.join(unknown)}",
                       f"choose from {', '.join(known)} (conf/sampler/)")
    if listed and not use.samplers and any(s != "prior" for s in listed):
        raise RunError(f"evaluator.samplers={listed}: {use.name} has no per-sample discriminator for D-guided samplers",
                       "use evaluator.samplers=[prior] or drop it")
    if target.endswith("prior.PriorSampler"):
        return
    choice = _choice(cfg, "sampler") or target.rsplit(".", 1)[-1]
    if choice not in listed:
        raise RunError(f"sampler={choice}: training draws z from the prior ({_label(cfg, 'prior', cfg.get('prior'))}); "
                       "samplers are post-hoc",
                       f"score it at each evaluation with evaluator.samplers=[prior,{choice}], or after training with "
                       f"python -m gancollapse.sample <run dir> sampler={choice}")


# ---------------------------------------------------------------------------- the applied record
#: optimizer hyperparameters worth recording (those present in the param group)
OPTIMIZER_KEYS = ("lr", "betas", "eps", "weight_decay", "momentum", "alpha", "centered", "amsgrad", "fused")


def describe_optimizer(opt: Any) -> dict[str, Any]:
    """Type and hyperparameters of an optimizer as it steps (its first param group, plus NudgedAdam's nudge)."""
    inner = getattr(opt, "optimizer", opt)
    group = inner.param_groups[0] if inner.param_groups else {}
    out: dict[str, Any] = {"type": type(inner).__name__}
    out.update({k: plain(group[k]) for k in OPTIMIZER_KEYS if k in group and group[k] is not None})
    nudge = {k: plain(getattr(inner, k)) for k in ("k", "threshold", "every_n_steps", "project") if hasattr(inner, k)}
    if nudge:
        out["nudge"] = nudge
    return out


__all__ = ["Adversarial", "Autoencoding", "ConfigUse", "Generative", "HessianProbe", "Progressive",
           "refuse_missing_capabilities", "MODEL_KEYS", "REGULARIZER_HOOKS", "TOP_LEVEL_DEFAULTS", "check_config",
           "constructor_params", "describe_optimizer", "module_class", "overridden_hooks"]
