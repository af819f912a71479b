"""Run-level callbacks: the end-of-run summary and the step limit counted in generator steps."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf


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


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else v
    return v


class RunSummary(L.Callback):
    """Writes ``summary.json``: one flat dict of the run's identity, step counts, wall time and the latest
    evaluation metrics. ``train.run`` writes it at the end; this callback writes it when training stops on
    an exception (Ctrl-C, SIGTERM), so an interrupted run still has one."""

    def __init__(self, run_dir: Path, cfg: DictConfig | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.identity = describe_run(cfg) if cfg is not None else {}

    def write(self, pl_module: L.LightningModule, status: str) -> dict[str, Any]:
        pl_module._accumulate_time()
        summary = {
            **self.identity,
            "status": status,
            "g_steps": pl_module.g_steps,
            "d_steps": pl_module.d_steps,
            "epoch": pl_module.current_epoch,
            "wall_seconds": round(pl_module.train_seconds, 3),
            "nonfinite_skips": sum(pl_module.nonfinite_skips.values()),
            **{k: _clean(v) for k, v in pl_module.latest_eval.items()},
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False))
        return summary

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero:
            self.write(pl_module, f"interrupted: {type(exception).__name__}")


def describe_run(cfg: DictConfig) -> dict[str, Any]:
    """The sweep-relevant identity of a run, from its config."""
    regs = list((cfg.get("regularizer") or {}).keys())
    choices = cfg.get("choices") or {}
    return {
        "dataset": choices.get("dataset") or OmegaConf.select(cfg, "dataset.name", default="?"),
        "model": choices.get("model", "?"),
        "loss": choices.get("loss") or type(cfg.loss).__name__,
        "regularizers": "+".join(regs) if regs else "none",
        "sampler": choices.get("sampler", "prior"),
        "seed": cfg.get("seed"),
        "n_critic": cfg.get("n_critic"),
    }
