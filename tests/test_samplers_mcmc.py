"""MCMC latent samplers on a 1-D mixture with an exact density ratio, and WL-GAN's SAMC pieces.

Set-up: z ~ N(0, 1), G = identity, so p_g = N(0, 1); the data are ½N(−2, 0.5²) + ½N(2, 0.5²) and D's logit is the
exact log p_data/p_g. Then the latent EBM p0(z)·exp(d(z)) *is* the data density, and every sampler's output
should move from the prior towards it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gancollapse.samplers.ddls import DDLSSampler
from gancollapse.samplers.drs import DRSSampler
from gancollapse.samplers.mhgan import MHGANSampler
from gancollapse.samplers.prior import PriorSampler
from gancollapse.samplers.refined import gaussian_log_kernel
from gancollapse.samplers.repgan import REPGANSampler, l2mc_log_ratio, l2mc_mean
from gancollapse.samplers.wlgan import (
    WLGANSampler,
    adapt_eta,
    energy_bin,
    samc_gamma,
    samc_update,
    seed_log_ratio,
)

MEANS, STD = (-2.0, 2.0), 0.5


def log_data(x: torch.Tensor) -> torch.Tensor:
    comps = torch.stack([-0.5 * ((x - m) / STD) ** 2 - math.log(STD * math.sqrt(2 * math.pi)) for m in MEANS])
    return torch.logsumexp(comps, dim=0) - math.log(len(MEANS))


def log_prior(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * x ** 2 - 0.5 * math.log(2 * math.pi)


class ExactD(nn.Module):
    def __init__(self, zero: bool = False) -> None:
        super().__init__()
        self.zero = zero
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1)
        out = torch.zeros_like(x) if self.zero else log_data(x) - log_prior(x)
        return out.unsqueeze(1) + 0.0 * self.dummy


class IdentityG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + 0.0 * self.dummy


def target_samples(n: int, seed: int = 99) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    comp = torch.randint(2, (n,), generator=gen)
    return torch.tensor(MEANS)[comp] + STD * torch.randn(n, generator=gen)


def w1(a: torch.Tensor, b: torch.Tensor) -> float:
    """1-D Wasserstein-1 between equal-size samples (mean gap of the sorted values)."""
    return float((a.reshape(-1).sort().values - b.reshape(-1).sort().values).abs().mean())


N = 1000


def distance(sampler, seed: int = 0) -> float:  # noqa: ANN001
    z = sampler.sample(IdentityG(), ExactD(), N, 1, "cpu", seed=seed)
    assert z.shape == (N, 1) and torch.isfinite(z).all()
    return w1(z, target_samples(N))


def real_pool(sampler) -> None:  # noqa: ANN001
    sampler.fit(IdentityG(), ExactD(), target_samples(2000, seed=7)[:, None], z_dim=1, seed=0)


PRIOR_W1 = w1(PriorSampler().sample(None, None, N, 1, seed=0), target_samples(N))


@pytest.mark.parametrize("make, short, long", [
    (lambda k: MHGANSampler(chain_length=k, batch_size=N, calibrate=False), 1, 40),
    (lambda k: REPGANSampler(chain_length=k, tau=0.05, eta=None, batch_size=N, calibrate=False), 5, 150),
    (lambda k: DDLSSampler(n_steps=k, step_size=0.01, batch_size=N, calibrate=False), 5, 300),
    (lambda k: WLGANSampler(chain_length=k, batch_size=N, calibrate=False, warmup_steps=20, reweight=True), 5, 150),
], ids=["mhgan", "repgan", "ddls", "wlgan_reweighted"])
def test_mcmc_samplers_move_towards_target(make, short, long):  # noqa: ANN001
    """The W1 distance to the target falls from the prior to a short chain to a long chain."""
    s_short, s_long = make(short), make(long)
    real_pool(s_short)
    real_pool(s_long)
    d_short, d_long = distance(s_short), distance(s_long)
    assert d_long < d_short <= PRIOR_W1 + 0.05
    assert d_long < 0.5 * PRIOR_W1


class GaussianTargetD(nn.Module):
    """d(z) = log N(z; 1, 0.5²) − log N(z; 0, 1): with G = identity the latent target p0·e^d is N(1, 0.5²)."""

    MEAN, STD = 1.0, 0.5

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1)
        log_target = -0.5 * ((x - self.MEAN) / self.STD) ** 2 - math.log(self.STD * math.sqrt(2 * math.pi))
        return (log_target - log_prior(x)).unsqueeze(1) + 0.0 * self.dummy


def test_repgan_mh_correction_gives_the_target_variance_at_a_coarse_step(monkeypatch):  # noqa: ANN001
    """At step τ = s² the unadjusted Langevin chain on N(μ, s²) is stationary at variance s²/(1 − τ/4s²) = 4s²/3
    (its AR(1) recursion); REP-GAN's MH test must bring it back to s². Removing the MH step (every proposal
    accepted) must make this test fail, and does."""
    s2 = GaussianTargetD.STD ** 2

    def chains() -> tuple[torch.Tensor, float]:
        sampler = REPGANSampler(chain_length=60, tau=s2, eta=None, batch_size=4000, calibrate=False)
        z = sampler.sample(IdentityG(), GaussianTargetD(), 4000, 1, "cpu", seed=0).reshape(-1)
        return z, sampler.stats["sampler/acceptance"]

    z, acceptance = chains()
    assert 0.3 < acceptance < 0.99  # the test rejects some coarse proposals
    assert z.mean().item() == pytest.approx(GaussianTargetD.MEAN, abs=0.04)
    assert z.var().item() == pytest.approx(s2, rel=0.08)
    # without the correction: the unadjusted chain's variance, 4/3 of the target's
    monkeypatch.setattr("gancollapse.samplers.repgan.mh_accept", lambda log_r, gen: torch.ones_like(log_r, dtype=torch.bool))
    ula, _ = chains()
    assert ula.var().item() == pytest.approx(s2 / (1 - 0.25), rel=0.08)
    assert ula.var().item() > s2 * 1.2


def test_wlgan_final_states_move_from_prior_towards_flattened_target():
    """Without reweighting WL-GAN keeps the final states of chains that target the energy-flattened π_θ, so
    they leave the prior towards the data but stay farther than exact samplers (high-energy levels are
    over-visited by design); with θ frozen the same adaptive MALA converges."""
    flat = WLGANSampler(chain_length=150, batch_size=N, calibrate=False, warmup_steps=20)
    frozen = WLGANSampler(chain_length=150, batch_size=N, calibrate=False, warmup_steps=20, learn_target=False)
    d_flat, d_frozen = distance(flat), distance(frozen)
    assert d_flat < 0.8 * PRIOR_W1
    assert d_frozen < 0.2 * PRIOR_W1 < d_flat
    with pytest.raises(ValueError, match="shared_theta"):
        WLGANSampler(reweight=True, shared_theta=False)


def test_drs_moves_towards_target():
    s = DRSSampler(n_pilot=2000, gamma_percentile=None, batch_size=1000, calibrate=False)
    d = distance(s)
    assert d < 0.5 * PRIOR_W1
    assert 0.0 < s.stats["sampler/acceptance"] < 1.0
    assert s.stats["sampler/fallback"] == 0.0


def test_mhgan_acceptance_rate_matches_closed_form():
    """Independence sampler from the data distribution's stationary state: the mean acceptance rate over a
    chain equals E[min(1, w(x')/w(x))], w = p_data/p_g, estimated by Monte Carlo."""
    s = MHGANSampler(chain_length=200, batch_size=500, calibrate=False)
    real_pool(s)
    s.sample(IdentityG(), ExactD(), 500, 1, "cpu", seed=1)
    x = target_samples(20000, seed=5)
    xp = torch.randn(20000, generator=torch.Generator().manual_seed(6))
    lw = lambda v: log_data(v) - log_prior(v)  # noqa: E731
    expected = torch.clamp((lw(xp) - lw(x)).exp(), max=1.0).mean().item()
    assert s.stats["sampler/acceptance"] == pytest.approx(expected, abs=0.03)


def test_samplers_reproducible_and_any_batch_size():
    s = WLGANSampler(chain_length=6, batch_size=3, calibrate=False, warmup_steps=2, warmup_chains=4)
    a = s.sample(IdentityG(), ExactD(), 7, 1, "cpu", seed=11)
    b = s.sample(IdentityG(), ExactD(), 7, 1, "cpu", seed=11)
    c = s.sample(IdentityG(), ExactD(), 7, 1, "cpu", seed=12)
    assert a.shape == (7, 1) and torch.equal(a, b) and not torch.equal(a, c)
    for sampler in (MHGANSampler(chain_length=3, batch_size=4, calibrate=False),
                    REPGANSampler(chain_length=3, batch_size=4, calibrate=False),
                    DDLSSampler(n_steps=3, batch_size=4, calibrate=False),
                    DRSSampler(n_pilot=10, batch_size=4, calibrate=False)):
        z1 = sampler.sample(IdentityG(), ExactD(), 5, 1, "cpu", seed=3)
        z2 = sampler.sample(IdentityG(), ExactD(), 5, 1, "cpu", seed=3)
        assert z1.shape == (5, 1) and torch.equal(z1, z2)


def test_nets_left_in_their_mode():
    g, d = IdentityG(), ExactD()
    g.train()
    d.train()
    REPGANSampler(chain_length=2, batch_size=4, calibrate=False).sample(g, d, 3, 1, seed=0)
    assert g.training and d.training


# ---------------------------------------------------------------------------- WL-GAN pieces
def test_samc_gain_and_update_hand_values():
    assert samc_gamma(1, 400) == 1.0 and samc_gamma(400, 400) == 1.0 and samc_gamma(800, 400) == 0.5
    theta = torch.full((2, 4), 0.25, dtype=torch.float64)
    new = samc_update(theta, torch.tensor([1, 3]), gamma=0.5)
    assert torch.allclose(new[0], torch.tensor([0.125, 0.625, 0.125, 0.125], dtype=torch.float64))
    assert torch.allclose(new[1], torch.tensor([0.125, 0.125, 0.125, 0.625], dtype=torch.float64))
    shared = samc_update(torch.full((4,), 0.25, dtype=torch.float64), torch.tensor([1, 1]), gamma=0.5)
    assert torch.allclose(shared, torch.tensor([0.125, 0.625, 0.125, 0.125], dtype=torch.float64))


def test_energy_bins_clamp_to_the_ends():
    e = torch.tensor([-5.0, 0.0, 0.99, 1.0, 9.99, 10.0, 50.0, float("nan")])
    assert energy_bin(e, 0.0, 10.0, 10).tolist() == [0, 0, 0, 1, 9, 9, 9, 9]


def test_adapt_eta_bounded():
    eta = torch.tensor([0.3, 0.3, 0.3, 0.9, 0.02])
    rate = torch.tensor([0.9, 0.4, 0.1, 0.9, 0.0])
    out = adapt_eta(eta, rate, 0.45, 0.35, 0.6, 0.2, 0.01, 1.0)
    assert torch.allclose(out, torch.tensor([0.9, 0.3, 0.1, 1.0, 0.01]))
    unbounded = adapt_eta(eta, rate, 0.45, 0.35, 0.6, 0.2, None, None)
    assert unbounded[4].item() == pytest.approx(-0.18)


def test_exact_mh_ratio_matches_seed_only_at_initial_eta():
    """The seed's proposal term equals the exact Gaussian one while η = η₀, and not after η adapts."""
    gen = torch.Generator().manual_seed(0)
    z, grad_z = torch.randn(6, 3, generator=gen), torch.randn(6, 3, generator=gen)
    lp, lp_new = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    eta0, tau = 0.3, 0.1
    noise = torch.randn(6, 3, generator=gen)
    mean = l2mc_mean(z, grad_z, tau)
    z_new = mean + eta0 * noise
    mean_new = l2mc_mean(z_new, torch.randn(6, 3, generator=gen), tau)
    exact = l2mc_log_ratio(lp, lp_new, z, z_new, mean, mean_new, torch.full((6,), eta0))
    assert torch.allclose(exact, seed_log_ratio(lp, lp_new, z, noise, mean_new, eta0), atol=1e-5)
    eta = 0.9
    z_new = mean + eta * noise
    exact = l2mc_log_ratio(lp, lp_new, z, z_new, mean, mean_new, torch.full((6,), eta))
    assert not torch.allclose(exact, seed_log_ratio(lp, lp_new, z, noise, mean_new, eta0), atol=1e-2)
    # and the kernel is a proper Gaussian log density up to the 2π constant
    k = gaussian_log_kernel(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([2.0]))
    assert k.item() == pytest.approx(-2 / 8 - 2 * math.log(2.0))


def _kl_to_uniform(hits: torch.Tensor) -> float:
    p = hits.double() / hits.sum()
    p = p[p > 0]
    return float(math.log(len(hits)) + (p * p.log()).sum())


def test_wang_landau_flattens_the_energy_histogram():
    """Target learning on the toy energy E = z²/2 (D = 0): without θ the chain piles into the low-energy bins;
    SAMC's θ pushes the visit histogram over the M bins towards flat."""
    common = dict(chain_length=400, batch_size=200, calibrate=False, n_bins=10, t0=50, energy_range=[0.92, 4.92],
                  learn_proposal=False)
    flat = WLGANSampler(learn_target=True, **common)
    plain = WLGANSampler(learn_target=False, **common)
    for s in (flat, plain):
        s.sample(IdentityG(), ExactD(zero=True), 200, 1, "cpu", seed=0)
    kl_flat, kl_plain = _kl_to_uniform(flat.bin_hits), _kl_to_uniform(plain.bin_hits)
    assert kl_plain > 0.5
    assert kl_flat < 0.3 * kl_plain
    assert (flat.bin_hits > 0).all()


def test_wlgan_warmup_finds_the_energy_range_and_bad_config_fails():
    s = WLGANSampler(chain_length=2, batch_size=10, calibrate=False, warmup_steps=10, warmup_chains=50)
    s.sample(IdentityG(), ExactD(), 10, 1, "cpu", seed=0)
    lo, hi = s.bins
    # E = z²/2 + log√(2π) − d ≥ log√(2π) − max d; the range must lie around the typical energies.
    assert lo < hi and abs(lo) < 10 and abs(hi) < 20
    with pytest.raises(ValueError, match="energy_range"):
        WLGANSampler(energy_range=[3.0, 1.0])
    with pytest.raises(ValueError, match="batch_size"):
        WLGANSampler(batch_size=0)
    with pytest.raises(ValueError, match="distribution"):
        DDLSSampler(distribution="uniform")
