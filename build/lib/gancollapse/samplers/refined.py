"""Base class of the D-refined latent samplers and the latent energy they share.

Interface (an extension of :class:`~gancollapse.samplers.prior.PriorSampler`):

1. ``fit(generator, discriminator, real, z_dim, seed)`` — optional, once per G/D pair: fits the D calibrator
   on half of the held-out ``real`` samples and as many prior samples of G, reports Brier scores on the other
   half, and keeps the real samples' D logits (MH-GAN starts its chains at a real sample). Without ``fit``
   the calibrator is the identity (raw D logits) and MH-GAN starts from a generated sample.
   ``python -m gancollapse.sample`` always calls it with fresh held-out real data.
2. ``sample(generator, discriminator, n, z_dim, device, seed, progress=False)`` — returns n latent codes.
   Chains run ``batch_size`` at a time (any n, the last batch is smaller); every random number comes from
   one ``torch.Generator`` on ``device`` seeded with ``seed``, so a (seed, batch_size, device) triple
   reproduces the codes exactly. G and D are put in eval mode for the call and restored afterwards.
   ``stats`` then holds the sampler's diagnostics (acceptance rates, ...).

D is read deterministically: a stochastic head (MaEM's μ + ε·σ, fresh ε per call) returns its mean μ in
``fit`` and in every score (:func:`gancollapse.nets.stochastic.deterministic`), so the same z always gets the
same score and a seed reproduces the chains. ``stochastic_d=true`` scores one random draw per call instead
(drawn from the global torch RNG, so the chains are then no longer reproducible from ``seed``).

The latent energy-based model (DDLS, Che et al. 2020, Eq. 9; REP-GAN; WL-GAN):
    π(z) ∝ p0(z) · exp(d(G(z))),    E(z) = −log p0(z) − d(G(z)),
with d the calibrated D logit, an estimate of log p_data/p_g, so that G_#π = p_data when D is optimal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor, nn

from gancollapse.nets.stochastic import deterministic
from gancollapse.samplers.calibration import Calibrator, calibration_report, raw_logits
from gancollapse.samplers.prior import PriorSampler


@contextmanager
def eval_mode(*nets: nn.Module) -> Iterator[None]:
    """Eval mode for the block (batch-norm statistics must not couple a chain batch), then restore."""
    modes = [n.training for n in nets]
    for n in nets:
        n.eval()
    try:
        yield
    finally:
        for n, m in zip(nets, modes, strict=True):
            n.train(m)


def _device_of(net: nn.Module) -> torch.device:
    p = next(iter(net.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def normal_log_density(z: Tensor) -> Tensor:
    """log N(z; 0, I) with its normalising constant, per row (the WL-GAN seed's energies include it)."""
    k = z[0].numel() if z.ndim > 1 else 1
    return -0.5 * z.reshape(z.shape[0], -1).pow(2).sum(dim=1) - 0.5 * k * math.log(2 * math.pi)


def gaussian_log_kernel(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log N(x; mean, std² I) per row up to the 2π constant, for a per-row std of shape (B,) or (B, 1).

    The −k·log std term must stay: with an adapted, per-chain std it no longer cancels between the
    forward and reverse proposal densities unless both use the same std (the WL-GAN seed's DCGAN path drops
    it and keeps η₀ in the reverse density; see :mod:`gancollapse.samplers.wlgan`).
    """
    std = std.reshape(-1)
    k = x[0].numel()
    sq = (x - mean).reshape(x.shape[0], -1).pow(2).sum(dim=1)
    return -sq / (2 * std.pow(2)) - k * std.log()


def progress_bar(total: int, description: str, enabled: bool):
    """A rich progress bar over samples (a no-op stand-in when disabled)."""
    if not enabled:
        return _NoBar()
    return _RichBar(Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn()), total, description)


class _NoBar:
    completed = 0.0

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        return None

    def advance(self, k: float) -> None:
        return None

    def set(self, completed: float) -> None:
        return None


class _RichBar:
    def __init__(self, progress, total: int, description: str) -> None:  # noqa: ANN001
        self.progress, self.total, self.description = progress, total, description
        self.completed = 0.0

    def __enter__(self) -> _RichBar:
        self.progress.__enter__()
        self.task = self.progress.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.progress.__exit__(*exc)

    def advance(self, k: float) -> None:
        self.set(self.completed + k)

    def set(self, completed: float) -> None:
        self.completed = float(completed)
        self.progress.update(self.task, completed=self.completed)


class RefinedSampler(PriorSampler):
    """Shared machinery: calibrated score, seeding, chain batching, progress and statistics.

    Args:
        distribution / low / high: the latent prior p0 (must be the run's training prior).
        batch_size: chains (or proposals) processed in parallel.
        calibrate: fit the logistic calibrator in :meth:`fit` (False: raw D logits).
        calibration_fraction: share of the held-out samples used to fit it; the rest scores it.
        stochastic_d: score with a stochastic D head's random draw (True) instead of its mean μ (False).
    """

    name = "refined"
    needs_grad = False

    def __init__(self, distribution: str = "normal", low: float = -1.0, high: float = 1.0, batch_size: int = 100,
                 calibrate: bool = True, calibration_fraction: float = 0.5, stochastic_d: bool = False) -> None:
        super().__init__(distribution, low, high)
        if int(batch_size) < 1:
            raise ValueError(f"sampler.batch_size must be >= 1, got {batch_size}")
        if not 0.0 < float(calibration_fraction) < 1.0:
            raise ValueError(f"sampler.calibration_fraction must be in (0, 1), got {calibration_fraction}")
        self.batch_size, self.calibrate = int(batch_size), bool(calibrate)
        self.calibration_fraction = float(calibration_fraction)
        self.stochastic_d = bool(stochastic_d)
        self.calibrator = Calibrator()
        self.real_logits: Tensor | None = None
        self.fit_report: dict[str, float] = {}
        self.stats: dict[str, float] = {}
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._tick: tuple[object, float, float] | None = None  # (bar, advance per score call, batch end)

    @property
    def chain_steps(self) -> int:
        """D evaluations per chain (``chain_length`` or ``n_steps``; 1 for one-shot samplers): the unit of the
        progress bar within a chain batch and of :meth:`estimate_seconds`."""
        return max(1, int(getattr(self, "chain_length", getattr(self, "n_steps", 1))))

    def estimate_seconds(self, generator: nn.Module, discriminator: nn.Module, n: int, z_dim: int,
                         device: torch.device | str = "cpu") -> float:
        """Rough wall time of :meth:`sample`: one timed chain step on a full batch (after a warm-up call) ×
        ``chain_steps`` × the number of batches. Uses its own random numbers: the seeded chains are unchanged."""
        device = torch.device(device)
        m = min(self.batch_size, int(n))
        z = torch.randn(m, int(z_dim), device=device, generator=torch.Generator(device=device).manual_seed(0))
        step = ((lambda: self.log_target_and_grad(generator, discriminator, z)) if self.needs_grad
                else (lambda: self.score(generator, discriminator, z)))
        with eval_mode(generator, discriminator), torch.no_grad():
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            per_step = time.perf_counter() - t0
        return per_step * self.chain_steps * math.ceil(int(n) / self.batch_size)

    # ------------------------------------------------------------------ calibration
    def fit(self, generator: nn.Module, discriminator: nn.Module, real: Tensor, z_dim: int,
            seed: int = 0, batch_size: int = 10_000) -> dict[str, float]:
        """Fit the calibrator on held-out ``real`` vs as many generated samples; returns Brier scores."""
        if real.shape[0] < 4:
            raise ValueError(f"sampler fit needs at least 4 held-out real samples, got {real.shape[0]}")
        device = _device_of(generator)
        gen = torch.Generator(device=device).manual_seed(int(seed))
        with eval_mode(generator, discriminator), self.reading(discriminator), torch.no_grad():
            z = self.prior(real.shape[0], z_dim, device, gen)
            fake = torch.cat([generator(c) for c in z.split(batch_size)])
            lr = raw_logits(discriminator, real.to(device), batch_size).float().cpu()
            lf = raw_logits(discriminator, fake, batch_size).float().cpu()
        perm = torch.randperm(len(lr), generator=torch.Generator().manual_seed(int(seed)))
        k = max(2, min(len(lr) - 2, int(round(self.calibration_fraction * len(lr)))))
        fit_idx, held_idx = perm[:k], perm[k:]
        self.calibrator = Calibrator()
        if self.calibrate:
            self.calibrator.fit(lr[fit_idx], lf[fit_idx])
        self.real_logits = lr
        self.fit_report = calibration_report(self.calibrator, lr[held_idx], lf[held_idx])
        return dict(self.fit_report)

    def reading(self, discriminator: nn.Module) -> AbstractContextManager[None]:
        """Context in which D is read: its mean μ unless ``stochastic_d`` (see the module docstring)."""
        return deterministic(discriminator, enabled=not self.stochastic_d)

    def score(self, generator: nn.Module, discriminator: nn.Module, z: Tensor) -> Tensor:
        """Calibrated D logit d(G(z)) per row (D's mean μ for a stochastic head unless ``stochastic_d``)."""
        with self.reading(discriminator):
            logits = raw_logits(discriminator, generator(z), z.shape[0])
        if self._tick is not None:  # inside a chain batch: move the bar one chain step
            bar, per_call, end = self._tick
            bar.set(min(end, bar.completed + per_call))
        return self.calibrator.to(z.device)(logits)

    def log_target_and_grad(self, generator: nn.Module, discriminator: nn.Module,
                            z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log π(z) = log p0(z) + d(G(z)) up to a constant, d(G(z)), ∇_z log π(z)); no parameter grads."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            d = self.score(generator, discriminator, z)
            log_pi = self.log_prob(z) + d
            (grad,) = torch.autograd.grad(log_pi.sum(), z)
        return log_pi.detach(), d.detach(), grad.detach()

    # ------------------------------------------------------------------ sampling
    def sample(self, generator: nn.Module, discriminator: nn.Module | None, n: int, z_dim: int,
               device: torch.device | str = "cpu", seed: int | None = None, progress: bool = False) -> Tensor:
        if discriminator is None:
            raise ValueError(f"sampler {self.name!r} needs the run's discriminator")
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        device = torch.device(device)
        gen = torch.Generator(device=device)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        self.stats, self._sums, self._counts = {}, {}, {}
        with eval_mode(generator, discriminator), progress_bar(int(n), f"{self.name} sampling", progress) as bar:
            z = self._run(generator, discriminator, int(n), int(z_dim), device, gen, bar)
        self.stats = {f"sampler/{k}": v / self._counts[k] for k, v in self._sums.items()}
        return z

    def _run(self, generator: nn.Module, discriminator: nn.Module, n: int, z_dim: int,
             device: torch.device, gen: torch.Generator, bar) -> Tensor:  # noqa: ANN001
        self.prepare(generator, discriminator, z_dim, device, gen)
        out = []
        done = 0
        while done < n:
            m = min(self.batch_size, n - done)
            self._tick = (bar, m / self.chain_steps, done + m)
            try:
                out.append(self.sample_chains(generator, discriminator, m, z_dim, device, gen))
            finally:
                self._tick = None
            done += m
            bar.set(done)
        return torch.cat(out)

    def prepare(self, generator: nn.Module, discriminator: nn.Module, z_dim: int,
                device: torch.device, gen: torch.Generator) -> None:
        """Per-call set-up before the first chain batch (warm-up passes, pilot estimates)."""

    def sample_chains(self, generator: nn.Module, discriminator: nn.Module, m: int, z_dim: int,
                      device: torch.device, gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    def record(self, key: str, value: Tensor | float, count: int = 1) -> None:
        """Accumulate a diagnostic; ``stats[key]`` is the count-weighted mean over the call."""
        v = float(value.sum().item()) if isinstance(value, Tensor) else float(value) * count
        c = value.numel() if isinstance(value, Tensor) else count
        self._sums[key] = self._sums.get(key, 0.0) + v
        self._counts[key] = self._counts.get(key, 0) + c
