"""The run config's types: a Hydra structured config for the top level, and the component nodes checked
against the signatures of the classes they build.

* :class:`TrainConfig` is registered in Hydra's ConfigStore as ``train_schema`` and is the first entry of
  ``conf/train.yaml``'s defaults, so composition itself type-checks the top level (``n_critic=abc`` is refused
  naming ``n_critic``) and refuses unknown keys (``max_g_step=10``). A key forced in with ``+`` (``+max_g_step=10``,
  Hydra's own hint for a typo) passes composition; :func:`check_types` refuses it.
* Every node with a ``_target_`` (dataset, model nets and module, loss, regularizers, prior, sampler, optimizers,
  evaluator, callbacks, trainer, loggers) is typed by its target's constructor: :func:`target_schema` turns the
  signature into a structured config (OmegaConf converts and checks each value against the annotation) and
  :func:`check_types` merges the node into it, so ``regularizer.r1.gamma=abc`` and ``+regularizer.r1.gama=5``
  are refused at start-up naming their key, before anything is built or written. The class is the one source
  of its keys and their types; no second copy is kept in a schema file.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass
class TrainConfig:
    """``conf/train.yaml``'s top level (documented there, key by key); the groups are typed by their targets."""

    seed: int = 0
    z_dim: int = 32
    n_critic: int = 1
    g_reuse_z: bool = True
    max_g_steps: Optional[int] = 2500  # noqa: UP045 (OmegaConf reads typing.Optional)
    log_every_n_steps: int = 50
    ckpt_every_n_steps: int = 1000
    ckpt_every_minutes: Optional[float] = 10.0  # noqa: UP045
    max_consecutive_skips: Optional[int] = 100  # noqa: UP045
    skip_nonfinite: bool = True
    accumulate_grad_batches: int = 1
    compile: Any = False  # true, false or a torch.compile mode
    channels_last: bool = False
    resume: Any = True  # true, false or force
    objective: Optional[str] = None  # noqa: UP045
    report: bool = False
    ensemble: int = 1
    updates: str = "alternating"  # alternating | simultaneous
    # the config groups (typed by their targets' signatures, check_types)
    dataset: Any = None
    model: Any = None
    loss: Any = None
    regularizer: Any = None
    prior: Any = None
    sampler: Any = None
    optim: Any = None
    evaluator: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = field(default_factory=dict)
    # a reproduction's cells and published numbers (conf/experiment/repro/): read by make reproduce, not by training
    repro: Any = None
    # written by gancollapse.train into the run's config.yaml
    choices: Any = None
    run_length: Any = None


ConfigStore.instance().store(name="train_schema", node=TrainConfig)

#: top-level keys with their defaults (what "not chosen" means for a model that does not read a key)
TOP_LEVEL_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                                      if f.default is not dataclasses.MISSING}


def closest(name: str, options: typing.Iterable[str]) -> str:
    """`` (did you mean max_g_steps?)`` when a close key exists, else ``""``."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.75)
    return f" (did you mean {match[0]}?)" if match else ""


# ---------------------------------------------------------------------------- component schemas
_SIMPLE = (int, float, bool, str)
#: keys of a dataset node that are not its datamodule's constructor's (gancollapse.build.dataset_kwargs drops
#: them): its name, and the evaluation keys that runs saved before the ``evaluator`` group still carry there
DATASET_META_KEYS = ("name", "evaluator", "monitor", "monitor_mode")


def _omegaconf_type(annotation: Any) -> Any:
    """The annotation as a type OmegaConf can check (int, float, bool, str, Optional of one, Literal → str),
    else Any (tensors, modules, unions, callables: checked by the class itself)."""
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return Any
    origin = typing.get_origin(annotation)
    if annotation in _SIMPLE:
        return annotation
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        return str if all(isinstance(v, str) for v in values) else Any
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(annotation)):
            inner = _omegaconf_type(args[0])
            return Optional[inner] if inner is not Any else Any  # noqa: UP045
        if all(a in (int, float) for a in args):
            return float
    return Any


def _parameters(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """The constructor parameters of ``cls``, following ``**kwargs`` up the MRO; and whether any key goes (a
    ``**kwargs`` that reaches no further signature)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else (cls,):
        init = klass.__init__ if inspect.isclass(klass) else klass
        if init is object.__init__:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            return params, True
        hints = _hints(init)
        var_kw = False
        for name, p in sig.parameters.items():
            if name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
                continue
            params.setdefault(name, p.replace(annotation=hints.get(name, p.annotation)))
        if not var_kw or not inspect.isclass(cls):
            return params, var_kw and not inspect.isclass(cls)
    return params, True


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 — unresolvable forward references: no types, keys still checked
        return {}


