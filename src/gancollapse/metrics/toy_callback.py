"""Lightning callback: toy mode metrics every N generator steps, scatter frames and a training GIF."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch

from gancollapse.metrics.evaluator import Evaluator
from gancollapse.metrics.metric_set import MetricSet, config_metrics
from gancollapse.metrics.toy import check_rules
from gancollapse.plots import save_gif, scatter_frame

#: what a toy metric's ``update`` may take (:mod:`gancollapse.metrics.metric_set`)
TOY_INPUTS: dict[str, str] = {
    "points": "the n_samples generated points, (N, 2) on the CPU",
    "centers": "the mixture's mode centres, (K, 2)",
    "std": "the mixture's per-mode standard deviation",
    "threshold": "evaluator.threshold (HQ radius in standard deviations)",
    "min_fraction": "evaluator.min_fraction (share of the samples a captured mode holds)",
    "min_count": "evaluator.min_count (HQ samples a captured mode holds)",
    "seed": "evaluator.seed",
}


class ToyEvaluator(Evaluator):
    """Scores ``n_samples`` generated points with its metrics (by default modes captured, HQ fraction, reverse KL;
    see :mod:`gancollapse.metrics.toy`) on the :class:`~gancollapse.metrics.evaluator.Evaluator` schedule.

    Frames (real points vs G on fixed noise) go to ``<run>/plots/frame_XXXXXX.png``; at the end they are
    assembled into ``plots/training.gif`` and the last one is copied to ``plots/final.png``.

    Args (besides the common ones of :class:`~gancollapse.metrics.evaluator.Evaluator`):
        threshold: HQ radius in mixture standard deviations (VEEGAN: 3). The HQ / capture rules are the
            protocol every toy metric takes (:data:`TOY_INPUTS`), ``python -m gancollapse.score`` and ``sample`` too.
        min_fraction: share of all samples a mode needs to count as captured (platform default 0.8%; the
            papers: 0).
        min_count: HQ samples a mode needs to count as captured (the papers: 1).
        n_plot: points per frame.
        frames: draw the frames and the GIF.
        metrics: name → metric taking some of :data:`TOY_INPUTS` (:mod:`gancollapse.metrics.metric_set`; null
            entries are off); default: those of ``conf/evaluator/toy.yaml``.
    """

    namespace = "toy"
    #: the inputs this evaluator gives its metrics
    inputs = TOY_INPUTS

    def __init__(self, every_n_steps: int | None = 500, every_n_epochs: int | None = None, n_samples: int = 10_000,
                 seed: int = 1234, monitor: str | None = None, monitor_mode: str = "min",
                 samplers: Mapping[str, Any] | Sequence[str] | None = None, n_calibration: int = 2000,
                 threshold: float = 3.0, min_fraction: float = 0.008, n_plot: int = 1000, frames: bool = True,
                 min_count: int = 1, metrics: Mapping[str, Any] | None = None) -> None:
        super().__init__(every_n_steps, every_n_epochs, n_samples, seed, monitor, monitor_mode, samplers, n_calibration)
        check_rules(threshold, min_fraction, min_count)
        self.threshold, self.min_fraction, self.min_count = float(threshold), float(min_fraction), int(min_count)
        self.n_plot, self.frames = int(n_plot), bool(frames)
        self.metrics = MetricSet(config_metrics("toy") if metrics is None else metrics, self.inputs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        dm = self.datamodule
        self.real = dm.sample(self.n_plot, seed=self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.fixed_z = pl_module.sample_z(self.n_plot, "cpu", gen)
        self.eval_z = pl_module.sample_z(self.n_samples, "cpu", gen)

    def compute(self, pl_module: L.LightningModule) -> dict[str, float]:
        dm = self.datamodule
        fake = pl_module.generate(len(self.eval_z), z=self.eval_z).cpu()
        self.metrics.start("cpu")
        self.metrics.update({"points": fake, "centers": dm.centers, "std": dm.std, "threshold": self.threshold,
                             "min_fraction": self.min_fraction, "min_count": self.min_count, "seed": self.seed})
        return self.metrics.compute()

    def after_evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float],
                       step: int) -> None:
        if self.frames and trainer.is_global_zero and self.run_dir is not None:
            centers = self.datamodule.centers
            pts = pl_module.generate(self.n_plot, z=self.fixed_z).cpu()
            title = f"step {step}"
            if "toy/modes" in metrics and "toy/hq_fraction" in metrics:  # the mode stats metric may be switched off
                title += f": {metrics['toy/modes']:.0f}/{len(centers)} modes, HQ {100 * metrics['toy/hq_fraction']:.1f}%"
            scatter_frame(self.real, pts, self.run_dir / "plots" / f"frame_{step:06d}.png", title, centers)

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.frames and trainer.is_global_zero and self.run_dir is not None:
            frames = sorted((self.run_dir / "plots").glob("frame_*.png"))
            if frames:
                save_gif(frames, self.run_dir / "plots" / "training.gif")
                (self.run_dir / "plots" / "final.png").write_bytes(frames[-1].read_bytes())
