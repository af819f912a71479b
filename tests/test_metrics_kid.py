"""KID (Bińkowski et al., 2018): known values, torchmetrics' subsets for the same seed, and no side effect
on the training run's global RNGs (CPU and CUDA)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torchmetrics.image.kid import KernelInceptionDistance

from gancollapse.metrics.kid import kid_from_features, mmd2_unbiased, polynomial_kernel

CUDA = torch.cuda.is_available()


def _brute_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Bińkowski et al. Eq. 4 written as loops over pairs, cubic kernel (xᵀy/d + 1)³."""
    m, d = x.shape
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_mmd2_unbiased_equals_the_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64) + 0.5
    got = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    assert float(got) == pytest.approx(_brute_mmd2(x, y), rel=1e-12)


def test_kid_closed_form_on_constant_sets():
    """All real features = a, all fakes = b (d = 1): every subset gives (a²+1)³ + (b²+1)³ − 2(ab+1)³."""
    real, fake = torch.ones(50, 1), torch.zeros(40, 1)
    mean, std = kid_from_features(real, fake, subsets=5, subset_size=20)
    assert mean == pytest.approx(8 + 1 - 2 * 1) and std == pytest.approx(0.0, abs=1e-12)
    same, _ = kid_from_features(real, real.clone(), subsets=5, subset_size=20)
    assert same == pytest.approx(0.0, abs=1e-12)


def test_kid_near_zero_for_one_distribution_and_large_when_separated():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(600, 16, generator=g), torch.randn(600, 16, generator=g)
    same, _ = kid_from_features(a, b, subsets=20, subset_size=300)
    far, _ = kid_from_features(a, b + 2.0, subsets=20, subset_size=300)
    assert abs(same) < 0.01 and far > 5.0


def test_kid_matches_torchmetrics_subsets_for_the_same_seed():
    """Same seed → the same subsets torchmetrics draws after torch.manual_seed(seed) (the previous code path)."""
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(300, 8, generator=g), torch.randn(250, 8, generator=g) * 1.3 + 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = KernelInceptionDistance(feature=_Identity(8), subsets=7, subset_size=100)
    ref.update(real, real=True)
    ref.update(fake, real=False)
    state = torch.get_rng_state()
    torch.manual_seed(5)
    ref_mean, ref_std = (float(v) for v in ref.compute())
    torch.set_rng_state(state)
    mean, std = kid_from_features(real, fake, subsets=7, subset_size=100, seed=5)
    assert mean == pytest.approx(ref_mean, rel=1e-4) and std == pytest.approx(ref_std, rel=1e-3)
    again = kid_from_features(real, fake, subsets=7, subset_size=100, seed=5)
    assert again == (mean, std)
    assert kid_from_features(real, fake, subsets=7, subset_size=100, seed=6)[0] != mean


class _Identity(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _forbid(*_args, **_kwargs):
    raise AssertionError("kid_from_features touched the global RNG")


def test_kid_leaves_the_global_rngs_untouched(monkeypatch):
    """Training's RNG streams (CPU and every CUDA device) are neither reseeded nor advanced. Seeding the
    global RNG also reseeds CUDA, so any global seeding call is a failure even on a CPU-only machine."""
    for name in ("manual_seed", "seed", "set_rng_state"):
        monkeypatch.setattr(torch, name, _forbid)
        monkeypatch.setattr(torch.random, name, _forbid)
    for name in ("manual_seed", "manual_seed_all", "seed", "seed_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, _forbid)
    device = "cuda" if CUDA else "cpu"
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(200, 8, generator=g).to(device), torch.randn(150, 8, generator=g).to(device)
    cpu_before = torch.get_rng_state()
    cuda_before = torch.cuda.get_rng_state_all() if CUDA else []
    kid_from_features(real, fake, subsets=10, subset_size=100, seed=0)
    assert torch.equal(torch.get_rng_state(), cpu_before)
    for before, after in zip(cuda_before, torch.cuda.get_rng_state_all() if CUDA else [], strict=True):
        assert torch.equal(before, after)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_kid_on_cuda_equals_cpu_and_keeps_the_cuda_stream():
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 0.3
    torch.cuda.manual_seed_all(11)
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed_all(11)
    on_gpu = kid_from_features(real.cuda(), fake.cuda(), subsets=10, subset_size=100, seed=0)
    torch.testing.assert_close(torch.rand(4, device="cuda"), expected)  # the CUDA stream continues untouched
    assert on_gpu == pytest.approx(kid_from_features(real, fake, subsets=10, subset_size=100, seed=0), rel=1e-9)


def test_kid_rejects_too_few_samples():
    with pytest.raises(ValueError, match="at least 2"):
        kid_from_features(torch.randn(1, 4), torch.randn(5, 4))
