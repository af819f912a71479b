"""REP-GAN (Wang et al. 2021, "Reparameterized Sampling for GANs"): Metropolis-adjusted L2MC in latent space.

The chain targets the latent EBM π(z) ∝ p0(z)·exp(d(G(z))) (see :mod:`gancollapse.samplers.refined`). The
proposal is a Langevin step (L2MC)

    z' = μ(z) + η·ε,    μ(z) = z + (τ/2)·∇_z log π(z),    ε ~ N(0, I),

and the MH test accepts with probability min(1, r),

    log r = [d(z') − d(z)] + [log p0(z') − log p0(z)] + log q(z | z') − log q(z' | z),
    q(a | b) = N(a; μ(b), η² I).

With a fixed η the REP-GAN code's formula ``‖ε‖²/2 − ‖z − μ(z')‖²/(2η²)`` is exactly this ratio. Only the final
state of each chain is kept. Defaults are the REP-GAN code's (τ = 0.01, η = 0.1, 640 steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gancollapse.samplers.refined import RefinedSampler, gaussian_log_kernel


def l2mc_mean(z: Tensor, grad_log_pi: Tensor, tau: float | Tensor) -> Tensor:
    """μ(z) = z + (τ/2)·∇ log π(z), the Langevin drift (REP-GAN Eq. 10; WL-GAN's L2MC)."""
    return z + 0.5 * tau * grad_log_pi


def l2mc_log_ratio(log_pi_old: Tensor, log_pi_new: Tensor, z_old: Tensor, z_new: Tensor, mean_old: Tensor,
                   mean_new: Tensor, eta: Tensor) -> Tensor:
    """log of the MH ratio π(z')q(z|z') / (π(z)q(z'|z)) for the Gaussian L2MC proposal with per-chain
    noise scale ``eta`` (the same η in both proposal densities: the correction stays exact when η adapts)."""
    log_q_rev = gaussian_log_kernel(z_old, mean_new, eta)
    log_q_fwd = gaussian_log_kernel(z_new, mean_old, eta)
    return (log_pi_new - log_pi_old) + (log_q_rev - log_q_fwd)


def mh_accept(log_ratio: Tensor, gen: torch.Generator) -> Tensor:
    """Accept where log U ≤ log r (NaN, e.g. a proposal outside a bounded prior, rejects)."""
    u = torch.rand(log_ratio.shape, device=log_ratio.device, generator=gen)
    return u.log() <= torch.nan_to_num(log_ratio, nan=-math.inf)


def l2mc_chain(target: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]], z: Tensor, steps: int, tau: float,
               eta: float, gen: torch.Generator,
               visit: Callable[[Tensor, Tensor], None] | None = None) -> tuple[Tensor, Tensor]:
    """Run ``steps`` L2MC (MALA) moves with an exact MH test at a fixed step from ``z``.

    ``target(z) -> (log π(z), d(z), ∇log π(z))``; ``visit(z, d)`` sees the initial state and the state after
    every move (WL-GAN's warm-up records energies through it). Returns (final z, per-chain acceptance rate).
    """
    log_pi, d, grad = target(z)
    mean = l2mc_mean(z, grad, tau)
    eta_t = torch.full((len(z),), eta, device=z.device)
    accepted = torch.zeros(len(z), device=z.device)
    if visit is not None:
        visit(z, d)
    for _ in range(steps):
        z_new = mean + eta * torch.randn(z.shape, device=z.device, generator=gen)
        log_pi_new, d_new, grad_new = target(z_new)
        mean_new = l2mc_mean(z_new, grad_new, tau)
        acc = mh_accept(l2mc_log_ratio(log_pi, log_pi_new, z, z_new, mean, mean_new, eta_t), gen)
        z = torch.where(acc[:, None], z_new, z)
        mean = torch.where(acc[:, None], mean_new, mean)
        log_pi, d = torch.where(acc, log_pi_new, log_pi), torch.where(acc, d_new, d)
        accepted += acc.float()
        if visit is not None:
            visit(z, d)
    return z, accepted / max(steps, 1)


class REPGANSampler(RefinedSampler):
    """Args (besides :class:`RefinedSampler`'s): ``chain_length`` (640), ``tau`` step (0.01), ``eta`` noise
    scale (0.1; null: √τ, plain MALA)."""

    name = "repgan"
    needs_grad = True

    def __init__(self, chain_length: int = 640, tau: float = 0.01, eta: float | None = 0.1, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        if int(chain_length) < 1:
            raise ValueError(f"sampler.chain_length must be >= 1, got {chain_length}")
        if float(tau) <= 0:
            raise ValueError(f"sampler.tau must be > 0, got {tau}")
        eta = math.sqrt(float(tau)) if eta is None else float(eta)
        if eta <= 0:
            raise ValueError(f"sampler.eta must be > 0 (or null for sqrt(tau)), got {eta}")
        self.chain_length, self.tau, self.eta = int(chain_length), float(tau), eta

    def sample_chains(self, generator: nn.Module, discriminator: nn.Module, m: int, z_dim: int,
                      device: torch.device, gen: torch.Generator) -> Tensor:
        z = self.prior(m, z_dim, device, gen)
        z, acceptance = l2mc_chain(lambda x: self.log_target_and_grad(generator, discriminator, x), z,
                                   self.chain_length, self.tau, self.eta, gen)
        self.record("acceptance", acceptance)
        return z
