"""Run-level callbacks: the step limit counted in generator steps, the guard that saves ``last.ckpt`` and
stops runs cleanly (signals, divergence), and the end-of-run summary."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig, OmegaConf

from gancollapse.models.contract import Generative
from gancollapse.runio import LAST, atomic_write_text, divergence_message, rng_state, set_rng_state


class MaxGSteps(L.Callback):
    """Stop after ``max_g_steps`` generator steps (Lightning's own ``max_steps`` counts every optimizer
    step of both nets under manual optimisation, which is not what papers report)."""

    def __init__(self, max_g_steps: int) -> None:
        if max_g_steps < 1:
            raise ValueError(f"max_g_steps must be >= 1, got {max_g_steps}")
        self.max_g_steps = int(max_g_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if pl_module.g_steps >= self.max_g_steps:
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        if pl_module.g_steps >= self.max_g_steps:
            trainer.should_stop = True

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        # A run resumed mid-epoch gets no on_train_epoch_start before its first batch.
        if pl_module.g_steps >= self.max_g_steps:
            trainer.should_stop = True


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else v
    return v


class StopTraining(Exception):
    """Ends ``fit`` at a step boundary: a stop signal or a diverged run.

    ``status`` goes to summary.json (``interrupted: SIGTERM``, ``diverged``), ``exit_code`` is the command's
    (130 for SIGINT, 143 for SIGTERM, 3 for divergence), ``saved`` says whether ``last.ckpt`` holds the state
    at the stop (False: a stop before the first step, or a second Ctrl-C: the last save stands).
    """

    def __init__(self, status: str, exit_code: int, message: str, saved: bool) -> None:
        super().__init__(message)
        self.status, self.exit_code, self.message, self.saved = status, int(exit_code), message, bool(saved)


def signal_stop(signum: int, saved: bool = False, why: str = "") -> StopTraining:
    """The stop a signal asks for; ``why`` completes the message (``stopped by SIGTERM<why>``)."""
    name = signal.Signals(signum).name
    return StopTraining(f"interrupted: {name}", 128 + int(signum), f"stopped by {name}{why}", saved)


def stop_before_training(signum: int, frame: FrameType | None) -> None:
    """Signal handler outside the training loop (setup, restore, the final save): stop at once; nothing is
    saved, the checkpoint on disk is the newest complete one."""
    raise signal_stop(signum, why=" outside the training loop (setup, restore or final save): nothing new saved")


def can_handle_signals() -> bool:
    """Python sets signal handlers only in the main thread (``train.run`` may be called from another)."""
    return threading.current_thread() is threading.main_thread()


class RunGuard(Checkpoint):
    """Saves ``checkpoints/last.ckpt`` and stops the run cleanly.

    * Saves every ``every_n_steps`` optimizer steps (``trainer.global_step``: D and G steps) and whenever
      ``every_minutes`` have passed since the last save (checked after every batch; one clock read). A save
      due at the last batch of an epoch waits for the end of the epoch (after the module's epoch-end hooks:
      schedulers, regularizer schedules), which a checkpoint taken before them would skip on resume.
    * SIGTERM and SIGINT (Ctrl-C) request a stop: at the end of the running batch (both nets updated) the state
      is saved and :class:`StopTraining` ends ``fit``. Before the first batch of the attempt has started —
      while the checkpoint is restored, the data set up — they stop at once and nothing is saved (the
      checkpoint on disk is still the newest state); a second Ctrl-C does the same.
    * Divergence: every ``check_every`` batches (one host sync) it reads the module's run of consecutive
      skipped non-finite steps; at ``max_consecutive_skips`` or more in any phase it saves and stops with
      status ``diverged``. The run stops at most ``check_every - 1`` batches after the K-th skip in a row.
    * Exact resume: its state in every checkpoint holds the torch, numpy, python and CUDA RNG states, restored
      in ``on_train_start`` (it is the last callback: after every other setup, before the first batch).
      Loggers are flushed before every checkpoint, so each metric row of a step a checkpoint covers is on disk.

    Under DDP the save, stop and divergence decisions are rank 0's, broadcast every ``check_every`` batches,
    and signals are left to Lightning (no save at the stop).
    """

    def __init__(self, ckpt_dir: str | Path, every_n_steps: int | None = None, every_minutes: float | None = None,
                 max_consecutive_skips: int | None = None, check_every: int = 50) -> None:
        for key, val in (("ckpt_every_n_steps", every_n_steps), ("ckpt_every_minutes", every_minutes),
                         ("max_consecutive_skips", max_consecutive_skips)):
            if val is not None and not val > 0:
                raise ValueError(f"{key} must be > 0 or null, got {val}")
        if int(check_every) < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.path = Path(ckpt_dir) / LAST
        self.every_n_steps = int(every_n_steps) if every_n_steps else None
        self.every_seconds = float(every_minutes) * 60 if every_minutes else None
        self.max_consecutive_skips = int(max_consecutive_skips) if max_consecutive_skips else None
        self.check_every = int(check_every)
        self.started = False  # the first batch of this attempt has begun: the restored state is in use
        self.requested: int | None = None  # a stop signal waiting for the end of the batch
        self._deferred: StopTraining | None | bool = False  # what waits for the end of the epoch
        self.stopped: StopTraining | None = None
        self._batches = 0
        self._saved_step = 0
        self._saved_time = time.monotonic()
        self._pending_rng: dict[str, Any] | None = None
        self._previous_handlers: dict[int, Any] = {}
        #: called once training starts, i.e. after the checkpoint was restored (a resumed run's config.yaml, the
        #: run's .hydra/ record: a restart that fails must leave the saved ones), on the global-zero rank
        self.on_start_hooks: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ signals
    def install_signal_handlers(self) -> None:
        """Route SIGTERM and SIGINT to this guard (call before ``fit``; undone by :meth:`restore_signal_handlers`)."""
        if not can_handle_signals():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}

    def _own_signals(self) -> None:
        """Take SIGTERM back from Lightning (``fit`` composes its handler with ours and would raise its own
        exception at the end of the batch, before an epoch-end save): stops are this guard's alone."""
        if signal.SIGTERM in self._previous_handlers:
            signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.started:  # nothing trained since the restore: stop now, there is nothing to save
            stop_before_training(signum, frame)
        if self.requested is not None:  # Ctrl-C pressed twice: stop now, the last save stands
            raise signal_stop(signum, why=" twice: stopped at once, last.ckpt holds the last save before")
        self.requested = signum

    # ------------------------------------------------------------------ saving
    def save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: the run must stay resumable
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()

    def _agree(self, trainer: L.Trainer, flag: bool) -> bool:
        """Rank 0's decision on every rank (a collective: call on all ranks at the same batch)."""
        return bool(trainer.strategy.broadcast(flag, src=0)) if trainer.world_size > 1 else flag

    def _diverged(self, pl_module: L.LightningModule) -> str | None:
        if self.max_consecutive_skips is None:
            return None
        members = getattr(pl_module, "member_divergence", None)
        if members is not None:  # an ensemble (models/ensemble.py): members stop one by one, the run when all have
            return members(self.max_consecutive_skips)
        return divergence_message(getattr(pl_module, "consecutive_skips", {}), getattr(pl_module, "nonfinite_skips", {}),
                                  getattr(pl_module, "g_steps", "?"), self.max_consecutive_skips)

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._own_signals()
        if trainer.is_global_zero:
            for hook in self.on_start_hooks:
                hook()
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.started = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._batches += 1
        distributed = trainer.world_size > 1
        check = self._batches % self.check_every == 0
        diverged = self._diverged(pl_module) if check else None
        if distributed and check:
            diverged = diverged if self._agree(trainer, diverged is not None) else None
        stop: StopTraining | None = None
        if self.requested is not None and not distributed:
            stop = signal_stop(self.requested, saved=True)
        elif diverged is not None:
            stop = StopTraining("diverged", 3, diverged, saved=True)
        due = self.every_n_steps is not None and trainer.global_step // self.every_n_steps > self._saved_step // self.every_n_steps
        late = self.every_seconds is not None and time.monotonic() - self._saved_time >= self.every_seconds
        if distributed:
            late = check and self._agree(trainer, late)
        if stop is None and (trainer.should_stop or not (due or late)):
            return  # (a step limit reached: the final save follows fit, after the epoch-end hooks)
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._deferred = stop if stop is not None else True
            return
        self._save_or_stop(trainer, stop)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs checkpoint callbacks' epoch end after the module's (schedulers stepped)
        stop = self._deferred if isinstance(self._deferred, StopTraining) else None
        if stop is None and self.requested is not None and trainer.world_size == 1:
            stop = signal_stop(self.requested, saved=True)  # a signal that came after the last batch
        if self._deferred is not False or stop is not None:
            self._deferred = False
            self._save_or_stop(trainer, stop)

    def _save_or_stop(self, trainer: L.Trainer, stop: StopTraining | None) -> None:
        self.save(trainer)
        if stop is not None:
            self.stopped = stop
            raise stop

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:  # the rows of every step this checkpoint covers reach the disk first
            logger.save()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")


