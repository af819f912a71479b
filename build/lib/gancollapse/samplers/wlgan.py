"""WL-GAN ("Learning where to sample in generative latent space"; code: zeyihou/collaborative-learn): collaborative latent sampling.

REP-GAN's Metropolis-adjusted L2MC chain on the latent EBM π(z) ∝ p0(z)·exp(d(G(z))) (see
:mod:`gancollapse.samplers.repgan`), with two modules learned on the fly from the chain's history:

* **Target learning** (the "Wang-Landau" / density-of-states part, in code Liang's SAMC): the energy
  E(z) = −log p0(z) − d(G(z)) is cut into M equal bins over [E_lo, E_hi] (values outside go to the end
  bins); J(E) is the bin index. The chain targets π_θ(z) ∝ p0(z)·exp(d(z) − θ_{J(E(z))}), so the MH log
  ratio gains θ_J(z) − θ_J(z'). After every MH step θ ← θ + γ_t (e_{J(z_t)} − 1/M), γ_t = t0 / max(t0, t)
  (θ starts at 1/M). This pushes the visit histogram over energy levels towards flat, so chains leave the
  deep basin they fell in and visit other modes (less mode dropping).
* **Proposal learning**: every ``adapt_every`` steps each chain's noise scale η is raised by ``eta_up``
  when its acceptance rate over the window exceeds ``accept_high`` and lowered by ``eta_down`` below
  ``accept_low``.

Fixes of the seed code (docs/REPRODUCING.md; ``seed_compat=true`` restores the seed's behaviour):
* the seed keeps η₀ in the reverse proposal density and drops the adapted scale from the forward one, so
  the chain loses detailed balance from step 30 on; we use the adapted η in both densities (exact MH, as the
  seed's BigGAN path does);
* the adapted η is bounded to [eta_min, eta_max] (the seed's can cross 0);
* the energy-bin range comes from a warm-up pass (quantiles of the energies a short θ-free chain visits
  from the prior) instead of the hard-coded [130, 210] (``energy_range`` fixes it by hand);
* the seed keeps one θ per chain, so with γ_t ≥ 0.625 over a 640-step chain each θ is noise and each
  chain is pushed to the lowest energy levels, which exist only in D's favourite modes (measured: mode
  collapse, docs/RESULTS.md); we pool the hit histogram of the batch's chains (population SAMC,
  ``shared_theta=true``; ``false`` is the seed's per-chain θ);
* the seed adapts only the noise scale and keeps the drift τ; with an exact correction that mismatch is
  rejected most of the time, so we adapt a MALA step (drift τ_c = η_c², ``couple_drift=true``).
The chains target the flattened π_θ, and the paper keeps their final states as they are (default);
``reweight=true`` resamples a batch's final states with SAMC's importance weights exp(θ_J) to target π.
Defaults are the paper's/seed's: 640 steps, τ = 0.1, η = √τ, 100 chains per batch, M = 50, t0 = 400,
windows of 30 steps with thresholds 0.45/0.35 and η steps +0.6/−0.2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gancollapse.samplers.refined import RefinedSampler, normal_log_density
from gancollapse.samplers.repgan import l2mc_chain, l2mc_log_ratio, l2mc_mean, mh_accept


def samc_gamma(t: int, t0: float) -> float:
    """SAMC gain γ_t = t0 / max(t0, t)."""
    return float(t0) / max(float(t0), float(t))


def energy_bin(energy: Tensor, lo: float, hi: float, n_bins: int) -> Tensor:
    """J(E): index of E's bin among n_bins equal bins over [lo, hi]; out-of-range values go to the end bins."""
    width = (hi - lo) / n_bins
    e = torch.nan_to_num(energy, nan=hi, posinf=hi, neginf=lo)
    return torch.floor((e - lo) / width).clamp(0, n_bins - 1).long()


