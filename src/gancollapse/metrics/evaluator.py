"""The evaluator base: when to score the generator, and where the numbers go.

An evaluator scores ``n_samples`` generated samples from latents fixed by ``seed`` every ``every_n_steps``
generator steps (and/or every ``every_n_epochs`` epochs) and once more at the end of training. Each result
goes to the loggers (step = D steps), to ``pl_module.latest_eval`` (→ ``summary.json``), to
``trainer.callback_metrics``, to :attr:`Evaluator.history` and to every callback with an ``on_evaluation``
hook (the progress bar's evaluation line). With a ``monitor`` metric it also tracks
``best/<monitor>`` and ``best/<monitor>_step`` (G steps), which survive resumes, and lets monitoring
ModelCheckpoints (``best.ckpt``) see the new value while the weights are still the evaluated ones.

Subclasses implement :meth:`Evaluator.compute` (the metrics of the current generator, no side effects) and
optionally :meth:`Evaluator.after_evaluate` (files: frames, sample grids) and :meth:`Evaluator.finish`. The
image and toy evaluators compute the metrics of their ``metrics`` key (:mod:`gancollapse.metrics.metric_set`);
the leaderboard columns those declare go with the numbers (:meth:`Evaluator.record`) into ``summary.json``
(``metric_columns``), where :mod:`gancollapse.report` finds them.
Every evaluator accepts the common keys of :class:`Evaluator`; the config group ``conf/evaluator/`` selects
one per dataset.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from gancollapse.models.contract import Adversarial, Generative


class Evaluator(L.Callback):
    """Schedule and bookkeeping shared by the evaluators.

    Args:
        every_n_steps: evaluate every N generator steps (0 or null: off).
        every_n_epochs: evaluate every N epochs (0 or null: off).
        n_samples: generated samples scored per evaluation.
        seed: the fixed latents (and whatever else a subclass draws, e.g. real subsets).
        monitor: a metric this evaluator returns, tracked as ``best/<monitor>``; also the metric of
            ``best.ckpt`` (null: neither).
        monitor_mode: ``min`` or ``max``: which direction of ``monitor`` is better.
        samplers: post-hoc latent samplers scored beside the prior at every evaluation, by name (a config
            lists names, ``[prior, mhgan]``; the training entry point builds them with the run's prior and passes
            the objects): each metric again as ``<metric>@<sampler>``, from ``n_samples`` latents the sampler
            draws after fitting D's calibrator on ``n_calibration`` held-out real samples. ``prior`` is the
            plain metrics, always computed.
        n_calibration: held-out real samples for a sampler's calibrator.
    """

    #: prefix of the bookkeeping keys ``<namespace>/g_step`` and ``<namespace>/seconds``
    namespace = "eval"

    @property
    def requires(self) -> tuple[type, ...]:
        """What the model must offer (:mod:`gancollapse.models.contract`): samples; and a per-sample D when
        D-guided samplers are scored (``samplers``)."""
        return (Generative, Adversarial) if self.samplers else (Generative,)

    def __init__(self, every_n_steps: int | None = 1000, every_n_epochs: int | None = None, n_samples: int = 10_000,
                 seed: int = 1234, monitor: str | None = None, monitor_mode: str = "min",
                 samplers: Mapping[str, Any] | Sequence[str] | None = None, n_calibration: int = 2000) -> None:
        super().__init__()
        if samplers is not None and not isinstance(samplers, Mapping):
            names = [str(s) for s in samplers]
            if any(n != "prior" for n in names):
                raise ValueError(f"evaluator.samplers={names}: built samplers are needed (python -m gancollapse.train "
                                 "builds them from conf/sampler/); give a mapping name -> sampler")
            samplers = {}
        self.samplers: dict[str, Any] = {k: v for k, v in dict(samplers or {}).items() if k != "prior"}
        if int(n_calibration) < 4:
            raise ValueError(f"evaluator.n_calibration must be >= 4, got {n_calibration}")
        self.n_calibration = int(n_calibration)
        every_n_steps, every_n_epochs = int(every_n_steps or 0), int(every_n_epochs or 0)
        if every_n_steps < 0 or every_n_epochs < 0:
            raise ValueError(f"evaluator.every_n_steps / every_n_epochs must be >= 0 (0: off), got "
                             f"{every_n_steps} / {every_n_epochs}")
        if int(n_samples) < 1:
            raise ValueError(f"evaluator.n_samples must be >= 1, got {n_samples}")
        if monitor_mode not in ("min", "max"):
            raise ValueError(f"evaluator.monitor_mode must be min or max, got {monitor_mode!r}")
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.n_samples, self.seed = int(n_samples), int(seed)
        self.monitor, self.monitor_mode = (str(monitor) if monitor else None), monitor_mode
        self.best: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        #: leaderboard columns the metrics declared so far (key -> (label, format)), from ``self.metrics``
        self.metric_columns: dict[str, tuple[str, str]] = {}
        self._last_eval = -1
        self.run_dir: Path | None = None
        self.datamodule: Any = None

    # ------------------------------------------------------------------ to implement
    def compute(self, pl_module: L.LightningModule) -> dict[str, float]:
        """The metrics of the current generator (no logging, no files)."""
        raise NotImplementedError

    def after_evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float],
                       step: int) -> None:
        """Called on every rank after each evaluation, metrics already published (frames, grids)."""

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Called at the end of training, after the final evaluation (GIFs, final images)."""

    # ------------------------------------------------------------------ random streams
    @staticmethod
    @contextlib.contextmanager
    def isolated_rng(device: torch.device | str) -> Iterator[None]:
        """Run the block on a fork of the global CPU (and ``device``'s CUDA) RNG: whatever it draws or builds
        (a feature extractor's default init, real subsets, G's noise inputs) leaves training's stream as it was,
        so a run trains the same with or without evaluations."""
        device = torch.device(device)
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            yield

    @contextlib.contextmanager
    def seeded(self, device: torch.device | str) -> Iterator[None]:
        """An isolated RNG reset to ``seed``: generation inside it draws the same noise (stochastic G inputs,
        e.g. ALAE's noise) at every evaluation of the same weights, whatever was prepared or drawn before it —
        the end of training and a later evaluation of its checkpoint compute the same numbers."""
        with self.isolated_rng(device):
            torch.manual_seed(self.seed)
            yield

    # ------------------------------------------------------------------ evaluation
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run_dir = Path(trainer.default_root_dir)
        self.datamodule = trainer.datamodule

    def is_better(self, value: float, best: float) -> bool:
        return value < best if self.monitor_mode == "min" else value > best

    def _track_best(self, metrics: dict[str, float], step: int) -> None:
        if self.monitor is None:
            return
        value = metrics.get(self.monitor)
        key = f"best/{self.monitor}"
        if value is not None and not math.isnan(value) and (key not in self.best or self.is_better(value, self.best[key])):
            self.best = {key: float(value), f"{key}_step": float(step)}

    def measure(self, pl_module: L.LightningModule) -> dict[str, float]:
        """Score the generator now: :meth:`compute` plus the bookkeeping keys (seconds, G step, best so far),
        appended to :attr:`history`; nothing is published (:meth:`evaluate` does that)."""
        step = pl_module.g_steps
        self._last_eval = step
        t0 = time.perf_counter()
        with self.isolated_rng(getattr(pl_module, "device", "cpu")):
            metrics = {k: float(v) for k, v in self.compute(pl_module).items()}
            self.metric_columns.update(getattr(getattr(self, "metrics", None), "columns", None) or {})
            for name, sampler in self.samplers.items():
                metrics.update(self.sampler_metrics(pl_module, name, sampler))
        metrics[f"{self.namespace}/seconds"] = time.perf_counter() - t0
        metrics[f"{self.namespace}/g_step"] = float(step)
        self._track_best(metrics, step)
        metrics.update(self.best)
        self.history.append(dict(metrics))
        return metrics

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Score the generator now and publish the result; returns the published metrics."""
        step = pl_module.g_steps
        metrics = self.measure(pl_module)
        self.record(pl_module, metrics)
        pl_module.log_metrics(metrics)
        for k, v in metrics.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        for cb in getattr(trainer, "callbacks", ()):  # e.g. gancollapse.progress.RunProgress prints one line per evaluation
            if callable(getattr(cb, "on_evaluation", None)):
                cb.on_evaluation(trainer, pl_module, metrics, self.monitor)
        self.after_evaluate(trainer, pl_module, metrics, step)
        self._save_best(trainer)
        return metrics

    def record(self, pl_module: L.LightningModule, metrics: dict[str, float]) -> None:
        """Put ``metrics`` into the module's ``latest_eval`` and the columns the metrics declared into its
        ``metric_columns`` (both go to ``summary.json``)."""
        pl_module.latest_eval.update(metrics)
        if self.metric_columns:
            pl_module.metric_columns = {**(getattr(pl_module, "metric_columns", None) or {}), **self.metric_columns}

    def sampler_metrics(self, pl_module: L.LightningModule, name: str, sampler: Any) -> dict[str, float]:
        """:meth:`compute` on ``n_samples`` latents from ``sampler`` (fitted first, as ``gancollapse.sample`` does:
        D's calibrator on held-out real samples), keys suffixed ``@<name>``; the nets in eval mode meanwhile."""
        from gancollapse.data import held_out_real

        device = pl_module.device
        nets = (pl_module.generator, pl_module.discriminator)
        modes = [net.training for net in nets]
        for net in nets:
            net.eval()
        try:
            out: dict[str, float] = {}
            if hasattr(sampler, "fit"):
                real = held_out_real(self.datamodule, self.n_calibration, seed=20_000 + self.seed)
                with torch.enable_grad():
                    fit = sampler.fit(nets[0], nets[1], real, pl_module.z_dim, seed=self.seed) or {}
                out.update({f"{k}@{name}": float(v) for k, v in fit.items() if isinstance(v, (int, float))})
            kwargs = {"progress": False} if "progress" in inspect.signature(sampler.sample).parameters else {}
            z = sampler.sample(nets[0], nets[1], self.n_samples, pl_module.z_dim, device, seed=self.seed, **kwargs)
            saved = self.eval_z
            self.eval_z = z.detach().cpu()
            try:
                out.update({f"{k}@{name}": float(v) for k, v in self.compute(pl_module).items()})
            finally:
                self.eval_z = saved
            return out
        finally:
            for net, mode in zip(nets, modes, strict=True):
                net.train(mode)

    @staticmethod
    def _save_best(trainer: L.Trainer) -> None:
        """Let monitoring ModelCheckpoints consider the new value now, while the weights are the evaluated
        ones (by default they only look at epoch ends, after more training steps)."""
        for cb in trainer.checkpoint_callbacks:
            if (isinstance(cb, ModelCheckpoint) and cb.monitor and cb.monitor in trainer.callback_metrics
                    and hasattr(cb, "_save_topk_checkpoint")):  # private since Lightning 1.x; guarded
                cb._save_topk_checkpoint(trainer, cb._monitor_candidates(trainer))

    # ------------------------------------------------------------------ hooks
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        step = pl_module.g_steps
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_eval:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if self.every_n_epochs and epoch % self.every_n_epochs == 0 and pl_module.g_steps != self._last_eval:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # latest_eval is not checkpointed: a resume that adds no step must still report the final metrics
        stale = f"{self.namespace}/g_step" not in pl_module.latest_eval
        if pl_module.g_steps > 0 and (pl_module.g_steps != self._last_eval or stale):
            self.evaluate(trainer, pl_module)
        self.finish(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "last_eval": self._last_eval}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict.get("best", {}))
        self._last_eval = int(state_dict.get("last_eval", -1))
