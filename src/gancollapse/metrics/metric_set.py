"""The metrics an evaluator computes, composed from its config: ``evaluator.metrics`` maps a name to a node.

::

    metrics:                                   # conf/evaluator/image.yaml
      fid: {_target_: gancollapse.metrics.fid.FID}
      kid: {_target_: gancollapse.metrics.kid.KID, subset_size: 1000}
      ...

Each metric has torchmetrics' shape: ``reset()`` (optional), ``update(**inputs)`` once per generated batch and
``compute()`` once per evaluation; a ``torchmetrics.Metric`` subclass works as it is. ``update`` declares what
it consumes by its parameter names, chosen among the evaluator's inputs (the image evaluator's
:data:`~gancollapse.metrics.image_callback.IMAGE_INPUTS`: ``images``, ``features``, ``probs``, ``classifier``,
``real``, ``seed``; the toy evaluator's :data:`~gancollapse.metrics.toy_callback.TOY_INPUTS`). The evaluator
computes each input once per batch, and only when some metric takes it, so FID, KID and PRDC share one feature
pass. A parameter with a default is passed when the evaluator has the input; a required one it cannot provide
refuses the metric when the evaluator is built, and one it lacks at an evaluation (``probs`` without a
classifier) skips the metric for that evaluation (one log line). Each ``update`` and ``compute`` runs on a fork of
the global RNG: a metric that draws random numbers changes neither G's noise nor another metric's numbers.

``compute()`` returns one number (a float or one-element tensor), published under the metric's name, or a mapping
``{key: number}`` published under its keys (KID: ``kid``, ``kid_std``). The leaderboard shows what a metric
declares: a one-number metric its name (header: its ``label`` attribute, else the name; format: its ``format``,
else ``{:.4g}``), a mapping metric the keys of its ``columns`` attribute (``{key: (label, format)}``; without one,
every key). The evaluator records these columns in ``summary.json`` (``metric_columns``), and
:mod:`gancollapse.report` reads them from there. ``real_features`` (an int attribute): how many real feature
vectors the metric needs kept beside the cached sums (KID's subset size, PRDC's ``n``).

A mapping (not a list) because Hydra composes mappings by key: a dataset's default adds ``metrics.modes``, an
override changes ``evaluator.metrics.kid.subsets=50`` or removes ``evaluator.metrics.kid=null`` (the convention of
``callbacks.<name>=null``), and ``+evaluator.metrics.<name>={_target_: ...}`` adds one, where a list would be
replaced whole or addressed by position. An evaluator given no ``metrics`` (null, or built in Python without
them) computes those of its config file (:func:`config_metrics`); ``metrics: {}`` computes none.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger("gancollapse")

#: format of a declared column whose metric names none
DEFAULT_FORMAT = "{:.4g}"


def update_parameters(metric: Any) -> tuple[list[str], list[str], bool]:
    """(parameters of ``metric.update`` by name, those without a default, whether it takes ``**kwargs``).
    ``inspect.signature`` follows torchmetrics' wrapper to the subclass's own ``update``."""
    names, required, open_kw = [], [], False
    for name, p in inspect.signature(metric.update).parameters.items():
        if p.kind is p.VAR_KEYWORD:
            open_kw = True
        elif p.kind is p.VAR_POSITIONAL:
            continue
        else:
            names.append(name)
            if p.default is p.empty:
                required.append(name)
    return names, required, open_kw


def as_number(value: Any, what: str) -> float:
    """A float from a Python number or a one-element tensor; else ValueError naming ``what``."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{what}: compute() gave a tensor of shape {tuple(value.shape)}; return one number or a "
                             "mapping {key: number}")
        return float(value.detach().cpu())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{what}: compute() gave {type(value).__name__}; return one number or a mapping {{key: number}}")


@contextlib.contextmanager
def own_rng(device: torch.device) -> Iterator[None]:
    """A fork of the global CPU (and ``device``'s CUDA) RNG: whatever a metric draws leaves G's noise and the other
    metrics' draws as they would be without it."""
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        yield