def target_schema(target: Any) -> tuple[Any, bool]:
    """A structured config (dataclass) of ``target``'s constructor, all fields optional; and whether it takes
    any key (``**kwargs``)."""
    params, open_keys = _parameters(target)
    fields = [(name, Optional[_omegaconf_type(p.annotation)], field(default=None))  # noqa: UP045
              for name, p in params.items()]
    name = f"{getattr(target, '__name__', 'Target')}Schema"
    return dataclasses.make_dataclass(name, fields), open_keys


def _import(target: str) -> Any:
    from hydra.utils import get_object

    return get_object(target)


def check_node(node: DictConfig | Mapping, path: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse (ValueError naming ``<path>.<key>``) a key ``node``'s target does not take, or a value it cannot
    convert to the constructor's annotated type. Nested targets are checked too: a node's value that is a node,
    and the nodes of a mapping value (``evaluator.metrics.<name>``)."""
    from gancollapse.runio import RunError

    target_name = str(node.get("_target_"))
    try:
        target = _import(target_name)
    except Exception as err:  # noqa: BLE001
        raise RunError(f"{path}._target_={target_name}: cannot be imported ({type(err).__name__})",
                       "fix the _target_ (a class or function importable from gancollapse, torch or lightning)") from None
    schema, open_keys = target_schema(target)
    names = {f.name for f in dataclasses.fields(schema)}
    values: dict[str, Any] = {}
    for key, value in node.items():
        key = str(key)
        if (key.startswith("_") and key.endswith("_")) or key in ignore:
            continue
        if key not in names:
            if open_keys:
                continue
            raise RunError(f"{path}.{key}: {target_name.rsplit('.', 1)[-1]} has no such key{closest(key, names)}",
                           f"remove it; {path} takes {', '.join(sorted(names)) or 'no keys'}")
        if isinstance(value, (DictConfig, Mapping)) and "_target_" in value:
            check_node(value, f"{path}.{key}")
            continue
        nested = list(_nodes(value, f"{path}.{key}")) if isinstance(value, (DictConfig, Mapping)) else []
        if nested:  # a mapping of components (evaluator.metrics: name -> node): each one checked as a node
            for sub_path, sub in nested:
                check_node(sub, sub_path)
            continue
        values[key] = value
    try:
        OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(values))
    except OmegaConfBaseException as err:
        key = getattr(err, "key", None) or getattr(err, "full_key", "") or ""
        value = values.get(str(key), "?")
        what = str(err).splitlines()[0]
        raise RunError(f"{path}.{key}={value}: {what}", f"give {path}.{key} a value of the type "
                       f"{target_name.rsplit('.', 1)[-1]} takes") from None


def _nodes(cfg: Any, path: str) -> typing.Iterator[tuple[str, Any]]:
    """(path, node) of every top-most node with a ``_target_`` below ``cfg``."""
    if isinstance(cfg, (DictConfig, Mapping)):
        if "_target_" in cfg:
            yield path, cfg
            return
        for key, value in cfg.items():
            yield from _nodes(value, f"{path}.{key}" if path else str(key))


def check_types(cfg: DictConfig) -> None:
    """Refuse top-level keys the run config does not have (added with ``+``) and every component key its class
    does not take or cannot convert (see the module docstring)."""
    from omegaconf.errors import InterpolationKeyError

    from gancollapse.runio import RunError

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationKeyError as err:  # e.g. regularizer.maem.code_dim=${model.discriminator.out_dim}
        missing = str(err).splitlines()[0]
        raise RunError(f"{err.full_key}: {missing}: this combination of config choices lacks a key it refers to",
                       f"set {err.full_key} explicitly, or choose options that define it") from None
    except OmegaConfBaseException:
        pass  # a resolver that cannot run yet (a data set's metadata): its component reports it
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in cfg:
        if key not in known:
            raise RunError(f"{key}={cfg.get(key)}: not a key of the run config{closest(str(key), known)}",
                           "remove it (conf/train.yaml lists the top-level keys)")
    for group in ("dataset", "model", "loss", "regularizer", "prior", "sampler", "optim", "evaluator", "trainer",
                  "logger", "callbacks"):
        try:
            resolved = OmegaConf.to_container(cfg.get(group), resolve=True) if cfg.get(group) is not None else None
        except OmegaConfBaseException:
            continue  # an interpolation that cannot resolve yet (a data set's metadata): its component reports it
        for path, node in _nodes(resolved, group):
            check_node(node, path, DATASET_META_KEYS if group == "dataset" else ())


__all__ = ["TOP_LEVEL_DEFAULTS", "TrainConfig", "check_node", "check_types", "closest", "target_schema"]
