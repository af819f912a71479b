"""The latent prior p0(z): the sampler used for training and the default for generation."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class PriorSampler:
    """z ~ N(0, I) (``normal``) or U(low, high)^d (``uniform``, Dist-GAN's prior)."""

    def __init__(self, distribution: Literal["normal", "uniform"] = "normal", low: float = -1.0, high: float = 1.0):
        if distribution not in ("normal", "uniform"):
            raise ValueError(f"prior.distribution must be 'normal' or 'uniform', got {distribution!r}")
        if distribution == "uniform" and not low < high:
            raise ValueError(f"prior.low must be < prior.high, got {low} >= {high}")
        self.distribution, self.low, self.high = distribution, float(low), float(high)

    def prior(self, n: int, z_dim: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        if self.distribution == "normal":
            return torch.randn(n, z_dim, device=device, generator=generator)
        return torch.rand(n, z_dim, device=device, generator=generator) * (self.high - self.low) + self.low

    def describe(self) -> str:
        """``normal`` or ``uniform[low,high]`` (the run's applied record)."""
        return "normal" if self.distribution == "normal" else f"uniform[{self.low:g},{self.high:g}]"

    def log_prob(self, z: Tensor) -> Tensor:
        """log p0(z) up to a constant (used by energy-based samplers)."""
        if self.distribution == "normal":
            return -0.5 * z.pow(2).sum(dim=1)
        inside = ((z >= self.low) & (z <= self.high)).all(dim=1)
        return torch.where(inside, torch.zeros_like(z[:, 0]), torch.full_like(z[:, 0], -float("inf")))

    def sample(self, generator: nn.Module, discriminator: nn.Module | None, n: int, z_dim: int,
               device: torch.device | str = "cpu", seed: int | None = None) -> Tensor:
        """Return n latent codes. The prior ignores D; refined samplers override this."""
        gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        return self.prior(n, z_dim, device, gen)
