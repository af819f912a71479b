"""Logger factories. The run directory is passed in by ``train.run`` as ``save_dir``."""

from __future__ import annotations

import csv
import os
import time

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only


def wandb_logger(save_dir: str, project: str | None = None, **kwargs) -> WandbLogger:
    """Weights & Biases, offline unless the user names a project (or sets ``WANDB_PROJECT``)."""
    project = project or os.environ.get("WANDB_PROJECT")
    offline = project is None
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    return WandbLogger(save_dir=save_dir, project=project or "gancollapse", offline=offline, **kwargs)


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; a resumed run must append to it instead."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(k for k in header if k != "step") + (["step"] if "step" in header else [])


class CSVLogger(_LightningCSVLogger):
    """CSV logger writing ``<save_dir>/metrics.csv`` that appends when the run directory is resumed.

    Lightning flushes when ``(step + 1) % flush_logs_every_n_steps == 0``, which never holds when steps
    are logged at multiples of the interval; here a flush happens once ``flush_every_s`` seconds have passed,
    so a killed run keeps its metrics up to the last flush.
    """

    def __init__(self, save_dir: str, name: str = "", version: str = "", flush_every_s: float = 10.0, **kwargs) -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, **kwargs)
        self.flush_every_s = float(flush_every_s)
        self._last_flush = time.monotonic()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.experiment.log_metrics(metrics, step)
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.save()
            self._last_flush = time.monotonic()

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
