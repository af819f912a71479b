"""Logger factories. The run directory is passed in by ``train.run`` as ``save_dir``."""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


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
    """CSV logger writing ``<save_dir>/metrics.csv`` that appends when the run directory is resumed."""

    def __init__(self, save_dir: str, name: str = "", version: str = "", **kwargs) -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, **kwargs)

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
