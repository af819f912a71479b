import math

import pytest
import torch

from gancollapse.losses import (
    HingeLoss,
    LeastSquaresLoss,
    NonSaturatingLoss,
    StandardLoss,
    WassersteinLoss,
    per_sample_score,
)

R = torch.tensor([2.0, -1.0])
F_ = torch.tensor([0.5, -3.0])


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def test_standard_loss_values():
    obj = StandardLoss()
    exp_d = (sp(-2.0) + sp(1.0)) / 2 + (sp(0.5) + sp(-3.0)) / 2
    assert obj.d_loss(R, F_).item() == pytest.approx(exp_d, rel=1e-6)
    assert obj.g_loss(F_).item() == pytest.approx(-(sp(0.5) + sp(-3.0)) / 2, rel=1e-6)


def test_non_saturating_generator_value():
    obj = NonSaturatingLoss()
    assert obj.g_loss(F_).item() == pytest.approx((sp(-0.5) + sp(3.0)) / 2, rel=1e-6)
    assert obj.d_loss(R, F_).item() == pytest.approx(StandardLoss().d_loss(R, F_).item())


def test_hinge_values():
    obj = HingeLoss()
    # relu(1-2)=0, relu(1+1)=2 -> 1 ; relu(1+0.5)=1.5, relu(1-3)=0 -> 0.75
    assert obj.d_loss(R, F_).item() == pytest.approx(1.75)
    assert obj.g_loss(F_).item() == pytest.approx(1.25)


def test_wasserstein_values():
    obj = WassersteinLoss()
    assert obj.d_loss(R, F_).item() == pytest.approx(-1.25 - 0.5)
    assert obj.g_loss(F_).item() == pytest.approx(1.25)


def test_least_squares_is_mao_form():
    obj = LeastSquaresLoss()
    # D: 0.5*mean((r-1)^2) + 0.5*mean(f^2) = 0.5*(1+4)/2 + 0.5*(0.25+9)/2
    assert obj.d_loss(R, F_).item() == pytest.approx(0.5 * 2.5 + 0.5 * 4.625)
    # G: 0.5*mean((f-1)^2) = 0.5*(0.25+16)/2
    assert obj.g_loss(F_).item() == pytest.approx(0.5 * 8.125)
    # minimised where D(G(z)) = 1
    assert obj.g_loss(torch.ones(3)).item() == 0.0
    # D's loss is zero only at its targets b = 1 (real) and a = 0 (fake); R's (2, −1) is symmetric about 0.5,
    # so it alone cannot tell the real target 1 from 0
    assert obj.d_loss(torch.ones(2), torch.zeros(2)).item() == 0.0
    assert obj.d_loss(torch.zeros(2), torch.zeros(2)).item() == pytest.approx(0.5)


def test_least_squares_seed_compat_reproduces_seed_sign():
    obj = LeastSquaresLoss(seed_compat=True)
    assert obj.d_loss(R, F_).item() == pytest.approx(0.5 * (9 + 0) / 2 + 0.5 * 4.625)
    assert obj.g_loss(F_).item() == pytest.approx(-0.5 * 8.125)


def test_vector_outputs_average_over_code():
    real = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    fake = torch.tensor([[2.0, 2.0], [-2.0, 0.0]])
    assert WassersteinLoss().d_loss(real, fake).item() == pytest.approx(0.5 - 1.0)
    assert per_sample_score(real).tolist() == [2.0, 0.0]
