"""Matrix-based Rényi estimators (gancollapse.aae.renyi) against closed forms and independent references.

References computed here without the module's code paths: scipy/numpy Gram matrices and eigenvalues, Parzen
densities integrated on a grid, explicit RKHS coordinates for the covariance operators, and
``scipy.linalg.fractional_matrix_power`` for the notebook's cross-entropy definitions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import fractional_matrix_power
from scipy.spatial.distance import cdist, pdist
from scipy.stats import norm

from gancollapse.aae.renyi import (
    _TraceXLogX,
    median_sigma2,
    normalized_gram,
    renyi_cross_entropy,
    renyi_divergence,
    renyi_entropy,
    shifted_matrix_power,
    trace_power,
)

F64 = torch.float64
KERNEL_ESTIMATORS = [("cs2", 2.0), ("jr2", 2.0), ("spectral", 0.5), ("spectral", 1.5)]


def _sets(n: int = 12, m: int = 15, d: int = 3, shift: float = 0.0, seed: int = 0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randn(m, d, generator=g, dtype=dtype) + shift
    return x, y


def _random_psd(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(n, n, generator=g, dtype=F64)
    a = b @ b.T + 0.1 * torch.eye(n, dtype=F64)
    return a / a.trace()


def _rotated_diag(values: list[float], seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=torch.Generator().manual_seed(seed),
                                       dtype=F64))
    return q @ torch.diag(torch.tensor(values, dtype=F64)) @ q.T


# --------------------------------------------------------------------------------------- Gram matrix
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_normalized_gram_matches_scipy(kernel: str) -> None:
    x, _ = _sets(n=9)
    s2 = 0.7
    d = cdist(x.numpy(), x.numpy())
    k = np.exp(-d**2 / (2 * s2)) if kernel == "gaussian" else np.exp(-d / math.sqrt(s2))
    A = normalized_gram(x, sigma2=s2, kernel=kernel)
    np.testing.assert_allclose(A.numpy(), k / 9, rtol=1e-10, atol=1e-14)
    assert torch.equal(A, A.T)
    assert A.trace().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.linalg.eigvalsh(A).min() > -1e-12


def test_median_bandwidth_is_the_pooled_median_and_detaches_on_request() -> None:
    x, y = _sets(n=6, m=5)  # 55 pairs: odd, so the lower median is the median
    expected = np.median(pdist(torch.cat((x, y)).numpy()) ** 2)
    assert median_sigma2(x, y).item() == pytest.approx(expected, rel=1e-10)
    assert median_sigma2(x, y, grad=True).item() == pytest.approx(expected, rel=1e-10)
    assert normalized_gram(x).allclose(normalized_gram(x, sigma2=float(np.median(pdist(x.numpy()) ** 2))))

    def grad(sigma2, bandwidth_grad=True):
        xx = x.clone().requires_grad_(True)
        renyi_divergence(xx, y, sigma2=sigma2, bandwidth_grad=bandwidth_grad).backward()
        return xx.grad

    # detached: the median is a constant, as if it had been passed in
    torch.testing.assert_close(grad(None, bandwidth_grad=False), grad(median_sigma2(x, y).item()))
    # followed: the same as normalising the pooled samples by their RMS pairwise distance q (in the graph) and
    # using the normalised median σ²/q² as a constant bandwidth — computed here with torch.pdist instead
    ratio = float(expected / np.mean(pdist(torch.cat((x, y)).numpy()) ** 2))
    xx = x.clone().requires_grad_(True)
    q = torch.pdist(torch.cat((xx, y))).pow(2).mean().sqrt()
    renyi_divergence(xx / q, y / q, sigma2=ratio).backward()
    torch.testing.assert_close(grad(None), xx.grad)
    assert not torch.allclose(grad(None), grad(None, bandwidth_grad=False))


def _scale_cosine(x, y, alpha, estimator, kernel, bandwidth_grad):
    """(dD(s·x, s·y)/ds at s = 1) / (‖∇_{x,y} D‖ · ‖(x, y)‖): the cosine between D's gradient and the direction
    that rescales both sets. dD/ds = Σ (x, y)·∇D (chain rule), so the ratio is dimensionless."""
    s = torch.ones((), dtype=x.dtype, requires_grad=True)
    xx, yy = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    d = renyi_divergence(s * xx, s * yy, alpha, estimator, kernel=kernel, bandwidth_grad=bandwidth_grad)
    d_s, g_x, g_y = torch.autograd.grad(d, (s, xx, yy))
    return float(d_s) / float(torch.cat((g_x, g_y)).norm() * torch.cat((x, y)).norm())


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("estimator, alpha", KERNEL_ESTIMATORS)
def test_median_bandwidth_divergence_is_invariant_to_a_common_rescaling(estimator: str, alpha: float,
                                                                          kernel: str) -> None:
    # An objective on codes that E can rescale must not reward the rescaling: D(s·x, s·y) = D(x, y), so its
    # gradient is orthogonal to (x, y). Sets of different spread and mean, as real and generated codes are.
    x, y = _sets(n=12, m=15, d=3)
    x, y = x * 0.6, y * 1.4 + 0.8
    d = renyi_divergence(x, y, alpha, estimator, kernel=kernel).item()
    assert renyi_divergence(7.0 * x, 7.0 * y, alpha, estimator, kernel=kernel).item() == pytest.approx(d, rel=1e-9)
    assert abs(_scale_cosine(x, y, alpha, estimator, kernel, bandwidth_grad=True)) < 1e-10
    # the detached median (the seed's behaviour): the same value, but part of the gradient rescales the codes
    assert abs(_scale_cosine(x, y, alpha, estimator, kernel, bandwidth_grad=False)) > 1e-2


def test_coincident_points_give_finite_gram_and_gradients() -> None:
    x = torch.zeros(5, 2, dtype=torch.float32, requires_grad=True)
    A = normalized_gram(x, kernel="laplacian")
    torch.testing.assert_close(A, torch.full((5, 5), 0.2))
    renyi_entropy(A, 0.5).backward()
    assert torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------------------- entropy
ALPHAS = [0.5, 1.0, 1.5, 2.0, 3.0, 10.0]


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("n", [4, 7])
def test_entropy_of_maximally_mixed_is_log2_n(alpha: float, n: int) -> None:
    assert renyi_entropy(torch.eye(n, dtype=F64) / n, alpha).item() == pytest.approx(math.log2(n), abs=1e-10)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_entropy_of_rank_one_is_zero(alpha: float) -> None:
    v = torch.randn(6, 1, generator=torch.Generator().manual_seed(3), dtype=F64)
    assert renyi_entropy(3.0 * v @ v.T, alpha).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0, 1.5, 2.0, 4.0])
def test_entropy_matches_numpy_spectrum(alpha: float) -> None:
    x, _ = _sets(n=10)
    A = normalized_gram(x, sigma2=1.0)
    lam = np.clip(np.linalg.eigvalsh(A.numpy()), 0, None)
    lam = lam[lam > 0]
    expected = -np.sum(lam * np.log2(lam)) if alpha == 1.0 else np.log2(np.sum(lam**alpha)) / (1 - alpha)
    assert renyi_entropy(A, alpha).item() == pytest.approx(expected, rel=1e-9)
    # K and K / tr K are the same state
    assert renyi_entropy(7.0 * A, alpha).item() == pytest.approx(expected, rel=1e-9)


def test_alpha_one_is_the_limit_from_both_sides() -> None:
    A = normalized_gram(_sets(n=10)[0], sigma2=0.5)
    s1 = renyi_entropy(A, 1.0).item()
    assert renyi_entropy(A, 1.0 - 1e-6).item() == pytest.approx(s1, abs=1e-5)
    assert renyi_entropy(A, 1.0 + 1e-6).item() == pytest.approx(s1, abs=1e-5)


def test_alpha_two_frobenius_path_equals_eigh_path_and_entropy_is_monotone() -> None:
    A = normalized_gram(_sets(n=10)[0], sigma2=0.8)
    assert renyi_entropy(A, 2.0).item() == pytest.approx(-math.log2(trace_power(A, 2.0).item()), rel=1e-12)
    values = [renyi_entropy(A, a).item() for a in (0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 8.0)]
    assert all(b < a for a, b in zip(values, values[1:], strict=False))
    assert 0 < values[-1] and values[0] < math.log2(10)


# --------------------------------------------------------------------------------------- custom autograd
@pytest.mark.parametrize("alpha", [0.5, 1.5, 3.0])
@pytest.mark.parametrize("which", ["identity", "repeated", "random"])
def test_trace_power_gradcheck_including_repeated_eigenvalues(alpha: float, which: str) -> None:
    A = {"identity": torch.eye(4, dtype=F64) / 4, "repeated": _rotated_diag([0.3, 0.3, 0.2, 0.2]),
         "random": _random_psd(4)}[which].requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: trace_power(a, alpha), (A,))
    if which == "identity":
        trace_power(A, alpha).backward()
        torch.testing.assert_close(A.grad, alpha * 4.0 ** (1 - alpha) * torch.eye(4, dtype=F64))


@pytest.mark.parametrize("alpha", [0.7, 1.0, 2.0])
def test_entropy_gradcheck_at_maximally_mixed(alpha: float) -> None:
    A = (torch.eye(5, dtype=F64) / 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: renyi_entropy(a, alpha), (A,))


def test_von_neumann_function_gradcheck() -> None:
    """Direct check of tr(A ln A): renyi_entropy divides by tr A, which hides an error along I."""
    for A in (torch.eye(4, dtype=F64) / 4, _rotated_diag([0.3, 0.3, 0.2, 0.2]), _random_psd(4)):
        assert torch.autograd.gradcheck(_TraceXLogX.apply, (A.clone().requires_grad_(True),))


@pytest.mark.parametrize("p", [-2.0, -0.5, 0.7, 1.5])
@pytest.mark.parametrize("which", ["identity", "repeated", "near_repeated", "random"])
def test_shifted_matrix_power_value_and_gradcheck(p: float, which: str) -> None:
    A = {"identity": torch.eye(4, dtype=F64) / 4, "repeated": _rotated_diag([0.3, 0.3, 0.2, 0.2]),
         "near_repeated": _rotated_diag([0.3, 0.3 + 1e-11, 0.2, 0.2 - 1e-12]),
         "random": _random_psd(4)}[which]
    eps = 1e-3
    expected = fractional_matrix_power(A.numpy() + eps * np.eye(4), p).real
    np.testing.assert_allclose(shifted_matrix_power(A, p, eps).numpy(), expected, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a: shifted_matrix_power(a, p, eps), (A.clone().requires_grad_(True),))


def test_gradients_finite_with_duplicated_samples_in_fp32() -> None:
    base = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    x = torch.cat((base, base[:3])).requires_grad_(True)  # rank-deficient Gram, repeated eigenvalues
    y = torch.randn(9, 3, generator=torch.Generator().manual_seed(2))
    for alpha in (0.5, 1.0, 1.5, 2.0, 3.0):
        x.grad = None
        renyi_entropy(normalized_gram(x), alpha).backward()
        assert torch.isfinite(x.grad).all(), alpha
    for estimator, alpha in KERNEL_ESTIMATORS:
        x.grad = None
        renyi_divergence(x, y, alpha, estimator).backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, estimator
    for mirrored in (False, True):
        x.grad = None
        renyi_cross_entropy(x, y, 0.8, mirrored).backward()
        assert torch.isfinite(x.grad).all(), mirrored


@pytest.mark.parametrize("estimator,alpha,kernel",
                         [("cs2", 2.0, "gaussian"), ("cs2", 2.0, "laplacian"), ("jr2", 2.0, "gaussian"),
                          ("spectral", 0.5, "gaussian"), ("spectral", 1.5, "laplacian")])
def test_divergence_gradcheck(estimator: str, alpha: float, kernel: str) -> None:
    x, y = (t.requires_grad_(True) for t in _sets(n=5, m=6, d=2, shift=0.5))
    fn = lambda a, b: renyi_divergence(a, b, alpha, estimator, sigma2=1.3, kernel=kernel)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y))


@pytest.mark.parametrize("mirrored", [False, True])
def test_cross_entropy_gradcheck(mirrored: bool) -> None:
    x, y = (t.requires_grad_(True) for t in _sets(n=5, m=5, d=2, shift=0.5))
    assert torch.autograd.gradcheck(lambda a, b: renyi_cross_entropy(a, b, 0.8, mirrored, sigma2=1.3), (x, y))


# --------------------------------------------------------------------------------------- divergences
@pytest.mark.parametrize("estimator,alpha", KERNEL_ESTIMATORS)
def test_divergence_of_a_set_with_itself_is_zero_in_any_row_order(estimator: str, alpha: float) -> None:
    x, _ = _sets(n=20)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    # spectral carries an O(nε) regularisation bias: |D(x, x)| ≤ −log₂(1 − nε)/|α − 1|
    tol = 1e-12 if estimator in ("cs2", "jr2") else 20 * 1e-6 / math.log(2) / abs(alpha - 1) * 1.01
    assert abs(renyi_divergence(x, x, alpha, estimator).item()) <= tol
    assert abs(renyi_divergence(x, x[perm], alpha, estimator).item()) <= tol


@pytest.mark.parametrize("estimator,alpha", KERNEL_ESTIMATORS)
def test_divergence_is_invariant_to_row_order(estimator: str, alpha: float) -> None:
    x, y = _sets(shift=0.7)
    g = torch.Generator().manual_seed(5)
    px, py = torch.randperm(x.shape[0], generator=g), torch.randperm(y.shape[0], generator=g)
    d = renyi_divergence(x, y, alpha, estimator).item()
    assert renyi_divergence(x[px], y[py], alpha, estimator).item() == pytest.approx(d, rel=1e-9)


@pytest.mark.parametrize("estimator,alpha", KERNEL_ESTIMATORS)
def test_divergence_is_positive_for_shifted_sets(estimator: str, alpha: float) -> None:
    x, y = _sets(n=30, m=30, shift=1.5)
    assert renyi_divergence(x, y, alpha, estimator).item() > 0.05


@pytest.mark.parametrize("estimator", ["cs2", "jr2"])
def test_alpha_two_divergences_are_symmetric_and_grow_with_the_shift(estimator: str) -> None:
    x, y = _sets(m=12, d=2)
    values = [renyi_divergence(x, y + s, estimator=estimator, sigma2=1.0).item() for s in (0.25, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False))
    assert renyi_divergence(y, x, estimator=estimator).item() == pytest.approx(
        renyi_divergence(x, y, estimator=estimator).item(), rel=1e-12)


def test_cs2_and_spectral_below_one_are_nonnegative_on_random_pairs() -> None:
    for seed in range(8):
        x, y = _sets(n=10, m=14, d=2, seed=seed)
        y = y * (0.3 + seed / 4)  # different spreads too
        assert renyi_divergence(x, y).item() >= 0.0
        assert renyi_divergence(x, y, 0.6, "spectral").item() >= 0.0


@pytest.mark.parametrize("d", [1, 3])
def test_cs2_equals_parzen_cauchy_schwarz_divergence(d: int) -> None:
    """Gaussian cs2 at σ² = Parzen CS divergence with windows of variance σ²/4 (potentials at σ²/2)."""
    x, y = _sets(n=7, m=9, d=d, shift=0.8)
    sigma2 = 0.8
    h2 = sigma2 / 4
    if d == 1:  # integrate the Parzen densities on a grid
        t = np.linspace(-12, 12, 240_001)
        p = norm.pdf(t[:, None], x.numpy().T, math.sqrt(h2)).mean(axis=1)
        q = norm.pdf(t[:, None], y.numpy().T, math.sqrt(h2)).mean(axis=1)
        v_pq, v_pp, v_qq = (np.trapezoid(a * b, t) for a, b in ((p, q), (p, p), (q, q)))
    else:  # ∫ N(t; a, h²I) N(t; b, h²I) dt = N(a; b, 2h²I)
        def potential(a, b):
            sq = cdist(a.numpy(), b.numpy(), "sqeuclidean")
            return np.mean(np.exp(-sq / (4 * h2)) / (4 * math.pi * h2) ** (d / 2))
        v_pq, v_pp, v_qq = potential(x, y), potential(x, x), potential(y, y)
    parzen = -math.log2(v_pq**2 / (v_pp * v_qq))
    assert renyi_divergence(x, y, sigma2=sigma2).item() == pytest.approx(parzen, rel=1e-7)


def test_jr2_matches_pooled_entropies() -> None:
    x, y = _sets(n=9, m=13, shift=0.6)
    s2 = median_sigma2(x, y)
    s = [renyi_entropy(normalized_gram(z, sigma2=s2), 2.0).item() for z in (torch.cat((x, y)), x, y)]
    assert renyi_divergence(x, y, estimator="jr2").item() == pytest.approx(s[0] - 0.5 * (s[1] + s[2]), rel=1e-10)


def test_cs2_stays_finite_with_live_gradient_for_far_apart_sets() -> None:
    x, y = _sets(n=8, m=8, d=2, shift=60.0, dtype=torch.float32)
    x.requires_grad_(True)
    d = renyi_divergence(x, y, sigma2=1.0)
    d.backward()
    assert torch.isfinite(d) and d.item() > 1000  # ≈ 2·‖shift‖²/(σ² ln 2) ≈ 2·10⁴ bits; exp underflows
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _explicit_petz(x, y, alpha, sigma2, eps):
    """(α−1)⁻¹ log₂ tr(f(C_x) g(C_y)), f(λ) = λ(λ+ε)^(α−1), g(μ) = μ(μ+ε)^(−α), in explicit RKHS coordinates."""
    z = np.concatenate((x.numpy(), y.numpy()))
    kz = np.exp(-cdist(z, z, "sqeuclidean") / (2 * sigma2))
    lam, v = np.linalg.eigh(kz)
    keep = lam > 1e-13 * lam.max()
    psi = np.sqrt(lam[keep])[:, None] * v[:, keep].T  # column i: coordinates of φ(z_i)
    n = x.shape[0]
    cx, cy = psi[:, :n] @ psi[:, :n].T / n, psi[:, n:] @ psi[:, n:].T / (z.shape[0] - n)

    def fn(c, h):
        w, u = np.linalg.eigh(c)
        w = np.clip(w, 0, None)
        return (u * h(w)) @ u.T

    t = np.trace(fn(cx, lambda w: w * (w + eps) ** (alpha - 1)) @ fn(cy, lambda w: w * (w + eps) ** -alpha))
    return math.log2(t) / (alpha - 1)


@pytest.mark.parametrize("alpha", [0.3, 0.7, 1.5, 2.0])
def test_spectral_equals_petz_divergence_of_covariance_operators(alpha: float) -> None:
    x, y = _sets(n=8, m=10, d=2, shift=0.7)
    sigma2, eps = 0.3, 1e-4  # narrow kernel: a well-conditioned pooled Gram matrix
    expected = _explicit_petz(x, y, alpha, sigma2, eps)
    assert renyi_divergence(x, y, alpha, "spectral", sigma2=sigma2, eps=eps).item() == pytest.approx(expected, rel=1e-7)


def test_logistic_is_the_jensen_shannon_bound_in_bits() -> None:
    mu, n = 1.5, 100_000
    u = (np.arange(n) + 0.5) / n  # stratified: sample means ≈ expectations to O(1/n)
    xs, ys = norm.ppf(u), norm.ppf(u) + mu
    logit = lambda t: torch.as_tensor(-mu * t + mu**2 / 2)  # noqa: E731  ln p/q, the Bayes-optimal logit
    t = np.linspace(-12, 14, 200_001)
    p, q = norm.pdf(t), norm.pdf(t, mu)
    m = (p + q) / 2
    js = 0.5 * np.trapezoid(p * np.log2(p / m), t) + 0.5 * np.trapezoid(q * np.log2(q / m), t)
    assert renyi_divergence(logit(xs), logit(ys), estimator="logistic").item() == pytest.approx(js, abs=2e-4)
    # any other discriminator only lower-bounds it; a constant-0 one (or identical inputs at 0) gives 0
    assert renyi_divergence(0.5 * logit(xs), 0.5 * logit(ys), estimator="logistic").item() < js
    zeros = torch.zeros(10, 1)
    assert renyi_divergence(zeros, zeros, estimator="logistic").item() == 0.0
    s = torch.randn(10)
    assert renyi_divergence(s, s, estimator="logistic").item() < 0.0


# --------------------------------------------------------------------------------------- cross-entropies
def _notebook_definitions(x, y, alpha, sigma2, eps):
    """Both bipartite measures straight from their definitions on κ = (A + εI)/(1 + nε) (scipy), plus the
    notebook's mirrored code, which raises the trace, not the matrix, to α."""
    n = x.shape[0]

    def kappa(z):
        k = np.exp(-cdist(z.numpy(), z.numpy(), "sqeuclidean") / (2 * sigma2)) / n
        return (k + eps * np.eye(n)) / (1 + n * eps)

    k1, k2 = kappa(x), kappa(y)
    fmp = lambda a, p: fractional_matrix_power(a, p).real  # noqa: E731
    p = (1 - alpha) / (2 * alpha)
    petz = math.log2(np.trace(fmp(k1, alpha) @ fmp(k2, 1 - alpha))) / (alpha - 1)
    sandwiched = math.log2(np.trace(fmp(fmp(k2, p) @ k1 @ fmp(k2, p), alpha))) / (alpha - 1)
    notebook_bug = math.log2(np.trace(fmp(k2, p) @ k1 @ fmp(k2, p)) ** alpha) / (alpha - 1)
    return petz, sandwiched, notebook_bug


