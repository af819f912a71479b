"""DDLS (Che et al. 2020, "Your GAN is secretly an energy-based model"): Langevin dynamics in latent space.

Unadjusted Langevin on the latent energy E(z) = −log p0(z) − d(G(z)) (their Eq. 9 with the calibrated logit d):

    z_{t+1} = z_t − (ε/2)·∇_z E(z_t) + σ·n_t,    n_t ~ N(0, I),  σ = √ε by default,

for ``n_steps`` steps from z_0 ~ p0, keeping the last state. There is no MH correction (that is REP-GAN).
Defaults ε = 0.01, σ = 0.1, 1000 steps: our reading of the paper's CIFAR-10 setting (the paper text was not
readable in this session; see docs/REPRODUCING.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gancollapse.samplers.refined import RefinedSampler


def langevin_step(z: Tensor, grad_log_pi: Tensor, step_size: float, noise_std: float, noise: Tensor) -> Tensor:
    """z + (ε/2)∇log π(z) + σ·n (unadjusted Langevin)."""
    return z + 0.5 * step_size * grad_log_pi + noise_std * noise


class DDLSSampler(RefinedSampler):
    """Args (besides :class:`RefinedSampler`'s): ``n_steps`` (1000), ``step_size`` ε (0.01), ``noise_std``
    (null: √ε)."""

    name = "ddls"
    needs_grad = True

    def __init__(self, n_steps: int = 1000, step_size: float = 0.01, noise_std: float | None = None, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        if self.distribution != "normal":
            raise ValueError("sampler=ddls needs a differentiable prior: sampler.distribution must be 'normal' "
                             "(use sampler=mhgan or drs for a uniform prior)")
        if int(n_steps) < 1:
            raise ValueError(f"sampler.n_steps must be >= 1, got {n_steps}")
        if float(step_size) <= 0:
            raise ValueError(f"sampler.step_size must be > 0, got {step_size}")
        noise_std = math.sqrt(float(step_size)) if noise_std is None else float(noise_std)
        if noise_std < 0:
            raise ValueError(f"sampler.noise_std must be >= 0 (or null for sqrt(step_size)), got {noise_std}")
        self.n_steps, self.step_size, self.noise_std = int(n_steps), float(step_size), noise_std

    def sample_chains(self, generator: nn.Module, discriminator: nn.Module, m: int, z_dim: int,
                      device: torch.device, gen: torch.Generator) -> Tensor:
        z = self.prior(m, z_dim, device, gen)
        for _ in range(self.n_steps):
            _, _, grad = self.log_target_and_grad(generator, discriminator, z)
            z = langevin_step(z, grad, self.step_size, self.noise_std, torch.randn(z.shape, device=device, generator=gen))
        return z