def samc_update(theta: Tensor, bins: Tensor, gamma: float) -> Tensor:
    """θ ← θ + γ(e_J − 1/M). ``theta`` (B, M) is per chain; ``theta`` (M,) is shared and moves by the mean
    hit vector of the batch (population SAMC)."""
    n_bins = theta.shape[-1]
    hits = torch.nn.functional.one_hot(bins, n_bins).to(theta.dtype)
    if theta.ndim == 1:
        hits = hits.mean(dim=0)
    return theta + gamma * (hits - 1.0 / n_bins)


def theta_at(theta: Tensor, bins: Tensor) -> Tensor:
    return theta[bins] if theta.ndim == 1 else theta.gather(1, bins[:, None]).squeeze(1)


def adapt_eta(eta: Tensor, acc_rate: Tensor, high: float, low: float, up: float, down: float,
              eta_min: float | None, eta_max: float | None) -> Tensor:
    """Proposal learning: η += up where the window's acceptance rate > high, η −= down where < low, then
    clamp to [eta_min, eta_max] (None: unbounded, the seed)."""
    eta = eta + up * (acc_rate > high).to(eta.dtype) - down * (acc_rate < low).to(eta.dtype)
    if eta_min is not None or eta_max is not None:
        eta = eta.clamp(min=eta_min, max=eta_max)
    return eta


def seed_log_ratio(log_pi_old: Tensor, log_pi_new: Tensor, z_old: Tensor, noise: Tensor, mean_new: Tensor,
                   eta0: float) -> Tensor:
    """The WL-GAN DCGAN seed's MH log ratio: ‖ε‖²/2 − ‖z − μ(z')‖²/(2η₀²) as the proposal term, whatever
    the adapted noise scale (wrong once η ≠ η₀; kept for ``seed_compat``)."""
    fwd = 0.5 * noise.reshape(noise.shape[0], -1).pow(2).sum(dim=1)
    rev = (z_old - mean_new).reshape(z_old.shape[0], -1).pow(2).sum(dim=1) / (2 * eta0 ** 2)
    return (log_pi_new - log_pi_old) + fwd - rev