@pytest.mark.parametrize("alpha", [0.5, 0.8, 1.5, 2.0])
def test_cross_entropies_match_their_definitions(alpha: float) -> None:
    x, y = _sets(n=8, m=8, d=2, shift=0.6)
    petz, sandwiched, bug = _notebook_definitions(x, y, alpha, sigma2=1.0, eps=1e-6)
    c = renyi_cross_entropy(x, y, alpha, sigma2=1.0).item()
    c_m = renyi_cross_entropy(x, y, alpha, mirrored=True, sigma2=1.0).item()
    assert c == pytest.approx(petz, rel=1e-6)
    assert c_m == pytest.approx(sandwiched, rel=1e-6)
    assert abs(c_m - bug) > 0.05
    assert 0.0 <= c_m <= c  # sandwiched ≤ Petz; both ≥ 0 in these α ranges


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_cross_entropy_zero_on_itself_and_depends_on_pairing(mirrored: bool, alpha: float) -> None:
    x, y = _sets(n=10, m=10, shift=0.4)
    assert renyi_cross_entropy(x, x, alpha, mirrored).item() == pytest.approx(0.0, abs=1e-10)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    c = renyi_cross_entropy(x, y, alpha, mirrored).item()
    assert renyi_cross_entropy(x[perm], y[perm], alpha, mirrored).item() == pytest.approx(c, rel=1e-9)
    assert abs(renyi_cross_entropy(x, y[perm], alpha, mirrored).item() - c) > 1e-3


