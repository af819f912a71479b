"""Discriminator Rejection Sampling (Azadi et al. 2019).

Rejection sampling of x = G(z), z ~ p0, with the density ratio p_data/p_g = exp(d(x)) estimated by the
calibrated D logit d (their D̃). With D̃_M = max d over a pilot batch (updated whenever a larger value is
seen), the paper's Eq. 8 accepts x with probability σ(F̂(x)), where

    F(x) = D̃(x) − D̃_M − log(1 − exp(D̃(x) − D̃_M − ε)),    F̂(x) = F(x) − γ,

ε a small constant for numerical stability and γ the ``gamma_percentile``-th percentile of F on the pilot
batch (the shift that trades quality for acceptance rate; MH-GAN's reference implementation uses 95).
With γ = 0 (``gamma_percentile: null``) and ε → 0, σ(F) = exp(d − D̃_M): exact rejection sampling.
Proposals are drawn ``batch_size`` at a time until n are accepted; if ``max_proposals`` is reached first,
the remaining slots are filled with the highest-scoring rejected proposals ("cherry" fallback of the
reference code) and ``stats['sampler/fallback']`` says how many.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gancollapse.samplers.refined import RefinedSampler


def drs_log_acceptance(d: Tensor, d_max: Tensor | float, gamma: Tensor | float, eps: float = 1e-6) -> Tensor:
    """log σ(F(x) − γ), the log acceptance probability (DRS Eq. 8)."""
    return torch.nn.functional.logsigmoid(drs_f(d, d_max, eps) - gamma)


def drs_f(d: Tensor, d_max: Tensor | float, eps: float = 1e-6) -> Tensor:
    """F(x) = d − d_M − log(1 − exp(d − d_M − ε)) for d ≤ d_M (DRS Eq. 8 before the γ shift)."""
    delta = d - d_max
    return delta - torch.log(-torch.expm1(delta - eps))  # expm1 keeps 1 − e^{−ε} exact in float32


class DRSSampler(RefinedSampler):
    """Args (besides :class:`RefinedSampler`'s): ``n_pilot`` samples for D̃_M and γ (10,000 ≈ the reference
    code's 156 batches of 64), ``gamma_percentile`` (95), ``eps`` (1e-6), ``max_proposals`` per requested
    sample (a safety bound on the rejection loop)."""

    name = "drs"

    def __init__(self, n_pilot: int = 10_000, gamma_percentile: float | None = 95.0, eps: float = 1e-6,
                 max_proposals: int = 1000, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        if int(n_pilot) < 1:
            raise ValueError(f"sampler.n_pilot must be >= 1, got {n_pilot}")
        if gamma_percentile is not None and not 0.0 <= float(gamma_percentile) <= 100.0:
            raise ValueError(f"sampler.gamma_percentile must be in [0, 100] or null (γ = 0), got {gamma_percentile}")
        if float(eps) <= 0:
            raise ValueError(f"sampler.eps must be > 0, got {eps}")
        if int(max_proposals) < 1:
            raise ValueError(f"sampler.max_proposals must be >= 1, got {max_proposals}")
        self.n_pilot, self.eps = int(n_pilot), float(eps)
        self.gamma_percentile = None if gamma_percentile is None else float(gamma_percentile)
        self.max_proposals = int(max_proposals)

    def _scores(self, generator: nn.Module, discriminator: nn.Module, m: int, z_dim: int,
                device: torch.device, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        z = self.prior(m, z_dim, device, gen)
        return z, self.score(generator, discriminator, z)

    @torch.no_grad()
    def _run(self, generator: nn.Module, discriminator: nn.Module, n: int, z_dim: int,
             device: torch.device, gen: torch.Generator, bar) -> Tensor:  # noqa: ANN001
        pilot = torch.cat([self._scores(generator, discriminator, min(self.batch_size, self.n_pilot - i), z_dim, device, gen)[1]
                           for i in range(0, self.n_pilot, self.batch_size)])
        d_max = pilot.max()
        gamma = 0.0 if self.gamma_percentile is None else \
            torch.quantile(drs_f(pilot, d_max, self.eps).double().cpu(), self.gamma_percentile / 100).item()
        self.gamma, self.d_max_pilot = gamma, float(d_max)
        kept: list[Tensor] = []
        n_kept, proposed = 0, 0
        best_z, best_s = None, None
        while n_kept < n and proposed < self.max_proposals * n:
            z, d = self._scores(generator, discriminator, self.batch_size, z_dim, device, gen)
            proposed += len(z)
            d_max = torch.maximum(d_max, d.max())
            log_p = drs_log_acceptance(d, d_max, gamma, self.eps)
            acc = torch.rand(len(z), device=device, generator=gen).log() <= log_p
            self.record("acceptance", acc.float())
            take = z[acc][: n - n_kept]
            kept.append(take)
            n_kept += len(take)
            bar.advance(len(take))
            # Keep the best rejected proposals in case the loop hits its bound.
            rej_z, rej_s = z[~acc], log_p[~acc]
            best_z = rej_z if best_z is None else torch.cat([best_z, rej_z])
            best_s = rej_s if best_s is None else torch.cat([best_s, rej_s])
            if len(best_s) > n:
                top = best_s.topk(n).indices
                best_z, best_s = best_z[top], best_s[top]
        missing = n - n_kept
        self.record("fallback", float(missing) / n, count=1)
        if missing > 0:
            kept.append(best_z[best_s.topk(missing).indices])
            bar.advance(missing)
        return torch.cat(kept)