class RunSummary:
    """Writes ``summary.json`` (atomically): one flat dict of the run's identity, status, step counts, wall
    time, skipped non-finite steps, the latest evaluation metrics with the leaderboard columns their metrics declared
    (``metric_columns``: key → [label, format]), and ``applied``: what the step really used
    (loss, regularizers with their weights, prior, optimizers, n_critic), read from the module's objects. The
    row labels ``loss``, ``regularizers``, ``prior`` and ``n_critic`` come from ``applied``, not the config."""

    def __init__(self, run_dir: Path, cfg: DictConfig | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.identity = describe_run(cfg) if cfg is not None else {}

    def write(self, pl_module: L.LightningModule | None, status: str, **extra: Any) -> dict[str, Any]:
        """The summary of ``pl_module``'s state with ``status`` (no module: identity and status only)."""
        summary: dict[str, Any] = {**self.identity, "status": status}
        if pl_module is not None:
            pl_module._accumulate_time()
            summary.update({
                "g_steps": pl_module.g_steps,
                "d_steps": pl_module.d_steps,
                "epoch": pl_module.current_epoch if pl_module._trainer is not None else 0,
                "wall_seconds": round(pl_module.train_seconds, 3),
                "nonfinite_skips": sum(pl_module.nonfinite_skips.values()),
                **{k: _clean(v) for k, v in pl_module.latest_eval.items()},
            })
            columns = getattr(pl_module, "metric_columns", None)  # set by the evaluator (Evaluator.record)
            if columns:
                summary["metric_columns"] = {k: list(v) for k, v in columns.items()}
            if isinstance(pl_module, Generative):
                applied = pl_module.applied()
                summary.update(applied_labels(applied))
                summary["applied"] = applied
        summary.update(extra)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=False))
        return summary


def applied_labels(applied: dict[str, Any]) -> dict[str, Any]:
    """The leaderboard's label columns of a run, from its applied record."""
    regs = applied.get("regularizers") or {}
    return {"model_type": applied.get("model"), "loss": applied.get("loss"),
            "regularizers": "+".join(regs) if regs else "none", "prior": applied.get("prior"),
            "n_critic": applied.get("n_critic")}


def describe_run(cfg: DictConfig) -> dict[str, Any]:
    """The identity of a run from its config: dataset, model choice, seed, and the loss and regularizers it asked
    for. A finished run's summary replaces the labels by what it applied (:func:`applied_labels`); since every
    choice a model would not apply is refused at start-up, the two agree for any run that started."""
    regs = list((cfg.get("regularizer") or {}).keys())
    choices = cfg.get("choices") or {}
    loss = choices.get("loss") or str(OmegaConf.select(cfg, "loss._target_", default="?")).rsplit(".", 1)[-1]
    return {
        "dataset": choices.get("dataset") or OmegaConf.select(cfg, "dataset.name", default="?"),
        "model": choices.get("model", "?"),
        "loss": loss,
        "regularizers": "+".join(regs) if regs else "none",
        "seed": cfg.get("seed"),
    }
