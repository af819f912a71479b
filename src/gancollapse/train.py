"""Entry point: ``python -m gancollapse.train [overrides]`` (Hydra main, ``conf/train.yaml``).

Rerunning with the same run directory (``hydra.run.dir=<dir>``) resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from gancollapse.build import build_datamodule, build_module
from gancollapse.build import instantiate_checked as instantiate
from gancollapse.callbacks import MaxGSteps, RunSummary
from gancollapse.paths import CONF_DIR

log = logging.getLogger("gancollapse")

# Lightning warnings that are expected in this setup and would only confuse: losses are logged by the module
# (not through Trainer.log_every_n_steps), checkpoints are resumed explicitly, and the tips are adverts.
for _pattern in (".*smaller than the logging interval.*", ".*no last checkpoint available.*", ".*LeafSpec.*",
                 ".*was called without a model.*", ".*does not have many workers.*", ".*weights_only.*",
                 ".*Using ModelCheckpoint with manual optimization.*"):
    warnings.filterwarnings("ignore", message=_pattern)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())


def validate(cfg: DictConfig) -> None:
    """Fail fast, naming the key, on values no run can use. Component constructors check their own."""
    for key in ("n_critic", "z_dim", "log_every_n_steps", "ckpt_every_n_steps"):
        val = cfg.get(key)
        if val is not None and int(val) < 1:
            raise ValueError(f"{key} must be >= 1, got {val}")
    if cfg.get("max_g_steps") is not None and int(cfg.max_g_steps) < 1:
        raise ValueError(f"max_g_steps must be >= 1 or null, got {cfg.max_g_steps}")
    if cfg.get("max_g_steps") is None and cfg.trainer.get("max_epochs", -1) in (None, -1) and cfg.trainer.get("max_steps", -1) in (None, -1):
        raise ValueError("the run has no length: set max_g_steps=<G steps> or trainer.max_epochs=<epochs>")


def build_callbacks(cfg: DictConfig, run_dir: Path, module: L.LightningModule) -> list[L.Callback]:
    """The run's callbacks: ``callbacks.*``, the ``evaluator`` group's evaluator (``evaluator=none``: none),
    ``last.ckpt``, ``best.ckpt`` on the evaluator's ``monitor``, the G-step limit and summary.json."""
    if cfg.dataset.get("evaluator") is not None or cfg.dataset.get("monitor") is not None:
        raise ValueError("dataset.evaluator / dataset.monitor are no longer read: evaluation is the `evaluator` "
                         "config group (conf/evaluator/). Move the overrides to evaluator.<key> (e.g. "
                         "evaluator.every_n_steps=500, evaluator.monitor=null); evaluator=none turns it off")
    callbacks: list[L.Callback] = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    evaluator = cfg.get("evaluator") or None  # evaluator=none composes to an empty node
    if evaluator is not None:
        callbacks.append(instantiate(evaluator))
    ckpt_dir = run_dir / "checkpoints"
    callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=0, save_last=True,
                                     every_n_train_steps=cfg.ckpt_every_n_steps, save_on_train_epoch_end=True,
                                     enable_version_counter=False))
    monitor = evaluator.get("monitor") if evaluator is not None else None
    if monitor:  # nothing to monitor without the evaluator that logs it
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor,
                                         mode=evaluator.get("monitor_mode", "min"), save_top_k=1,
                                         auto_insert_metric_name=False, enable_version_counter=False))
    callbacks.append(OnExceptionCheckpoint(dirpath=ckpt_dir, filename="last"))
    if cfg.get("max_g_steps"):
        callbacks.append(MaxGSteps(cfg.max_g_steps))
    callbacks.append(RunSummary(run_dir, cfg))
    return callbacks


def run(cfg: DictConfig, run_dir: Path | str) -> dict[str, Any]:
    """Train one run into ``run_dir``; returns the summary dict. Usable without Hydra's main (tests)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    loggers = [instantiate(lg, save_dir=str(run_dir)) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    # max_g_steps, when set, is the run's length: the epoch limit must not cut it short (with n_critic=5 an
    # epoch holds a fifth as many G steps).
    length = {"max_epochs": -1} if cfg.get("max_g_steps") else {}
    trainer: L.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir), **length,
                                     callbacks=build_callbacks(cfg, run_dir, module), logger=loggers or False)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    resume = str(ckpt) if cfg.get("resume", True) and ckpt.is_file() else None
    if resume:
        log.info("Resuming from %s", resume)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    # The periodic checkpoint may lag the end of training; the final state must always be resumable/loadable.
    trainer.save_checkpoint(ckpt, weights_only=False)  # full state: the run must stay resumable
    status = "interrupted: KeyboardInterrupt" if trainer.interrupted else "finished"
    if trainer.interrupted:
        log.warning("Interrupted after %d G steps; rerun with hydra.run.dir=%s to resume.", module.g_steps, run_dir)
    summary = RunSummary(run_dir, cfg).write(module, status) if trainer.is_global_zero else {}
    return summary


def resolve_default_choice(group: str, choice: str | None) -> str | None:
    """``model=default/<dataset>`` is an alias file; report the option it selects (``dcgan32``)."""
    if not choice or not choice.startswith("default/"):
        return choice
    alias = Path(CONF_DIR) / group / f"{choice}.yaml"
    for entry in OmegaConf.load(alias).get("defaults", []) if alias.is_file() else []:
        if isinstance(entry, str) and entry.startswith(f"/{group}/"):
            return entry[len(group) + 2 :].split("@")[0]
    return choice


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    # A job started in the background inherits SIGINT=ignored; Ctrl-C / kill -INT must still stop it cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.choices = {k: resolve_default_choice(k, v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    run_dir = Path(hc.runtime.output_dir)
    try:
        summary = run(cfg, run_dir)
    except SIGTERMException:
        log.warning("Stopped by SIGTERM; last.ckpt saved. Rerun with hydra.run.dir=%s to resume.", run_dir)
        sys.exit(143)
    if summary:
        print(f"\nRun directory: {run_dir}")
        print(f"  summary:  {run_dir / 'summary.json'}")
        print(f"  metrics:  {run_dir / 'metrics.csv'}")
        if (run_dir / "plots").is_dir():
            print(f"  plots:    {run_dir / 'plots'} (training.gif, final.png)")
        shown = {k: v for k, v in summary.items() if "/" in k}
        print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return None


if __name__ == "__main__":
    main()