class MetricSet(Mapping):
    """An evaluator's metrics by name (``None`` entries, switched off in the config, dropped), checked against
    the ``inputs`` the evaluator provides (name → description), fed batch by batch and computed together.

    After :meth:`compute`: :attr:`columns` (key → (label, format) of every declared key it produced, in order)
    and :attr:`skipped` (name → why a metric produced nothing this time).
    """

    def __init__(self, metrics: Mapping[str, Any] | None, inputs: Mapping[str, str], path: str = "evaluator.metrics") -> None:
        self.inputs, self.path = dict(inputs), path
        self._metrics: dict[str, Any] = {}
        self._takes: dict[str, tuple[list[str], list[str]]] = {}
        for name, metric in (metrics or {}).items():
            if metric is None:  # evaluator.metrics.<name>=null
                continue
            name = str(name)
            if isinstance(metric, Mapping):  # e.g. +evaluator.metrics.<name>.<key>=... on no existing metric
                raise ValueError(f"{path}.{name}: a node without _target_; give it one, e.g. "
                                 f"+{path}.{name}={{_target_: gancollapse.metrics.fid.FID}}")
            for attr in ("update", "compute"):
                if not callable(getattr(metric, attr, None)):
                    raise ValueError(f"{path}.{name}={type(metric).__name__}: has no {attr}(); a metric needs "
                                     "update(**inputs) and compute() (torchmetrics' shape)")
            names, required, open_kw = update_parameters(metric)
            missing = [a for a in required if a not in self.inputs]
            if missing:
                raise ValueError(f"{path}.{name}={type(metric).__name__}: update() takes {missing[0]!r}, which this "
                                 f"evaluator does not provide; take some of {', '.join(self.inputs)}")
            takes = list(self.inputs) if open_kw else [a for a in names if a in self.inputs]
            self._metrics[name] = metric
            self._takes[name] = (takes, [a for a in required if a in self.inputs])
            if hasattr(metric, "sync_on_compute"):  # torchmetrics: every rank scores the same samples, no gather
                metric.sync_on_compute = False
                metric._to_sync = False
        self.columns: dict[str, tuple[str, str]] = {}
        self.skipped: dict[str, str] = {}
        self._told: set[str] = set()
        self._device = torch.device("cpu")

    # ------------------------------------------------------------------ Mapping
    def __getitem__(self, name: str) -> Any:
        return self._metrics[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._metrics)

    def __len__(self) -> int:
        return len(self._metrics)

    def __repr__(self) -> str:
        return f"MetricSet({', '.join(f'{k}={type(v).__name__}' for k, v in self._metrics.items())})"

    # ------------------------------------------------------------------ what the evaluator computes
    def needs(self) -> set[str]:
        """The inputs some metric takes (the evaluator computes only these)."""
        return {a for takes, _ in self._takes.values() for a in takes}

    def real_features(self) -> int:
        """Real feature vectors to keep beside the cached sums: the most any metric asks for (``real_features``)."""
        return max((int(getattr(m, "real_features", 0) or 0) for m in self._metrics.values()), default=0)

    # ------------------------------------------------------------------ one evaluation
    def start(self, device: torch.device | str) -> None:
        """Reset every metric for a new evaluation (and move torchmetrics' states to ``device``)."""
        self._device = torch.device(device)
        self.skipped = {}
        for metric in self._metrics.values():
            if callable(getattr(metric, "reset", None)):
                metric.reset()
            if isinstance(metric, torch.nn.Module):
                metric.to(self._device)

    def update(self, batch: Mapping[str, Any]) -> None:
        """Feed one batch's inputs to every metric that takes them; a metric lacking a required one (None or
        absent: ``probs`` without a classifier) is skipped for the rest of this evaluation."""
        for name, metric in self._metrics.items():
            if name in self.skipped:
                continue
            takes, required = self._takes[name]
            lacking = [a for a in required if batch.get(a) is None]
            if lacking:
                self.skipped[name] = f"no {lacking[0]} ({self.inputs[lacking[0]]})"
                continue
            with own_rng(self._device):
                metric.update(**{a: batch[a] for a in takes if batch.get(a) is not None})

    def compute(self) -> dict[str, float]:
        """Every fed metric's values (one number: under its name; a mapping: under its keys); records
        :attr:`columns` and says (log, INFO) which metrics were skipped and why, once per metric."""
        out: dict[str, float] = {}
        owner: dict[str, str] = {}
        self.columns = {}
        for name, metric in self._metrics.items():
            if name in self.skipped:
                continue
            with own_rng(self._device):
                result = metric.compute()
            what = f"{self.path}.{name}={type(metric).__name__}"
            if isinstance(result, Mapping):
                values = {str(k): as_number(v, what) for k, v in result.items()}
                declared = getattr(metric, "columns", None)
                shown = {k: (str(k), DEFAULT_FORMAT) for k in values} if declared is None else {
                    k: (str(lab), str(fmt)) for k, (lab, fmt) in declared.items() if k in values}
            else:
                values = {name: as_number(result, what)}
                shown = {name: (str(getattr(metric, "label", None) or name),
                                str(getattr(metric, "format", None) or DEFAULT_FORMAT))}
            if not values:
                self.skipped[name] = "it computed no value"
            for key, value in values.items():
                if key in out:
                    raise ValueError(f"{what}: its key {key!r} is also {owner[key]}'s; remove one of them (a metric "
                                     "returning one number is published under its name)")
                out[key], owner[key] = value, name
            self.columns.update(shown)
        new = {name: why for name, why in self.skipped.items() if name not in self._told}
        for why in dict.fromkeys(new.values()):  # one line per reason, the first time a metric is skipped
            names = ", ".join(f"{self.path}.{n}" for n, w in new.items() if w == why)
            log.info("%s skipped: %s", names, why)
        self._told.update(new)
        return out



def config_metrics(evaluator: str) -> dict[str, Any]:
    """The metrics of ``conf/evaluator/<evaluator>.yaml``, built: what an evaluator constructed in Python without
    ``metrics`` computes, so that it computes what ``evaluator=<evaluator>`` does (the file is their one source)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gancollapse.paths import CONF_DIR

    node = OmegaConf.load(f"{CONF_DIR}/evaluator/{evaluator}.yaml").get("metrics") or {}
    return {str(k): instantiate(v) for k, v in node.items() if v is not None}


class SplitProbsMetric:
    """Base of the metrics that score the generated images' class probabilities as mean ± std over ``splits``
    chunks (IS, I-Variance): subclasses set ``key`` (the published name; ``<key>_std`` goes with it) and
    ``score(probs, splits) -> (mean, std)``."""

    key: str = ""

    def __init__(self, splits: int = 10) -> None:
        if int(splits) < 1:
            raise ValueError(f"evaluator.metrics.{self.key}.splits={splits}: must be >= 1")
        self.splits = int(splits)
        self.reset()

    def reset(self) -> None:
        self._probs: list[Tensor] = []

    def update(self, probs: Tensor) -> None:
        self._probs.append(probs)

    def score(self, probs: Tensor, splits: int) -> tuple[float, float]:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        mean, std = self.score(torch.cat(self._probs), self.splits)
        return {self.key: mean, f"{self.key}_std": std}
