"""Samplers on a stochastic (MaEM / RealnessGAN) discriminator: D(x) = μ + ε·σ with a fresh ε per call.

Scoring outside training reads μ (gancollapse.nets.stochastic.deterministic); ``stochastic_d=true`` restores
the random draw.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gancollapse.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gancollapse.nets.stochastic import deterministic, stochastic_heads
from gancollapse.samplers.ddls import DDLSSampler
from gancollapse.samplers.drs import DRSSampler
from gancollapse.samplers.mhgan import MHGANSampler
from gancollapse.samplers.repgan import REPGANSampler
from gancollapse.samplers.wlgan import WLGANSampler

Z = 4


def nets() -> tuple[nn.Module, DCGANDiscriminator]:
    torch.manual_seed(0)
    g = DCGANGenerator(Z, channels=1, base=2, img_size=28)
    d = DCGANDiscriminator(channels=1, base=2, img_size=28, out_dim=3, stochastic=True)
    return g, d


def head_mean(d: DCGANDiscriminator, x: torch.Tensor) -> torch.Tensor:
    return d.head(d.features(x).flatten(1)).chunk(2, dim=1)[0]


def test_deterministic_reads_the_mean_and_restores_the_head() -> None:
    _, d = nets()
    x = torch.randn(5, 1, 28, 28)
    assert not torch.equal(d(x), d(x))  # training behaviour: a fresh ε per call
    wrapped = nn.Sequential(nn.Identity(), d)  # heads are found below any wrapper (a LightningModule, ...)
    assert stochastic_heads(wrapped) == [d]
    with torch.no_grad(), deterministic(wrapped):
        a, b = d(x), d(x)
    torch.testing.assert_close(a, head_mean(d, x).detach())
    assert torch.equal(a, b)
    assert d.force_mean is False and not torch.equal(d(x), d(x))
    with deterministic(d, enabled=False):
        assert not torch.equal(d(x), d(x))


SAMPLERS = {
    "drs": lambda **k: DRSSampler(n_pilot=8, batch_size=8, **k),
    "mhgan": lambda **k: MHGANSampler(chain_length=3, batch_size=4, **k),
    "repgan": lambda **k: REPGANSampler(chain_length=3, batch_size=4, **k),
    "ddls": lambda **k: DDLSSampler(n_steps=3, batch_size=4, **k),
    "wlgan": lambda **k: WLGANSampler(chain_length=3, batch_size=4, warmup_steps=2, warmup_chains=4, **k),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_scores_are_deterministic_unless_stochastic_d(name: str) -> None:
    g, d = nets()
    z = torch.randn(6, Z)
    fixed = SAMPLERS[name](calibrate=False)
    with torch.no_grad():
        s1, s2 = fixed.score(g, d, z), fixed.score(g, d, z)
        torch.testing.assert_close(s1, head_mean(d, g(z)).mean(dim=1))
    assert torch.equal(s1, s2)
    noisy = SAMPLERS[name](calibrate=False, stochastic_d=True)
    with torch.no_grad():
        assert not torch.equal(noisy.score(g, d, z), noisy.score(g, d, z))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_seeded_sampling_and_calibration_reproduce_with_a_stochastic_d(name: str) -> None:
    g, d = nets()
    real = torch.randn(16, 1, 28, 28)
    runs = []
    for _ in range(2):
        s = SAMPLERS[name]()
        report = s.fit(g, d, real, Z, seed=0)
        torch.manual_seed(len(runs))  # the global RNG (D's ε) differs between the two runs
        runs.append((report, s.sample(g, d, 5, Z, "cpu", seed=3)))
    (rep_a, z_a), (rep_b, z_b) = runs
    assert rep_a == rep_b
    assert torch.equal(z_a, z_b)


def test_stochastic_d_switch_restores_the_random_draw() -> None:
    g, d = nets()
    zs = []
    for i in range(2):
        s = MHGANSampler(chain_length=20, batch_size=8, calibrate=False, stochastic_d=True)
        torch.manual_seed(i)
        zs.append(s.sample(g, d, 8, Z, "cpu", seed=3))
    assert not torch.equal(zs[0], zs[1])
