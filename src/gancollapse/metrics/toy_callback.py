"""Lightning callback: toy mode metrics every N generator steps, scatter frames and a training GIF."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from gancollapse.metrics.toy import mode_stats
from gancollapse.plots import save_gif, scatter_frame


class ToyEvaluator(L.Callback):
    """Scores ``n_samples`` generated points every ``every_n_steps`` G steps and at the end of training.

    Frames (real points vs G on fixed noise) go to ``<run>/plots/frame_XXXXXX.png``; at the end they are
    assembled into ``plots/training.gif`` and the last one is copied to ``plots/final.png``.
    """

    def __init__(self, every_n_steps: int = 500, n_samples: int = 10_000, threshold: float = 3.0,
                 min_fraction: float = 0.008, n_plot: int = 1000, frames: bool = True, seed: int = 1234) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"dataset.evaluator.every_n_steps must be >= 1, got {every_n_steps}")
        if n_samples < 1:
            raise ValueError(f"dataset.evaluator.n_samples must be >= 1, got {n_samples}")
        self.every, self.n_samples, self.threshold, self.min_fraction = every_n_steps, n_samples, threshold, min_fraction
        self.n_plot, self.frames, self.seed = n_plot, frames, seed
        self.run_dir: Path | None = None
        self._last_eval = -1
        self.history: list[dict[str, float]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        self.centers, self.std = dm.centers, dm.std
        self.real = dm.sample(self.n_plot, seed=self.seed)
        self.run_dir = Path(trainer.default_root_dir)
        gen = torch.Generator().manual_seed(self.seed)
        self.fixed_z = pl_module.sampler.prior(self.n_plot, pl_module.z_dim, "cpu", gen)
        self.eval_z = pl_module.sampler.prior(self.n_samples, pl_module.z_dim, "cpu", gen)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        step = pl_module.g_steps
        self._last_eval = step
        fake = pl_module.generate(self.n_samples, z=self.eval_z).cpu()
        metrics = mode_stats(fake, self.centers, self.std, self.threshold, self.min_fraction).as_dict()
        metrics["toy/g_step"] = step
        pl_module.latest_eval.update(metrics)
        pl_module.log_metrics(metrics)
        for k, v in metrics.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        self.history.append(metrics)
        if self.frames and trainer.is_global_zero and self.run_dir is not None:
            pts = pl_module.generate(self.n_plot, z=self.fixed_z).cpu()
            title = f"step {step}: {metrics['toy/modes']:.0f}/{len(self.centers)} modes, HQ {100 * metrics['toy/hq_fraction']:.1f}%"
            scatter_frame(self.real, pts, self.run_dir / "plots" / f"frame_{step:06d}.png", title, self.centers)
        return metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        step = pl_module.g_steps
        if step > 0 and step % self.every == 0 and step != self._last_eval:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.g_steps != self._last_eval:
            self.evaluate(trainer, pl_module)
        if self.frames and trainer.is_global_zero and self.run_dir is not None:
            frames = sorted((self.run_dir / "plots").glob("frame_*.png"))
            if frames:
                save_gif(frames, self.run_dir / "plots" / "training.gif")
                (self.run_dir / "plots" / "final.png").write_bytes(frames[-1].read_bytes())
