import pytest
import torch
from torch import nn

from gancollapse.regularizers.base import Step
from gancollapse.regularizers.gradient_penalty import GradientPenalty, gradient_penalty
from gancollapse.regularizers.r1 import R1, r1_penalty
from gancollapse.regularizers.spectral_norm import SpectralNorm
from gancollapse.regularizers.topk import TopK, topk_count
from gancollapse.regularizers.weight_clipping import WeightClipping


def linear_d(weight: list[float]) -> nn.Linear:
    d = nn.Linear(len(weight), 1)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([weight]))
        d.bias.zero_()
    return d


def make_step(d: nn.Module, real, fake, phase="d", epoch=0, step=0) -> Step:
    return Step(phase, real, fake, torch.zeros(len(real), 2), d(real), d(fake), nn.Identity(), d, step, epoch)


def test_gradient_penalty_zero_for_unit_gradient_linear_critic():
    d = linear_d([0.6, 0.8])  # ‖∇D‖ = 1 everywhere
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    assert gradient_penalty(d, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_value_and_weight():
    d = linear_d([1.2, 1.6])  # ‖∇D‖ = 2 -> (2-1)^2 = 1
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    terms = GradientPenalty(weight=10.0)(make_step(d, real, fake))
    assert terms["gp"].item() == pytest.approx(10.0, rel=1e-5)


class HalfSquaredNorm(nn.Module):
    """D(x) = ½‖x‖² per sample: ∇D(x) = x, so a penalty's value tells where the gradient was taken."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.pow(2).sum(dim=1, keepdim=True)


def test_gradient_penalty_is_taken_at_the_interpolates():
    """Gulrajani et al. Eq. 3 samples x̂ = αx + (1 − α)x̃; with ∇D(x) = x the penalty is mean((‖x̂‖ − 1)²),
    neither the value at the real points nor at the fakes."""
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(6, 3, generator=gen) * 2, torch.randn(6, 3, generator=gen) + 3
    alpha = torch.rand(6, 1, generator=gen)
    mixed = alpha * real + (1 - alpha) * fake
    expected = (mixed.norm(dim=1) - 1).pow(2).mean().item()
    assert gradient_penalty(HalfSquaredNorm(), real, fake, alpha=alpha).item() == pytest.approx(expected, rel=1e-5)
    for end in (real, fake):  # the check tells the interpolates from either end
        assert abs((end.norm(dim=1) - 1).pow(2).mean().item() - expected) > 0.1


def test_r1_penalises_the_gradient_at_real_data_not_at_fakes():
    """R1 (Mescheder et al. Eq. 9) is E_real ‖∇D(x)‖²: with ∇D(x) = x it is the mean ‖x‖² of the real batch."""
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(5, 2, generator=gen), torch.randn(5, 2, generator=gen) * 3 + 4
    d = HalfSquaredNorm()
    terms = R1(gamma=2.0)(Step("d", real, fake, torch.zeros(5, 2), d(real), d(fake), nn.Identity(), d))
    assert terms["r1"].item() == pytest.approx(real.pow(2).sum(dim=1).mean().item(), rel=1e-5)  # γ/2 = 1
    assert fake.pow(2).sum(dim=1).mean().item() > 2 * terms["r1"].item()


def test_gradient_penalty_pushes_gradient_norm_to_one():
    d = linear_d([1.2, 1.6])
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    gradient_penalty(d, real, fake).backward()
    # d/dw (‖w‖-1)^2 = 2(‖w‖-1) w/‖w‖ = w  for ‖w‖ = 2
    assert torch.allclose(d.weight.grad, torch.tensor([[1.2, 1.6]]), atol=1e-5)


def test_r1_penalty_value():
    d = linear_d([3.0, 4.0])
    real = torch.randn(5, 2)
    assert r1_penalty(d, real).item() == pytest.approx(25.0)
    terms = R1(gamma=2.0)(make_step(d, real, real))
    assert terms["r1"].item() == pytest.approx(25.0)  # γ/2 · 25


def test_r1_lazy_regularisation_skips_and_rescales():
    d = linear_d([3.0, 4.0])
    real = torch.randn(5, 2)
    reg = R1(gamma=2.0, every=4)
    assert reg(make_step(d, real, real, step=1)) == {}
    assert reg(make_step(d, real, real, step=4))["r1"].item() == pytest.approx(100.0)


def test_spectral_norm_bounds_largest_singular_value():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 1))
    with torch.no_grad():
        d[0].weight.mul_(10)
    SpectralNorm().apply_to_nets(nn.Identity(), d)
    for _ in range(50):  # power iteration converges in train mode
        d(torch.randn(2, 4))
    sigma = torch.linalg.matrix_norm(d[0].weight.detach(), ord=2).item()
    assert sigma == pytest.approx(1.0, rel=1e-2)


def test_weight_clipping_clamps_every_parameter():
    d = nn.Linear(3, 2)
    with torch.no_grad():
        d.weight.fill_(0.5)
        d.bias.fill_(-0.3)
    WeightClipping(0.01).after_d_step(d)
    assert d.weight.abs().max().item() == pytest.approx(0.01)
    assert d.bias.min().item() == pytest.approx(-0.01)


def test_topk_schedule_follows_sinha_decay_and_floor():
    """Sinha et al. Alg. 1: k = B in the first epoch, then k ← max(γk, ν·B) at each epoch end, k real-valued
    and floored when used: ⌊64·0.99^e⌋ = 64, 63, 62, 62, 61, 60, 60, 59, …"""
    ks = [topk_count(64, e, gamma=0.99, nu=0.5) for e in range(80)]
    assert ks[:8] == [64, 63, 62, 62, 61, 60, 60, 59]
    assert ks[:8] == [int(64 * 0.99**e) for e in range(8)]
    assert all(a >= b for a, b in zip(ks, ks[1:], strict=False))
    assert min(ks) == 32 and ks.index(32) == 66 and ks[-1] == 32  # floor ν·B, reached at epoch 66
    assert topk_count(500, 9, gamma=0.99, nu=0.5) == int(500 * 0.99**9)
    assert topk_count(500, 1000, gamma=0.99, nu=0.5) == 250
    # start_epoch delays the schedule: k = B through start_epoch, first decay after it
    delayed = [topk_count(64, e, gamma=0.99, nu=0.5, start_epoch=10) for e in range(8, 14)]
    assert delayed == [64, 64, 64, 63, 62, 62]
    # the Mode_Collapse seed: topk(s_f, B // 2) for epoch >= epochs/2 (500 epochs, B = 500), no decay
    seed = [topk_count(500, e, gamma=0.0, nu=0.5, start_epoch=249) for e in (0, 248, 249, 250, 251, 499)]
    assert seed == [500, 500, 500, 250, 250, 250]
    assert topk_count(4, 3, gamma=0.5, nu=0.1) == 1  # at least one sample


def test_topk_filter_uses_the_epoch_schedule():
    reg = TopK(gamma=0.5, nu=0.25)
    d_fake = torch.arange(8.0)[:, None]
    sizes = []
    for epoch in range(4):
        idx = reg.filter_fake(d_fake, make_step(nn.Identity(), torch.zeros(8, 1), torch.zeros(8, 1), "g", epoch=epoch))
        sizes.append(8 if idx is None else len(idx))
        assert int(reg.last_k) == sizes[-1]
    assert sizes == [8, 4, 2, 2]


def test_topk_selects_highest_scored_fakes():
    reg = TopK(gamma=0.0, nu=0.5)
    d_fake = torch.tensor([[0.1], [5.0], [-2.0], [3.0]])
    step = make_step(nn.Identity(), torch.zeros(4, 1), torch.zeros(4, 1), "g", epoch=0)
    assert reg.filter_fake(d_fake, step) is None  # the first epoch keeps the whole batch
    idx = reg.filter_fake(d_fake, make_step(nn.Identity(), torch.zeros(4, 1), torch.zeros(4, 1), "g", epoch=1))
    assert sorted(idx.tolist()) == [1, 3]


@pytest.mark.parametrize("cls,kwargs,key", [(GradientPenalty, {"weight": -1}, "gradient_penalty.weight"),
                                            (WeightClipping, {"clip": 0}, "weight_clipping.clip"),
                                            (TopK, {"nu": 0}, "topk.nu"),
                                            (TopK, {"start_epoch": -1}, "topk.start_epoch")])
def test_bad_values_name_the_key(cls, kwargs, key):
    with pytest.raises(ValueError, match=key):
        cls(**kwargs)
