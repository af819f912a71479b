"""Lightning callback: toy mode metrics every N generator steps, scatter frames and a training GIF."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch

from gancollapse.metrics.evaluator import Evaluator
from gancollapse.metrics.toy import check_rules, mode_stats
from gancollapse.plots import save_gif, scatter_frame


class ToyEvaluator(Evaluator):
    """Scores ``n_samples`` generated points (modes captured, HQ fraction, reverse KL; see
    :mod:`gancollapse.metrics.toy`) on the :class:`~gancollapse.metrics.evaluator.Evaluator` schedule.

    Frames (real points vs G on fixed noise) go to ``<run>/plots/frame_XXXXXX.png``; at the end they are
    assembled into ``plots/training.gif`` and the last one is copied to ``plots/final.png``.

    Args (besides the common ones of :class:`~gancollapse.metrics.evaluator.Evaluator`):
        threshold: HQ radius in mixture standard deviations (VEEGAN: 3).
        min_fraction: share of all samples a mode needs to count as captured (platform default 0.8%; the
            papers: 0).
        min_count: HQ samples a mode needs to count as captured (the papers: 1).
        n_plot: points per frame.
        frames: draw the frames and the GIF.
    """

    namespace = "toy"

    def __init__(self, every_n_steps: int | None = 500, every_n_epochs: int | None = None, n_samples: int = 10_000,
                 seed: int = 1234, monitor: str | None = None, monitor_mode: str = "min",
                 samplers: Mapping[str, Any] | Sequence[str] | None = None, n_calibration: int = 2000,
                 threshold: float = 3.0, min_fraction: float = 0.008, n_plot: int = 1000, frames: bool = True,
                 min_count: int = 1) -> None:
        super().__init__(every_n_steps, every_n_epochs, n_samples, seed, monitor, monitor_mode, samplers, n_calibration)
        check_rules(threshold, min_fraction, min_count)
        self.threshold, self.min_fraction, self.min_count = float(threshold), float(min_fraction), int(min_count)
        self.n_plot, self.frames = int(n_plot), bool(frames)

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
        return mode_stats(fake, dm.centers, dm.std, self.threshold, self.min_fraction, self.min_count).as_dict()

    def after_evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float],
                       step: int) -> None:
        if self.frames and trainer.is_global_zero and self.run_dir is not None:
            centers = self.datamodule.centers
            pts = pl_module.generate(self.n_plot, z=self.fixed_z).cpu()
            title = f"step {step}: {metrics['toy/modes']:.0f}/{len(centers)} modes, HQ {100 * metrics['toy/hq_fraction']:.1f}%"
            scatter_frame(self.real, pts, self.run_dir / "plots" / f"frame_{step:06d}.png", title, centers)

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.frames and trainer.is_global_zero and self.run_dir is not None:
            frames = sorted((self.run_dir / "plots").glob("frame_*.png"))
            if frames:
                save_gif(frames, self.run_dir / "plots" / "training.gif")
                (self.run_dir / "plots" / "final.png").write_bytes(frames[-1].read_bytes())
