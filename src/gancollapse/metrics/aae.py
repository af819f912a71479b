"""Evaluation of MBRCE-AAE / ALAE runs: generation at the top lod, reconstruction, class coverage, figures.

:class:`AAEEvaluator` is the platform's :class:`~gancollapse.metrics.image_callback.ImageEvaluator` (same
feature extractors, cached real statistics, FID/KID/PRDC and, with a classifier, IS/I-Variance), with:

- **Generation metrics at the top lod only.** Lower lods produce lower-resolution images than the real
  statistics, so evaluations (and with them ``best/fid`` and ``best.ckpt``) are skipped until the schedule
  reaches the top lod — ALAE and the MBRCE-AAE README start computing FID there too. Samples come from the EMA
  of F and G without truncation (``model.module.eval_ema``).
- **Reconstruction** of the held-out split at the module's lod, G(E(x)): MSE and per-image PSNR on [−1, 1]
  images (data range 2), SSIM (Wang et al., IEEE TIP 2004; torchmetrics, Gaussian window σ = 1.5 — narrowed
  as 1.5·side/16 below 16 px so the window fits), and the reconstruction FID: the FID between the
  reconstructions and the held-out originals, with the evaluator's feature extractor.
- **Class coverage** (labelled sets): the platform classifier (``gancollapse.classifier``; trained on the
  training split and cached when ``classifier: auto`` finds none) labels ``n_samples`` generated images;
  a class is covered when it receives at least ``coverage_min_fraction`` of its fair share. Also the
  classifier's accuracy on reconstructions (does G(E(x)) keep the digit?).
- **Figures** (:mod:`gancollapse.metrics.aae_figures`) into ``<run>/figures/`` at the end of training.

The end-of-training metrics go into ``summary.json`` (through ``pl_module.latest_eval``). CLI for a finished or
interrupted run: ``python -m gancollapse.evaluate_aae <run dir> [--which last|best|lod<k>] [--no-figures]``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gancollapse.aae.lod import blend_real_images
from gancollapse.classifier import default_classifier_path, predict_proba, save_classifier, train_classifier
from gancollapse.data.convert import to_float
from gancollapse.metrics.aae_figures import write_figures
from gancollapse.metrics.features import RealStats, extract_features
from gancollapse.metrics.fid import FID, fid_from_features
from gancollapse.metrics.image_callback import ImageEvaluator
from gancollapse.metrics.observatory import class_coverage
from gancollapse.models.contract import Autoencoding, Progressive
from gancollapse.runio import file_lock

log = logging.getLogger("gancollapse")



# ---------------------------------------------------------------------------- pure metrics
def ssim_sigma(side: int) -> float:
    """SSIM's Gaussian σ: 1.5 (an 11-px window) from 16 px up, 1.5·side/16 below so the window fits the image."""
    return 1.5 * min(1.0, side / 16.0)


def reconstruction_metrics(real: Tensor, recon: Tensor) -> dict[str, float]:
    """MSE, mean per-image PSNR (dB) and SSIM of ``recon`` against ``real``, both (N, C, S, S) in [−1, 1]."""
    if real.shape != recon.shape:
        raise ValueError(f"real and reconstructed images differ in shape: {tuple(real.shape)} vs {tuple(recon.shape)}")
    real, recon = real.float(), recon.float().clamp(-1.0, 1.0)
    psnr = peak_signal_noise_ratio(recon, real, data_range=2.0, dim=(1, 2, 3), reduction="elementwise_mean")
    ssim = structural_similarity_index_measure(recon, real, data_range=2.0, sigma=ssim_sigma(real.shape[-1]))
    return {"mse": float((recon - real).pow(2).mean()), "psnr": float(psnr), "ssim": float(ssim)}


def coverage_metrics(probs: Tensor, min_fraction: float = 0.1) -> dict[str, float]:
    """Classes covered by generated samples (≥ ``min_fraction`` of the fair share N/C) and the entropy (nats)
    of their predicted-class histogram (log C when uniform)."""
    _, covered, entropy = class_coverage(probs, min_fraction)
    return {"covered": float(covered), "entropy": entropy}


