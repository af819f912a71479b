"""2D Gaussian-mixture toy data: the ring of 8 and the grid of 25."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gancollapse.data.order import SeededLoader, seeded_loader


def ring_centers(n_modes: int = 8, radius: float = 1.0) -> Tensor:
    """Mode means at angles 2πk/n on a circle (Mode_Collapse seed: 8 modes, radius 1)."""
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid_centers(side: int = 5, spacing: float = 2.0) -> Tensor:
    """Mode means on a side×side grid centred at 0 (PacGAN: {-4,-2,0,2,4}²)."""
    coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    xx, yy = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


def sample_mixture(centers: Tensor, std: float, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw n points from the equal-weight isotropic mixture; returns (points, mode index)."""
    labels = torch.randint(len(centers), (n,), generator=generator)
    noise = torch.randn(n, centers.shape[1], generator=generator) * std
    return centers[labels] + noise, labels


class BatchTensorDataset(Dataset):
    """A tensor dataset that indexes whole batches at once (``__getitems__``), so the DataLoader does one
    gather per batch instead of collating ``batch_size`` single rows."""

    def __init__(self, data: Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.data[i]

    def __getitems__(self, idx: list[int]) -> Tensor:
        return self.data[torch.as_tensor(idx)]


def _identity(batch: Tensor) -> Tensor:
    return batch


class ToyDataModule(L.LightningDataModule):
    """A fixed sample of ``n_samples`` points drawn once from a seed, shuffled every epoch.

    Args:
        kind: ``ring`` or ``grid``.
        n_modes: ring only — number of modes (8).
        radius: ring only — circle radius (1).
        side / spacing: grid only — modes per side (5) and spacing (2).
        std: per-mode standard deviation (0.05).
        n_samples: dataset size per epoch (seed: 10,000).
        batch_size: seed: 500.
    """

    dim = 2

    def __init__(
        self,
        kind: str = "ring",
        n_modes: int = 8,
        radius: float = 1.0,
        side: int = 5,
        spacing: float = 2.0,
        std: float = 0.05,
        n_samples: int = 10_000,
        batch_size: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if kind not in ("ring", "grid"):
            raise ValueError(f"dataset.kind must be 'ring' or 'grid', got {kind!r}")
        checks = {"std": std, "n_samples": n_samples, "batch_size": batch_size, "radius": radius,
                  "n_modes": n_modes, "side": side, "spacing": spacing}
        for key, val in checks.items():
            if not val > 0:
                raise ValueError(f"dataset.{key} must be > 0, got {val}")
        if batch_size > n_samples:
            raise ValueError(f"dataset.batch_size ({batch_size}) must be <= dataset.n_samples ({n_samples})")
        self.kind, self.std, self.n_samples, self.batch_size, self.seed = kind, float(std), int(n_samples), int(batch_size), int(seed)
        self.centers = ring_centers(n_modes, radius) if kind == "ring" else grid_centers(side, spacing)
        self.data: Tensor | None = None

    @property
    def n_modes(self) -> int:
        return len(self.centers)

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            gen = torch.Generator().manual_seed(self.seed)
            self.data, _ = sample_mixture(self.centers, self.std, self.n_samples, gen)

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """Fresh real samples (for evaluation and plots), independent of the training set."""
        return sample_mixture(self.centers, self.std, n, torch.Generator().manual_seed(seed + 10_007))[0]

    def train_dataloader(self) -> SeededLoader:
        self.setup()
        # The order of an epoch is a function of (seed, epoch); ranks take disjoint slices of it; a resumed run
        # skips the batches it already trained on (gancollapse.data.order).
        return seeded_loader(BatchTensorDataset(self.data), self.batch_size, self.seed, drop_last=True,
                             trainer=self.trainer, collate_fn=_identity, num_workers=0)
