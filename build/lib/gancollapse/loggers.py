"""Logger factories. The run directory is passed in by ``train.run`` as ``save_dir``."""

from __future__ import annotations

import csv
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

# Pictures the evaluators leave in the run dir, logged as W&B media at the end of training: key -> file.
MEDIA_FILES: dict[str, str] = {
    "media/final_scatter": "plots/final.png",     # toy evaluator
    "media/final_samples": "samples/final.png",   # image evaluator: the last sample grid
}
MEDIA_GLOBS: dict[str, str] = {
    "media/training": "plots/*.gif",              # toy evaluator: the training animation (as a video)
    "media/sample_grids": "samples/step_*.png",   # image evaluator: the grid at every evaluation
    "media/figures": "figures/*.png",             # AAE evaluator: samples, reconstructions, style mixing
}


def hydra_job() -> dict[str, Any]:
    """Hydra's view of the current job: ``multirun``, the job ``name``, the ``sweep_dir`` and the job's
    ``overrides`` (``override_dirname``) and ``num``; empty outside Hydra's main (tests calling ``train.run``)."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {"multirun": hc.mode == RunMode.MULTIRUN, "name": hc.job.name, "sweep_dir": str(hc.sweep.dir),
            "overrides": hc.job.override_dirname, "num": hc.job.get("num")}


def wandb_group(job: dict[str, Any]) -> str | None:
    """One W&B group per multirun: ``<job name>/<sweep dir>`` (every launcher runs the sweep's jobs with the same
    sweep dir, so local, joblib and SLURM jobs of one sweep land together); ``None`` for a single run."""
    return f"{job['name']}/{job['sweep_dir']}" if job.get("multirun") else None


def wandb_run_id(save_dir: str | os.PathLike) -> str:
    """A W&B run id fixed by the run dir, so a resumed or requeued run continues its W&B run (``resume=allow``)
    instead of starting a second one. W&B ids allow [a-z0-9]."""
    return hashlib.sha1(str(Path(save_dir).resolve()).encode()).hexdigest()[:16]


def wandb_logger(save_dir: str, project: str | None = None, group: str | None = "auto", name: str | None = "auto",
                 id: str | None = "auto", log_media: bool = True, **kwargs: Any) -> GanWandbLogger:  # noqa: A002
    """Weights & Biases, offline unless the user names a project (or sets ``WANDB_PROJECT``); offline runs are
    files under ``<run dir>/wandb/offline-run-*`` (``wandb sync`` uploads them later).

    ``group="auto"``: a multirun's jobs share one group (:func:`wandb_group`); ``name="auto"``: a multirun job is
    named by its overrides (``loss=hinge,seed=1``); ``id="auto"``: :func:`wandb_run_id`. The run's resolved config
    (``<run dir>/config.yaml``, which ``train.run`` writes before it builds the loggers) is the run's W&B config,
    i.e. its hyperparameters; ``log_media``: see :class:`GanWandbLogger`.
    """
    project = project or os.environ.get("WANDB_PROJECT")
    offline = project is None
    if offline:
        os.environ.setdefault("WANDB_MODE", "offline")
    job = hydra_job()
    if group == "auto":
        group = wandb_group(job)
    if name == "auto":
        name = (job.get("overrides") or str(job.get("num"))) if job.get("multirun") else None
    if id == "auto":
        id = wandb_run_id(save_dir)  # noqa: A001
    import wandb  # here, not at the top: 1.4 s of imports that runs without logger=wandb never need

    cfg_path = Path(save_dir) / "config.yaml"
    if "config" not in kwargs and cfg_path.is_file():
        kwargs["config"] = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
    if wandb.run is not None:
        # Jobs of a basic/optuna multirun share one process; a run left open would swallow the next job's logs.
        wandb.finish()
    return GanWandbLogger(save_dir=save_dir, project=project or "gancollapse", offline=offline, group=group,
                          name=name, id=id, log_media=log_media, **kwargs)


class GanWandbLogger(WandbLogger):
    """Lightning's W&B logger that, when training ends, logs the evaluators' pictures as media and closes the
    W&B run (so the next job of a multirun in the same process starts its own).

    Media (``log_media``): :data:`MEDIA_FILES` as images, and :data:`MEDIA_GLOBS`: GIFs as videos (the toy
    training animation), PNGs as a list of images captioned with their file name.
    """

    def __init__(self, *args: Any, log_media: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_media = bool(log_media)

    def media(self) -> dict[str, Any]:
        """The W&B media objects for the pictures present in the run dir (``save_dir``)."""
        import wandb  # see wandb_logger

        root = Path(self.save_dir or ".")
        out: dict[str, Any] = {}
        for key, rel in MEDIA_FILES.items():
            if (root / rel).is_file():
                out[key] = wandb.Image(str(root / rel), caption=rel)
        for key, pattern in MEDIA_GLOBS.items():
            files = sorted(root.glob(pattern))
            if not files:
                continue
            if pattern.endswith(".gif"):
                out[key] = wandb.Video(str(files[-1]))
            else:
                out[key] = [wandb.Image(str(f), caption=f.stem) for f in files]
        return out

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self._experiment is None:
            return
        if self.log_media:
            media = self.media()
            if media:
                self.experiment.log(media)
        # Lightning's SLURM requeue handler calls finalize("finished") and training goes on until SLURM stops
        # the job (then finalize("failed")); only the end of training may close the run.
        if status != "finished":
            self.experiment.finish()
            self._experiment = None


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