# ---------------------------------------------------------------------------- the evaluator
class AAEEvaluator(ImageEvaluator):
    """ImageEvaluator for progressive autoencoders (see the module docstring).

    Args (besides :class:`~gancollapse.metrics.image_callback.ImageEvaluator`'s):
        n_recon: held-out images reconstructed for the reconstruction metrics (null: all).
        coverage_min_fraction: fraction of the fair share a class needs to count as covered.
        classifier_epochs: epochs of the classifier trained when ``classifier: auto`` finds none.
        figures: write the figures into ``<run>/figures/`` at the end of training.
        figure_seed: seed of the sample latents and held-out images in the figures.
    """

    @property
    def requires(self) -> tuple[type, ...]:
        """Samples, an encoder and decoder (reconstructions), and the lod schedule (metrics at the top lod)."""
        return (*super().requires, Autoencoding, Progressive)

    def __init__(self, n_recon: int | None = None, coverage_min_fraction: float = 0.1, classifier_epochs: int = 5,
                 figures: bool = True, figure_seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if n_recon is not None and int(n_recon) < 2:
            raise ValueError(f"evaluator.n_recon must be >= 2 or null (all held-out images), got {n_recon}")
        if not 0.0 <= float(coverage_min_fraction) <= 1.0:
            raise ValueError(f"evaluator.coverage_min_fraction must be in [0, 1], got {coverage_min_fraction}")
        self.n_recon = None if n_recon is None else int(n_recon)
        self.coverage_min_fraction = float(coverage_min_fraction)
        self.classifier_epochs = int(classifier_epochs)
        self.figures, self.figure_seed = bool(figures), int(figure_seed)

    def attach(self, pl_module: L.LightningModule, datamodule: L.LightningDataModule, run_dir: Path | None) -> None:
        """What ``setup`` takes from the trainer, given directly (the CLI evaluates without a trainer)."""
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.datamodule = datamodule
        gen = torch.Generator().manual_seed(self.seed)
        self.eval_z = pl_module.sample_z(self.n_samples, "cpu", gen)
        self.grid_z = pl_module.sample_z(max(self.grid_size, 1), "cpu", gen)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.attach(pl_module, trainer.datamodule, Path(trainer.default_root_dir))

    @staticmethod
    def at_top(pl_module: L.LightningModule) -> bool:
        return int(pl_module.lod) == int(pl_module.max_lod)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        if not self.at_top(pl_module):
            return {}
        return super().evaluate(trainer, pl_module)

    def _classifier_file(self) -> Path | None:
        """``classifier: auto`` on a labelled set trains the platform classifier when none is cached."""
        dm = self.datamodule
        if self.classifier_path != "auto":
            return super()._classifier_file()
        if not getattr(dm, "num_classes", 0):
            return None  # an unlabelled set (faces): no IS, no coverage
        path = default_classifier_path(dm.describe(), self.cache_dir)
        with file_lock(path.with_name(f".{path.name}.lock")):  # DDP ranks: one trains, the others then load it
            if not path.is_file():
                self._train_classifier(dm, path)
        return path

    def _train_classifier(self, dm: L.LightningDataModule, path: Path) -> None:
        images, labels = dm.sample_uint8(len(dm), seed=self.seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.enable_grad():  # evaluations run under no_grad
            model, acc = train_classifier(images, labels, dm.num_classes, epochs=self.classifier_epochs,
                                          seed=self.seed, device=device)
        save_classifier(model.cpu(), path, {"dataset": dm.describe(), "val_accuracy": acc,
                                            "epochs": self.classifier_epochs})
        log.info("trained the %s classifier (held-out accuracy %.3f): %s", dm.describe(), acc, path)

    # ------------------------------------------------------------------ end-of-training metrics
    @torch.no_grad()
    def final_metrics(self, pl_module: L.LightningModule) -> dict[str, float]:
        """Reconstruction metrics on the held-out split at the module's lod and, at the top lod with a
        classifier, class coverage of generated samples and the class accuracy of reconstructions."""
        device = pl_module.device
        with self.isolated_rng(device):
            self._prepare(device)  # may build the extractor and classifier: before the seeded generation
            return self._final_metrics(pl_module, device)

    def _final_metrics(self, pl_module: L.LightningModule, device: torch.device) -> dict[str, float]:
        dm, lod = self.datamodule, int(pl_module.lod)
        images, labels = dm.held_out_uint8(self.n_recon, lod=lod, seed=self.seed)
        real = blend_real_images(to_float(images).to(device), lod, pl_module.blend)
        with self.seeded(device):
            recon = torch.cat([pl_module.reconstruct(b) for b in real.split(self.batch_size)]).float()
        m = {f"recon/{k}": v for k, v in reconstruction_metrics(real, recon).items()}
        real_feats = extract_features(self._extractor, real, self.batch_size, device)
        recon_feats = extract_features(self._extractor, recon, self.batch_size, device)
        # the backend of the generation FID (evaluator.metrics.fid.backend), so both FIDs are computed alike
        backend = next((f.backend for f in self.metrics.values() if isinstance(f, FID)), "eigh")
        m["recon/fid"] = fid_from_features(RealStats.from_features(real_feats), recon_feats, backend)
        m["recon/lod"] = float(lod)
        if self._classifier is not None and self.at_top(pl_module):
            with self.seeded(device):
                fake = torch.cat([pl_module.generate(z.shape[0], z=z.to(device)) for z in self.eval_z.split(self.batch_size)])
            m.update({f"class_coverage/{k}": v for k, v in
                      coverage_metrics(predict_proba(self._classifier, fake), self.coverage_min_fraction).items()})
            pred = predict_proba(self._classifier, recon).argmax(dim=1).cpu()
            m["recon/class_accuracy"] = float((pred == labels).float().mean())
        return m

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().finish(trainer, pl_module)
        if not trainer.is_global_zero or self.run_dir is None or pl_module.g_steps == 0:
            return
        extras = self.final_metrics(pl_module)
        pl_module.latest_eval.update(extras)
        pl_module.log_metrics(extras)
        if self.figures:
            write_figures(pl_module, self.datamodule, self.run_dir / "figures", seed=self.figure_seed)