# --------------------------------------------------------------------------------------- dtypes, errors
@pytest.mark.parametrize("estimator,alpha", [*KERNEL_ESTIMATORS, ("entropy", 1.5), ("cross", 0.8)])
def test_fp32_matches_fp64(estimator: str, alpha: float) -> None:
    def run(dtype):
        x, y = (t.to(dtype) for t in _sets(n=16, m=16, shift=0.5))
        if estimator == "entropy":
            return renyi_entropy(normalized_gram(x), alpha)
        if estimator == "cross":
            return renyi_cross_entropy(x, y, alpha, mirrored=True)
        return renyi_divergence(x, y, alpha, estimator)

    v32, v64 = run(torch.float32), run(F64)
    assert v32.dtype == torch.float32 and v64.dtype == F64
    assert v32.item() == pytest.approx(v64.item(), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("estimator,alpha", KERNEL_ESTIMATORS)
def test_fp32_is_translation_invariant_far_from_the_origin(estimator: str, alpha: float) -> None:
    """Latent codes can sit far from 0; ‖x‖² + ‖y‖² − 2xᵀy in fp32 would then lose the distances."""
    x, y = (t.float() for t in _sets(n=16, m=16, shift=0.5))
    d = renyi_divergence(x, y, alpha, estimator).item()
    assert renyi_divergence(x + 300.0, y + 300.0, alpha, estimator).item() == pytest.approx(d, rel=1e-3)


def test_invalid_inputs_raise_clear_errors() -> None:
    x, y = _sets(n=5, m=6)
    A = normalized_gram(x)
    cases = [
        (lambda: renyi_entropy(A, 0.0), "alpha"),
        (lambda: renyi_entropy(A, -1.0), "alpha"),
        (lambda: renyi_entropy(A, float("nan")), "alpha"),
        (lambda: renyi_entropy(A[:, :3], 2.0), "square"),
        (lambda: trace_power(A[0], 2.0), "square"),
        (lambda: normalized_gram(x, sigma2=0.0), "sigma2"),
        (lambda: normalized_gram(x, sigma2=-1.0), "sigma2"),
        (lambda: normalized_gram(x, kernel="cosine"), "kernel"),
        (lambda: normalized_gram(x[0]), "2-D"),
        (lambda: normalized_gram(x[:1]), "sigma2"),
        (lambda: renyi_divergence(x, y[:, :2]), "feature dimension"),
        (lambda: renyi_divergence(x, y.float()), "dtype"),
        (lambda: renyi_divergence(x, y, alpha=1.5), "alpha=2"),
        (lambda: renyi_divergence(x, y, estimator="kl"), "estimator"),
        (lambda: renyi_divergence(x, y, 1.0, "spectral"), "alpha=1"),
        (lambda: renyi_divergence(x, y, 0.5, "spectral", eps=0.0), "eps"),
        (lambda: renyi_divergence(x, y, estimator="logistic"), "logits"),
        (lambda: renyi_divergence(x, y, sigma2=-2.0), "sigma2"),
        (lambda: renyi_cross_entropy(x, y, 0.5), "same number of rows"),
        (lambda: renyi_cross_entropy(x, x, 1.0), "alpha=1"),
        (lambda: shifted_matrix_power(A, 0.5, eps=-1.0), "eps"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()
