"""D calibrator (logistic regression on raw logits) and the MH-GAN / DRS acceptance rules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gancollapse.samplers.calibration import Calibrator, brier_score, fit_logistic_1d
from gancollapse.samplers.drs import drs_f, drs_log_acceptance
from gancollapse.samplers.mhgan import MHGANSampler, mh_acceptance_from_probs, mh_log_acceptance


class AffineD(nn.Module):
    """A miscalibrated D on 1-D data whose raw logit is an affine map of the true log density ratio."""

    def __init__(self, scale: float, shift: float, true_logit) -> None:  # noqa: ANN001
        super().__init__()
        self.scale, self.shift, self.true_logit = scale, shift, true_logit
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.scale * self.true_logit(x.reshape(-1)) + self.shift).unsqueeze(1)


def identity_g() -> nn.Module:
    g = nn.Linear(1, 1)
    with torch.no_grad():
        g.weight.fill_(1.0)
        g.bias.zero_()
    return g


def gauss_shift_logit(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 1, 1) − log N(x; 0, 1) = x − 1/2."""
    return x - 0.5


def test_brier_score_hand_values():
    logits = torch.tensor([0.0, 0.0, math.log(3.0)])  # p = 0.5, 0.5, 0.75
    labels = torch.tensor([1.0, 0.0, 1.0])
    assert brier_score(logits, labels) == pytest.approx((0.25 + 0.25 + 0.0625) / 3)
    with pytest.raises(ValueError, match="shape"):
        brier_score(logits, labels[:2])


def test_logistic_fit_recovers_affine_map():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20000, generator=gen) + 1, torch.randn(20000, generator=gen)])
    y = torch.cat([torch.ones(20000), torch.zeros(20000)])
    raw = 3.0 * gauss_shift_logit(x) + 2.0
    a, b = fit_logistic_1d(raw, y)
    # The Bayes logit is x − 1/2 = (raw − 2)/3.
    assert a == pytest.approx(1 / 3, rel=0.05)
    assert b == pytest.approx(-2 / 3, abs=0.05)
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic_1d(raw, torch.ones_like(raw))


def test_calibrator_lowers_heldout_brier_score():
    """fit() on held-out real vs generated samples: the calibrated Brier score beats the raw one and is
    close to the Bayes-optimal one."""
    sampler = MHGANSampler(chain_length=1)
    d = AffineD(4.0, 3.0, gauss_shift_logit)
    real = torch.randn(8000, 1, generator=torch.Generator().manual_seed(1)) + 1.0
    report = sampler.fit(identity_g(), d, real, z_dim=1, seed=0)
    assert report["calibration/brier_calibrated"] < report["calibration/brier_raw"] - 0.05
    gen = torch.Generator().manual_seed(2)
    xr, xf = torch.randn(20000, generator=gen) + 1, torch.randn(20000, generator=gen)
    labels = torch.cat([torch.ones(20000), torch.zeros(20000)])
    bayes = brier_score(gauss_shift_logit(torch.cat([xr, xf])), labels)
    assert report["calibration/brier_calibrated"] == pytest.approx(bayes, abs=0.01)
    assert sampler.calibrator.a.item() == pytest.approx(0.25, rel=0.08)


def test_uncalibrated_sampler_uses_identity():
    cal = Calibrator()
    x = torch.tensor([-1.0, 2.0])
    assert torch.equal(cal(x), x)


def test_mh_acceptance_equals_closed_form_with_calibrated_d():
    """MH-GAN's α = min(1, (1/D(x_k) − 1)/(1/D(x') − 1)) on a calibrated D equals the independence-sampler
    closed form min(1, p(x')q(x_k) / (p(x_k)q(x'))) with p = N(1, 1) (data) and q = p_g = N(0, 1)."""
    sampler = MHGANSampler(chain_length=1)
    d = AffineD(-2.5, 1.0, gauss_shift_logit)  # even the sign is wrong before calibration
    real = torch.randn(20000, 1, generator=torch.Generator().manual_seed(3)) + 1.0
    sampler.fit(identity_g(), d, real, z_dim=1, seed=0)
    gen = torch.Generator().manual_seed(4)
    xk, xp = torch.randn(500, generator=gen) * 2, torch.randn(500, generator=gen) * 2
    with torch.no_grad():
        dk = sampler.calibrator(d(xk[:, None]).squeeze(1))
        dp = sampler.calibrator(d(xp[:, None]).squeeze(1))
    alpha = mh_log_acceptance(dk, dp).exp()

    def log_p(x):  # noqa: ANN001, ANN202
        return -0.5 * (x - 1) ** 2

    def log_q(x):  # noqa: ANN001, ANN202
        return -0.5 * x ** 2

    closed = torch.clamp((log_p(xp) + log_q(xk) - log_p(xk) - log_q(xp)).exp(), max=1.0)
    assert torch.allclose(alpha, closed, atol=0.03)
    # The paper's probability form gives the same numbers.
    from_probs = mh_acceptance_from_probs(torch.sigmoid(dk.double()), torch.sigmoid(dp.double()))
    assert torch.allclose(from_probs.float(), alpha, atol=1e-5)


def test_drs_acceptance_hand_values():
    d = torch.tensor([0.0, -1.0, -5.0])
    f = drs_f(d, 0.0, eps=1e-6)
    # At the max, F = −log(1 − e^{−ε}) ≈ −log ε.
    assert f[0].item() == pytest.approx(-math.log(1 - math.exp(-1e-6)), rel=1e-4)
    assert f[1].item() == pytest.approx(-1.0 - math.log(1 - math.exp(-1.0 - 1e-6)), rel=1e-5)
    p = drs_log_acceptance(d, 0.0, gamma=f[1].item()).exp()
    assert p[1].item() == pytest.approx(0.5)
    assert p[0] > p[1] > p[2]
