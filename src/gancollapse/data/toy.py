"""2D Gaussian-mixture toy data: the ring of 8 and the grid of 25, laid out as each paper placed them.

Ring layouts (``angles`` × ``axes``):

* ``uniform`` + ``cos_sin`` (default): means r·(cos θₖ, sin θₖ), θₖ = 2πk/n — the Mode_Collapse seed and PacGAN
  (fjxmlzn/PacGAN ``synthetic_data_experiments/2DRing_GAN&PacGAN/config.py``, ``MEANS``).
* ``endpoint`` + ``sin_cos``: means r·(sin θₖ, cos θₖ), θ = ``np.linspace(0, 2π, n)`` — the Unrolled GAN reference
  notebook (poolio/unrolled_gan, ``sample_mog``) and GDPP (M-Elfeki/GDPP ``gdppgan_Synthetic.py``, ``sample_ring``).
  ``linspace`` includes both ends, so θ₀ = 0 and θₙ₋₁ = 2π put two of the n means on the same point (0, r): the
  mixture has n − 1 distinct locations, that one with twice the weight.

A training set is either a fixed sample of ``n_samples`` points drawn once (the seed; PacGAN's 100,000) or,
with ``fresh=true``, ``n_samples`` new points every epoch, so no point is seen twice (the Unrolled GAN notebook
and GDPP draw a new batch inside the graph at every step).
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gancollapse.data.order import SeededLoader, epoch_seed, identity_collate, seeded_loader

RING_ANGLES = ("uniform", "endpoint")
RING_AXES = ("cos_sin", "sin_cos")


def ring_centers(n_modes: int = 8, radius: float = 1.0, angles: str = "uniform", axes: str = "cos_sin") -> Tensor:
    """Mode means on a circle of ``radius``: angles 2πk/n (``uniform``) or ``linspace(0, 2π, n)`` (``endpoint``,
    first and last mean coincide), placed as (cos, sin) or (sin, cos) (see the module docstring)."""
    if angles not in RING_ANGLES:
        raise ValueError(f"dataset.angles={angles!r}: not a ring layout; use one of {', '.join(RING_ANGLES)}")
    if axes not in RING_AXES:
        raise ValueError(f"dataset.axes={axes!r}: not a ring layout; use one of {', '.join(RING_AXES)}")
    if angles == "uniform":
        theta = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    else:
        theta = torch.linspace(0, 2 * math.pi, n_modes, dtype=torch.float64)
    first, second = (theta.cos(), theta.sin()) if axes == "cos_sin" else (theta.sin(), theta.cos())
    return (radius * torch.stack([first, second], dim=1)).float()


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


class FreshMixtureDataset(Dataset):
    """``n`` points of the mixture drawn anew for every epoch from (seed, epoch), so no point is seen twice and
    a resumed epoch sees the same points again. The epoch is read from the loader's
    :class:`~gancollapse.data.order.SeededBatchSampler` (``sampler``, set once the loader exists)."""

    def __init__(self, centers: Tensor, std: float, n: int, seed: int) -> None:
        self.centers, self.std, self.n, self.seed = centers, float(std), int(n), int(seed)
        self.sampler = None
        self._epoch: int | None = None
        self._data: Tensor | None = None

    def __len__(self) -> int:
        return self.n

    def data_for_epoch(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            # a stream of its own: the permutation of the epoch comes from epoch_seed(seed, epoch)
            gen = torch.Generator().manual_seed(epoch_seed(self.seed ^ 0x5A3D_F4E5, epoch))
            self._data, self._epoch = sample_mixture(self.centers, self.std, self.n, gen)[0], epoch
        return self._data

    def __getitem__(self, i: int) -> Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, idx: list[int]) -> Tensor:
        epoch = self.sampler.epoch if self.sampler is not None else 0
        return self.data_for_epoch(epoch)[torch.as_tensor(idx)]


class ToyDataModule(L.LightningDataModule):
    """A fixed sample of ``n_samples`` points drawn once from a seed, shuffled every epoch (or, with ``fresh``,
    ``n_samples`` new points every epoch).

    Args:
        kind: ``ring`` or ``grid``.
        n_modes: ring only — number of modes (8).
        radius: ring only — circle radius (1).
        angles / axes: ring only — where the means sit (module docstring): ``uniform`` / ``cos_sin`` (default,
            PacGAN) or ``endpoint`` / ``sin_cos`` (Unrolled GAN notebook, GDPP).
        side / spacing: grid only — modes per side (5) and spacing (2).
        std: per-mode standard deviation (0.05).
        n_samples: dataset size per epoch (seed: 10,000).
        batch_size: seed: 500.
        fresh: draw ``n_samples`` new points every epoch instead of reusing one fixed sample.
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
        angles: str = "uniform",
        axes: str = "cos_sin",
        fresh: bool = False,
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
        if fresh not in (True, False):
            raise ValueError(f"dataset.fresh={fresh!r}: must be true (new points every epoch) or false (one fixed "
                             "sample)")
        if kind == "grid":
            for key, val, default in (("angles", angles, "uniform"), ("axes", axes, "cos_sin")):
                if val != default:
                    raise ValueError(f"dataset.{key}={val}: a ring-only key, but dataset.kind=grid; drop it or "
                                     "use dataset=ring")
        self.kind, self.std, self.n_samples, self.batch_size, self.seed = kind, float(std), int(n_samples), int(batch_size), int(seed)
        self.angles, self.axes, self.fresh = angles, axes, bool(fresh)
        self.centers = ring_centers(n_modes, radius, angles, axes) if kind == "ring" else grid_centers(side, spacing)
        self.data: Tensor | None = None

    @property
    def n_modes(self) -> int:
        return len(self.centers)

    def setup(self, stage: str | None = None) -> None:
        if self.data is None and not self.fresh:
            gen = torch.Generator().manual_seed(self.seed)
            self.data, _ = sample_mixture(self.centers, self.std, self.n_samples, gen)

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """Fresh real samples (for evaluation and plots), independent of the training set."""
        return sample_mixture(self.centers, self.std, n, torch.Generator().manual_seed(seed + 10_007))[0]

    def train_dataloader(self) -> SeededLoader:
        self.setup()
        # The order of an epoch is a function of (seed, epoch); ranks take disjoint slices of it; a resumed run
        # skips the batches it already trained on (gancollapse.data.order).
        dataset = (FreshMixtureDataset(self.centers, self.std, self.n_samples, self.seed) if self.fresh
                   else BatchTensorDataset(self.data))
        loader = seeded_loader(dataset, self.batch_size, self.seed, drop_last=True, trainer=self.trainer,
                               collate_fn=identity_collate, num_workers=0)
        if self.fresh:
            dataset.sampler = loader.sampler
        return loader
