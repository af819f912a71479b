"""The evaluator base: when to score the generator, and where the numbers go.

An evaluator scores ``n_samples`` generated samples from latents fixed by ``seed`` every ``every_n_steps``
generator steps (and/or every ``every_n_epochs`` epochs) and once more at the end of training. Each result
goes to the loggers (step = D steps), to ``pl_module.latest_eval`` (→ ``summary.json``), to
``trainer.callback_metrics``, to :attr:`Evaluator.history` and to every callback with an ``on_evaluation``
hook (the progress bar's evaluation line). With a ``monitor`` metric it also tracks
``best/<monitor>`` and ``best/<monitor>_step`` (G steps), which survive resumes, and lets monitoring
ModelCheckpoints (``best.ckpt``) see the new value while the weights are still the evaluated ones.

Subclasses implement :meth:`Evaluator.compute` (the metrics of the current generator, no side effects) and
optionally :meth:`Evaluator.after_evaluate` (files: frames, sample grids) and :meth:`Evaluator.finish`.
Every evaluator accepts the common keys of :class:`Evaluator`; the config group ``conf/evaluator/`` selects
one per dataset.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


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
    """

    #: prefix of the bookkeeping keys ``<namespace>/g_step`` and ``<namespace>/seconds``
    namespace = "eval"

    def __init__(self, every_n_steps: int | None = 1000, every_n_epochs: int | None = None, n_samples: int = 10_000,
                 seed: int = 1234, monitor: str | None = None, monitor_mode: str = "min") -> None:
        super().__init__()
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
        metrics = {k: float(v) for k, v in self.compute(pl_module).items()}
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
        pl_module.latest_eval.update(metrics)
        pl_module.log_metrics(metrics)
        for k, v in metrics.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        for cb in getattr(trainer, "callbacks", ()):  # e.g. gancollapse.progress.RunProgress prints one line per evaluation
            if callable(getattr(cb, "on_evaluation", None)):
                cb.on_evaluation(trainer, pl_module, metrics, self.monitor)
        self.after_evaluate(trainer, pl_module, metrics, step)
        self._save_best(trainer)
        return metrics

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
