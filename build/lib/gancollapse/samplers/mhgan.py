"""MH-GAN (Turner et al. 2019): an independence Metropolis–Hastings sampler in data space.

Proposals are fresh generator samples x' = G(z'), z' ~ p0, so q(x') = p_g(x'). With a calibrated D,
D/(1−D) = p_data/p_g and the MH acceptance of x' from the state x_k (paper Eq. 4) is

    α = min(1, (1/D(x_k) − 1) / (1/D(x') − 1)) = min(1, exp(d(x') − d(x_k))),

d the calibrated logit. Each chain starts at a real held-out sample (to avoid burn-in, §3.2) and returns the
state after K proposals; a chain that never leaves the real sample is rerun from its first proposal, as the
authors' code does. We return the latent code of the kept proposal.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gancollapse.samplers.refined import RefinedSampler


def mh_log_acceptance(d_current: Tensor, d_proposal: Tensor) -> Tensor:
    """log α = min(0, d(x') − d(x_k)) for the independence sampler with a calibrated logit d (Eq. 4)."""
    return (d_proposal - d_current).clamp(max=0.0)


def mh_acceptance_from_probs(p_current: Tensor, p_proposal: Tensor) -> Tensor:
    """α = min(1, (1/D(x_k) − 1)/(1/D(x') − 1)) from D probabilities, the paper's form (for checks)."""
    return torch.clamp((1.0 / p_current - 1.0) / (1.0 / p_proposal - 1.0), max=1.0)


class MHGANSampler(RefinedSampler):
    """Args (besides :class:`RefinedSampler`'s): ``chain_length`` K proposals per output sample (640)."""

    name = "mhgan"

    def __init__(self, chain_length: int = 640, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        if int(chain_length) < 1:
            raise ValueError(f"sampler.chain_length must be >= 1, got {chain_length}")
        self.chain_length = int(chain_length)

    def sample_chains(self, generator: nn.Module, discriminator: nn.Module, m: int, z_dim: int,
                      device: torch.device, gen: torch.Generator) -> Tensor:
        with torch.no_grad():
            z_first = self.prior(m, z_dim, device, gen)
            d_first = self.score(generator, discriminator, z_first)
            # Main chain: starts at a real sample (no latent code); backup chain: starts at proposal 1.
            if self.real_logits is not None:
                idx = torch.randint(len(self.real_logits), (m,), device=device, generator=gen)
                d_main = self.calibrator.to(device)(self.real_logits.to(device)[idx])
            else:
                d_main = torch.full((m,), -torch.inf, device=device)  # leaves at once: the backup takes over
            z_main = z_first.clone()
            moved = torch.zeros(m, dtype=torch.bool, device=device)
            if self.real_logits is not None:
                log_u = torch.rand(m, device=device, generator=gen).log()
                acc = log_u <= mh_log_acceptance(d_main, d_first)
                d_main = torch.where(acc, d_first, d_main)
                moved |= acc
                accepted = acc.float()
            else:
                moved[:] = True
                d_main = d_first.clone()
                accepted = torch.ones(m, device=device)
            z_back, d_back = z_first.clone(), d_first.clone()
            for _ in range(self.chain_length - 1):
                z_new = self.prior(m, z_dim, device, gen)
                d_new = self.score(generator, discriminator, z_new)
                u = torch.rand(2, m, device=device, generator=gen).log()
                acc = u[0] <= mh_log_acceptance(d_main, d_new)
                z_main = torch.where(acc[:, None], z_new, z_main)
                d_main = torch.where(acc, d_new, d_main)
                moved |= acc
                accepted += acc.float()
                acc_b = u[1] <= mh_log_acceptance(d_back, d_new)
                z_back = torch.where(acc_b[:, None], z_new, z_back)
                d_back = torch.where(acc_b, d_new, d_back)
        self.record("acceptance", accepted / self.chain_length)
        self.record("restarted", (~moved).float())
        return torch.where(moved[:, None], z_main, z_back)