class WLGANSampler(RefinedSampler):
    """See the module docstring; every argument is a ``conf/sampler/wlgan.yaml`` key."""

    name = "wlgan"
    needs_grad = True

    def __init__(self, chain_length: int = 640, tau: float = 0.1, eta: float | None = None,
                 n_bins: int = 50, t0: float = 400.0, energy_range: Sequence[float] | None = None,
                 warmup_steps: int = 100, warmup_chains: int = 100, warmup_quantiles: Sequence[float] = (0.005, 0.995),
                 learn_target: bool = True, learn_proposal: bool = True, shared_theta: bool = True,
                 adapt_every: int = 30, adapt_until: int | None = None, accept_high: float = 0.45,
                 accept_low: float = 0.35, eta_up: float = 0.6, eta_down: float = 0.2,
                 eta_min: float = 0.01, eta_max: float = 1.0, couple_drift: bool = True, reweight: bool = False, seed_compat: bool = False, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        checks = {"chain_length": chain_length, "tau": tau, "n_bins": n_bins, "t0": t0, "adapt_every": adapt_every,
                  "warmup_chains": warmup_chains}
        for key, val in checks.items():
            if not float(val) > 0:
                raise ValueError(f"sampler.{key} must be > 0, got {val}")
        if int(warmup_steps) < 0:
            raise ValueError(f"sampler.warmup_steps must be >= 0, got {warmup_steps}")
        eta = math.sqrt(float(tau)) if eta is None else float(eta)
        if eta <= 0:
            raise ValueError(f"sampler.eta must be > 0 (or null for sqrt(tau)), got {eta}")
        if energy_range is not None:
            if len(energy_range) != 2 or not float(energy_range[0]) < float(energy_range[1]):
                raise ValueError(f"sampler.energy_range must be [lo, hi] with lo < hi, or null for a warm-up "
                                 f"pass, got {energy_range}")
        q = [float(x) for x in warmup_quantiles]
        if len(q) != 2 or not 0.0 <= q[0] < q[1] <= 1.0:
            raise ValueError(f"sampler.warmup_quantiles must be [q_lo, q_hi] with 0 <= q_lo < q_hi <= 1, got {warmup_quantiles}")
        if not float(accept_low) <= float(accept_high):
            raise ValueError(f"sampler.accept_low ({accept_low}) must be <= sampler.accept_high ({accept_high})")
        if not 0 < float(eta_min) < float(eta_max):
            raise ValueError(f"sampler.eta_min/eta_max must satisfy 0 < eta_min < eta_max, got {eta_min}, {eta_max}")
        self.chain_length, self.tau, self.eta0 = int(chain_length), float(tau), eta
        self.n_bins, self.t0 = int(n_bins), float(t0)
        self.energy_range = None if energy_range is None else (float(energy_range[0]), float(energy_range[1]))
        self.warmup_steps, self.warmup_chains, self.warmup_quantiles = int(warmup_steps), int(warmup_chains), q
        self.learn_target, self.learn_proposal, self.shared_theta = bool(learn_target), bool(learn_proposal), bool(shared_theta)
        self.adapt_every = int(adapt_every)
        self.adapt_until = None if adapt_until is None else int(adapt_until)
        self.accept_high, self.accept_low = float(accept_high), float(accept_low)
        self.eta_up, self.eta_down = float(eta_up), float(eta_down)
        self.eta_min, self.eta_max = float(eta_min), float(eta_max)
        self.couple_drift, self.seed_compat = bool(couple_drift), bool(seed_compat)
        if reweight and not (shared_theta and not seed_compat):
            raise ValueError("sampler.reweight=true needs sampler.shared_theta=true (per-chain θ weights are not "
                             "comparable across chains) and seed_compat=false")
        self.reweight = bool(reweight)
        self.bins: tuple[float, float] | None = None
        self.bin_hits: Tensor | None = None

    # ------------------------------------------------------------------ energy
    def _log_p0(self, z: Tensor) -> Tensor:
        """Normalised log p0 (the seed's energies include N(0, I)'s constant; bins are absolute)."""
        if self.distribution == "normal":
            return normal_log_density(z)
        return self.log_prob(z) - z.shape[1] * math.log(self.high - self.low)

    def energy(self, z: Tensor, d: Tensor) -> Tensor:
        """E(z) = −log p0(z) − d(G(z))."""
        return -self._log_p0(z) - d

    def prepare(self, generator: nn.Module, discriminator: nn.Module, z_dim: int,
                device: torch.device, gen: torch.Generator) -> None:
        if self.energy_range is not None:
            self.bins = self.energy_range
        elif self.seed_compat:
            self.bins = (130.0, 210.0)
        else:
            self.bins = self.warmup_range(generator, discriminator, z_dim, device, gen)
        self.bin_hits = torch.zeros(self.n_bins, dtype=torch.long)
        self.record("energy_lo", self.bins[0])
        self.record("energy_hi", self.bins[1])

    def warmup_range(self, generator: nn.Module, discriminator: nn.Module, z_dim: int,
                     device: torch.device, gen: torch.Generator) -> tuple[float, float]:
        """Energy quantiles over a θ-free L2MC warm-up from the prior (covers the prior's typical energies
        and the low energies the chains reach)."""
        z = self.prior(self.warmup_chains, z_dim, device, gen)
        energies: list[Tensor] = []
        l2mc_chain(lambda x: self.log_target_and_grad(generator, discriminator, x), z, self.warmup_steps,
                   self.tau, self.eta0, gen, visit=lambda zz, dd: energies.append(self.energy(zz, dd)))
        e = torch.cat(energies).double().cpu()
        e = e[torch.isfinite(e)]
        lo, hi = torch.quantile(e, torch.tensor(self.warmup_quantiles, dtype=torch.float64)).tolist()
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        return float(lo), float(hi)

    # ------------------------------------------------------------------ chains
    def sample_chains(self, generator: nn.Module, discriminator: nn.Module, m: int, z_dim: int,
                      device: torch.device, gen: torch.Generator) -> Tensor:
        lo, hi = self.bins
        z = self.prior(m, z_dim, device, gen)
        log_pi, d, grad = self.log_target_and_grad(generator, discriminator, z)
        bins = energy_bin(self.energy(z, d), lo, hi, self.n_bins)
        eta = torch.full((m,), self.eta0, device=device)
        theta_shape = (self.n_bins,) if self.shared_theta and not self.seed_compat else (m, self.n_bins)
        theta = torch.full(theta_shape, 1.0 / self.n_bins, device=device, dtype=torch.float64)
        window = torch.zeros(m, device=device)
        accepted = torch.zeros(m, device=device)
        hits = torch.zeros(self.n_bins, dtype=torch.long, device=device)
        for t in range(1, self.chain_length + 1):
            if self.learn_proposal and t % self.adapt_every == 0 and (self.adapt_until is None or t < self.adapt_until):
                bounds = (None, None) if self.seed_compat else (self.eta_min, self.eta_max)
                eta = adapt_eta(eta, window / self.adapt_every, self.accept_high, self.accept_low,
                                self.eta_up, self.eta_down, *bounds)
                window.zero_()
            # MALA (couple_drift): drift step τ_c = η_c², so proposal and correction stay a Langevin pair.
            tau = eta.pow(2)[:, None] if self.couple_drift and not self.seed_compat else self.tau
            mean = l2mc_mean(z, grad, tau)
            noise = torch.randn(z.shape, device=device, generator=gen)
            z_new = mean + eta[:, None] * noise
            log_pi_new, d_new, grad_new = self.log_target_and_grad(generator, discriminator, z_new)
            mean_new = l2mc_mean(z_new, grad_new, tau)
            bins_new = energy_bin(self.energy(z_new, d_new), lo, hi, self.n_bins)
            if self.seed_compat:
                log_r = seed_log_ratio(log_pi, log_pi_new, z, noise, mean_new, self.eta0)
            else:
                log_r = l2mc_log_ratio(log_pi, log_pi_new, z, z_new, mean, mean_new, eta)
            if self.learn_target:
                log_r = log_r + (theta_at(theta, bins) - theta_at(theta, bins_new)).to(log_r.dtype)
            acc = mh_accept(log_r, gen)
            z = torch.where(acc[:, None], z_new, z)
            grad = torch.where(acc[:, None], grad_new, grad)
            log_pi = torch.where(acc, log_pi_new, log_pi)
            bins = torch.where(acc, bins_new, bins)
            window += acc.float()
            accepted += acc.float()
            hits += torch.bincount(bins, minlength=self.n_bins)
            if self.learn_target:
                theta = samc_update(theta, bins, samc_gamma(t, self.t0))
        self.bin_hits += hits.cpu()
        self.record("acceptance", accepted / self.chain_length)
        self.record("eta_final", eta)
        if self.reweight and self.learn_target:
            z = self._resample(z, theta_at(theta, bins), gen)
        return z

    def _resample(self, z: Tensor, log_w: Tensor, gen: torch.Generator) -> Tensor:
        """SAMC importance resampling: π(z) ∝ π_θ(z)·exp(θ_J(z)), so final states resampled with weights
        exp(θ_J) are draws from the un-flattened target (Liang et al. 2007)."""
        w = torch.softmax(log_w.double(), dim=0)
        self.record("ess_fraction", float(1.0 / w.pow(2).sum() / len(w)))
        idx = torch.multinomial(w.float(), len(z), replacement=True, generator=gen)
        return z[idx]
