"""Matrix-based Rényi α-entropies, divergences and cross-entropies on kernel Gram matrices.

All quantities are in **bits** and work in fp32 and fp64 (eigendecompositions always run in fp64).

**Entropy.** Sanchez Giraldo, Rao & Príncipe, "Measures of entropy from data using infinitely divisible
kernels", IEEE Trans. Inf. Theory 61(1):535–548, 2015 (arXiv 1211.2459): for a positive semi-definite Gram
matrix K of n samples, A = K / tr K is a unit-trace "density matrix" and the matrix-based α-order entropy is

    S_α(A) = (1 − α)⁻¹ · log₂ tr(A^α) = (1 − α)⁻¹ · log₂ Σ_i λ_i(A)^α,

with the von Neumann entropy −Σ_i λ_i log₂ λ_i as its α → 1 limit. A is the Gram representation of the
empirical (uncentred) covariance operator C_x = Σ_i φ(x_i)⊗φ(x_i) / tr K: both have the same non-zero
spectrum. The same framework is extended to several variables and used as a training loss by Yu, Sanchez
Giraldo, Jenssen & Príncipe, "Multivariate extension of matrix-based Rényi's α-order entropy functional",
IEEE TPAMI 42(11):2960–2966, 2020.

**Divergences** between two sample sets x (n × d) and y (m × d), one kernel and one bandwidth for both
(:func:`renyi_divergence`):

- ``cs2`` — the α = 2 Cauchy–Schwarz divergence of the two covariance operators,
  −log₂[tr(C_x C_y)² / (tr C_x² · tr C_y²)] = −log₂[‖K_xy‖⁴_F / (‖K_xx‖²_F ‖K_yy‖²_F)].
  O((n+m)² d), no eigensolver; symmetric, ≥ 0 (Cauchy–Schwarz in the Hilbert–Schmidt inner product) and 0
  for identical sets; independent of row order. With the Gaussian kernel it *is* the Parzen-window
  Cauchy–Schwarz divergence of Jenssen, Príncipe, Erdogmus & Eltoft ("The Cauchy–Schwarz divergence and
  Parzen windowing", J. Franklin Inst. 343(6):614–629, 2006) whose information potentials use a Gaussian of
  variance σ²/2 (windows of variance σ²/4), because the squared entries of a Gaussian Gram matrix at σ² are
  the Gram matrix at σ²/2.
- ``jr2`` — Jensen–Rényi at α = 2: S₂(A_pooled) − ½(S₂(A_x) + S₂(A_y)); symmetric, 0 for identical sets.
  Unlike the α ∈ (0, 1) Jensen–Rényi divergence it can be negative for sets of very different spread.
- ``spectral`` — the general-α Petz form of Sledge & Príncipe, "Estimating Rényi's α-cross-entropies in a
  matrix-based way" (arXiv 2109.11737; notebook ``isledge/MBRCE:MB-RenyisCrossEntropy.ipynb``, Def. 3),
  D_α(C_x‖C_y) = (α − 1)⁻¹ log₂ tr(C_x^α C_y^{1−α}), evaluated without pairing the samples through the kernel
  trick C^β = Φ (A)^{β−1} Φᵀ / tr K:
  (α − 1)⁻¹ log₂ { tr[(A_x + εI)^{α−1} K_xy (A_y + εI)^{−α} K_xyᵀ] / (tr K_xx · tr K_yy) }.
  The ε turns C^{β} into C(C + ε)^{β−1}, finite on rank-deficient Gram matrices; it biases D(x, x) by at
  most −log₂(1 − nε)/(α − 1). For α > 1 the Petz divergence is +∞ unless supp C_x ⊆ supp C_y, which two
  distinct finite sample sets never satisfy: then the value is governed by ε; prefer α ∈ (0, 1) (the notebook
  sweeps 0.05…0.95) or ``cs2``.
- ``logistic`` — not a kernel divergence: ALAE's adversarial term (Pidhorskyi, Adjeroh & Doretto, CVPR 2020),
  the baseline. x and y are then the *logits* of ALAE's latent discriminator head (MappingD∘E) on real and
  generated samples, and the value is the variational Jensen–Shannon lower bound in bits,
  [2 ln 2 − mean softplus(−d_x) − mean softplus(d_y)] / (2 ln 2), equal to JS(p‖q) at the Bayes-optimal
  logits ln p/q. −2 ln 2 · D is ALAE's discriminator loss up to the constant 2 ln 2.

**Bandwidth.** The estimators are defined for one fixed kernel shared by both sample sets (Sledge &
Príncipe's notebook fixes a Laplacian kernel of bandwidth 1 on data of a known scale). Codes learnt by an
encoder have no fixed scale, so the default bandwidth is the median heuristic, pooled over x and y, and it
is kept in the graph (``bandwidth_grad=True``): the value is the paper's estimator with the kernel at that
bandwidth, and as a function of the samples it depends only on their shape — D(s·x, s·y) = D(x, y), so its
gradient has no component along the common scale. Dividing the pooled samples by the square root of the
median squared distance and using σ² = 1 is the same function with the same gradient. A detached median
(``bandwidth_grad=False``, the earlier behaviour) or a fixed ``sigma2`` leaves the common scale free: with a
kernel that does not follow the samples, scaling both sets up lowers the cross and the self kernel values
at different rates, and an encoder maximising D finds that direction instead of separating the sets.

**Cross-entropies** (:func:`renyi_cross_entropy`): the notebook's two bipartite measures on *paired* sets
(x_i ↔ y_i), done as defined: the matrix, not its trace, is raised to α; no absolute values; bits.

**Gradients.** Autograd through ``torch.linalg.eigh`` divides by eigenvalue gaps, which is NaN at repeated
eigenvalues (I/n, duplicated samples). The spectral functions here are custom autograd Functions whose
backward never divides by a gap: tr f(A) has gradient f′(A) (:func:`trace_power`), and the matrix power
uses the Daleckii–Krein formula with divided differences that fall back to f′ on (near-)equal eigenvalues
(:func:`shifted_matrix_power`; Higham, "Functions of Matrices", SIAM 2008, §3.2). These backwards are
``once_differentiable``: a double backward (e.g. an R1 penalty through ``spectral``) raises instead of
returning a wrong value; ``cs2``/``jr2`` use plain autograd and support it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

Kernel = Literal["gaussian", "laplacian"]
Estimator = Literal["cs2", "jr2", "spectral", "logistic"]
KERNELS: tuple[str, ...] = ("gaussian", "laplacian")
ESTIMATORS: tuple[str, ...] = ("cs2", "jr2", "spectral", "logistic")

# Derivatives of λ^p (p < 1) and ln λ blow up at λ = 0; eigenvalues below this fraction of the largest are
# raised to it in derivatives only (values set round-off eigenvalues to exactly 0, see _drop_roundoff).
EIG_FLOOR = 1e-12
DEFAULT_EPS = 1e-6
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------- validation
def _check_alpha(alpha: float, key: str = "alpha") -> float:
    a = float(alpha)
    if not math.isfinite(a) or a <= 0:
        raise ValueError(f"{key} (the Rényi order) must be a finite number > 0, got {alpha!r}")
    return a


def _check_eps(eps: float) -> float:
    e = float(eps)
    if not math.isfinite(e) or e <= 0:
        raise ValueError(f"eps (the Gram-matrix regulariser of the matrix powers) must be > 0, got {eps!r}")
    return e


def _check_kernel(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


def _check_samples(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D (n, d) tensor of n ≥ 1 samples, got {shape}; "
                         "flatten codes or images with .flatten(1)")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_pair(x: Tensor, y: Tensor) -> None:
    _check_samples(x, "x")
    _check_samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature dimension, got x {tuple(x.shape)} and "
                         f"y {tuple(y.shape)}")
    if x.dtype != y.dtype or x.device != y.device:
        raise ValueError(f"x and y must share dtype and device, got {x.dtype}/{x.device} and {y.dtype}/{y.device}")


def _check_square(A: Tensor, name: str = "A") -> None:
    if not isinstance(A, Tensor) or A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
        shape = tuple(A.shape) if isinstance(A, Tensor) else type(A).__name__
        raise ValueError(f"{name} must be a square (n, n) Gram matrix, got {shape}")
    if not A.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {A.dtype}")


# --------------------------------------------------------------------------------------- kernels
def _self_sq_dists(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances within x (n, n): ≥ 0, exactly symmetric, zero diagonal."""
    # ‖x_i‖² + ‖x_j‖² − 2x_iᵀx_j loses digits when the norms dwarf the distances; distances are translation
    # invariant, so centre on the (detached) mean first.
    x = x - x.detach().mean(dim=0)
    sq = x.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.mT)).clamp_min(0.0)
    d2 = 0.5 * (d2 + d2.mT)
    return d2.masked_fill(torch.eye(x.shape[0], dtype=torch.bool, device=x.device), 0.0)


def _median_of_pairs(d2: Tensor, grad: bool = True) -> Tensor:
    """(Lower) median of the off-diagonal entries of a self squared-distance matrix, never 0.

    ``grad=False``: a constant. ``grad=True``: the same value, written as (median / mean) · mean with the
    ratio held constant and the mean of the pairs in the graph, so the bandwidth follows a rescaling of the
    samples (the median and the mean both scale by s²) and its gradient is spread over all samples — the
    median's own gradient would land on the one pair that is the median.
    """
    n = d2.shape[0]
    if n < 2:
        raise ValueError("the median bandwidth needs at least 2 samples in total; pass sigma2 explicitly")
    iu = torch.triu_indices(n, n, offset=1, device=d2.device)
    pairs = d2[iu[0], iu[1]]
    mean = pairs.mean()
    med, mean_c = pairs.detach().median(), mean.detach()
    # torch.where, not `if`: no host sync on CUDA.
    value = torch.where(med > 0, med, torch.where(mean_c > 0, mean_c, torch.ones_like(mean_c)))
    if not grad:
        return value
    follow = torch.where(mean_c > 0, mean / mean_c.clamp_min(torch.finfo(mean_c.dtype).tiny), torch.ones_like(mean))
    return value * follow


def median_sigma2(*xs: Tensor, grad: bool = False) -> Tensor:
    """Median heuristic bandwidth σ²: the (lower) median of the pooled pairwise squared distances.

    Falls back to their mean when more than half the pairs coincide, and to 1 when all points coincide,
    so the bandwidth is always > 0. Detached unless ``grad=True`` (see ``bandwidth_grad`` of
    :func:`renyi_divergence`).
    """
    return _median_of_pairs(_self_sq_dists(torch.cat([x if grad else x.detach() for x in xs])), grad)


def _resolve_sigma2(sigma2: float | Tensor | None, d2: Tensor, bandwidth_grad: bool = True) -> Tensor:
    """σ² as a 0-dim tensor like d2: the median of d2's pairs when ``sigma2`` is None (in the graph when
    ``bandwidth_grad``), else the given value, validated and constant."""
    if sigma2 is None:
        return _median_of_pairs(d2, bandwidth_grad)
    value = sigma2.detach() if isinstance(sigma2, Tensor) else torch.tensor(float(sigma2), dtype=torch.float64)
    if value.numel() != 1 or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"sigma2 (the kernel bandwidth σ²) must be a finite number > 0 or None for the "
                         f"median heuristic, got {sigma2!r}")
    return value.reshape(()).to(dtype=d2.dtype, device=d2.device)


def _log_kernel(d2: Tensor, sigma2: Tensor, kernel: str) -> Tensor:
    """ln κ from squared distances: Gaussian −d²/(2σ²), Laplacian −d/σ with σ = √sigma2."""
    if kernel == "gaussian":
        return -d2 / (2.0 * sigma2)
    # √ has an infinite slope at 0: clamp so coincident points (the diagonal) get a zero gradient, not NaN.
    return -torch.sqrt(d2.clamp_min(torch.finfo(d2.dtype).tiny)) / torch.sqrt(sigma2)


def normalized_gram(x: Tensor, sigma2: float | Tensor | None = None, kernel: Kernel = "gaussian", *,
                    bandwidth_grad: bool = True) -> Tensor:
    """A = K / tr K for the samples x (n, d) (Sanchez Giraldo, Rao & Príncipe 2015).

    ``kernel="gaussian"``: K_ij = exp(−‖x_i − x_j‖² / (2σ²)); ``"laplacian"``: exp(−‖x_i − x_j‖ / σ), the
    kernel the MBRCE notebook actually uses (``exp(-pdist(X)/bandwidth)``). ``sigma2`` is σ²; ``None``
    takes the median of the pairwise squared distances (:func:`median_sigma2`; differentiated through when
    ``bandwidth_grad``, so A is invariant to rescaling x), which for the Laplacian kernel makes σ the median
    distance. Both kernels are infinitely divisible with κ(x, x) = 1, so
    A_ii = 1/n. Returns a symmetric positive semi-definite (n, n) matrix of unit trace.
    """
    _check_samples(x, "x")
    _check_kernel(kernel)
    d2 = _self_sq_dists(x)
    K = torch.exp(_log_kernel(d2, _resolve_sigma2(sigma2, d2, bandwidth_grad), kernel))
    return K / K.diagonal().sum()


# --------------------------------------------------------------------------------------- spectral Functions
def _sym_eigh64(A: Tensor) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of the symmetric part of A, in fp64 (ascending eigenvalues)."""
    A64 = A.detach().to(torch.float64)
    return torch.linalg.eigh(0.5 * (A64 + A64.mT))


def _drop_roundoff(lam: Tensor) -> Tensor:
    """Eigenvalues ≤ n·ε_fp64·λ_max set to 0: below the eigensolver's own round-off they are noise, and for
    α < 1 their λ^α (1e-16^0.5 = 1e-8) would otherwise add up to a visible bias (numpy's rank rule)."""
    tol = lam.shape[0] * torch.finfo(lam.dtype).eps * lam[-1].clamp_min(0.0)
    return torch.where(lam > tol, lam, torch.zeros_like(lam))


def _floored(lam: Tensor) -> Tensor:
    return lam.clamp_min(EIG_FLOOR * lam[-1].clamp_min(torch.finfo(lam.dtype).tiny))


class _TracePower(torch.autograd.Function):
    """tr(A^α) = Σ λ_i^α of the symmetric part of A (round-off and negative eigenvalues → 0); gradient
    α·A^(α−1) (symmetric)."""

    @staticmethod
    def forward(ctx: FunctionCtx, A: Tensor, alpha: float) -> Tensor:
        lam, U = _sym_eigh64(A)
        lam = _drop_roundoff(lam)
        ctx.save_for_backward(lam, U)
        ctx.alpha, ctx.dtype = alpha, A.dtype
        return lam.pow(alpha).sum().to(A.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        lam, U = ctx.saved_tensors
        # d tr f(A) = tr(f′(A) dA): a matrix function of A, unique even when eigenvectors are not.
        fprime = ctx.alpha * _floored(lam).pow(ctx.alpha - 1.0)
        G = (U * fprime) @ U.mT
        return (grad.to(torch.float64) * G).to(ctx.dtype), None


class _TraceXLogX(torch.autograd.Function):
    """tr(A ln A) = Σ λ_i ln λ_i (0 ln 0 = 0) of the symmetric part of A; gradient ln A + I."""

    @staticmethod
    def forward(ctx: FunctionCtx, A: Tensor) -> Tensor:
        lam, U = _sym_eigh64(A)
        lam = _drop_roundoff(lam)
        ctx.save_for_backward(lam, U)
        ctx.dtype = A.dtype
        return torch.special.xlogy(lam, lam).sum().to(A.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> Tensor:
        lam, U = ctx.saved_tensors
        G = (U * (torch.log(_floored(lam)) + 1.0)) @ U.mT
        return (grad.to(torch.float64) * G).to(ctx.dtype)


def _power_divided_differences(a: Tensor, p: float) -> Tensor:
    """F_ij = (a_i^p − a_j^p) / (a_i − a_j), and p·a_i^(p−1) where a_i = a_j; a > 0.

    Written as a_j^(p−1) · expm1(p·r) / expm1(r) with r = ln(a_i / a_j): exact as a_i → a_j, where the plain
    quotient cancels catastrophically, and never divides by a zero gap.
    """
    log_a = torch.log(a)
    r = log_a[:, None] - log_a[None, :]
    near = r.abs() < 1e-8
    safe_r = torch.where(near, torch.ones_like(r), r)
    ratio = torch.where(near, p * (1.0 + 0.5 * (p - 1.0) * r), torch.expm1(p * safe_r) / torch.expm1(safe_r))
    return torch.exp((p - 1.0) * log_a)[None, :] * ratio


class _ShiftedMatrixPower(torch.autograd.Function):
    """(A + εI)^p of the symmetric part of A (negative eigenvalues clamped to 0), with the Daleckii–Krein
    backward ∂ = U (F ∘ (Uᵀ Ḡ U)) Uᵀ, F the divided differences of x ↦ x^p (Higham 2008, §3.2)."""

    @staticmethod
    def forward(ctx: FunctionCtx, A: Tensor, p: float, eps: float) -> Tensor:
        lam, U = _sym_eigh64(A)
        a = lam.clamp_min(0.0) + eps
        ctx.save_for_backward(a, U)
        ctx.p, ctx.dtype = p, A.dtype
        return ((U * a.pow(p)) @ U.mT).to(A.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        a, U = ctx.saved_tensors
        G = grad.to(torch.float64)
        G = 0.5 * (G + G.mT)  # the forward reads only the symmetric part of A
        inner = _power_divided_differences(a, ctx.p) * (U.mT @ G @ U)
        return (U @ inner @ U.mT).to(ctx.dtype), None, None


def trace_power(A: Tensor, alpha: float) -> Tensor:
    """tr(A^α) = Σ_i λ_i^α for a symmetric PSD matrix A via fp64 ``eigh``; eigenvalues below n·ε_fp64·λ_max
    (round-off, including negative ones) count as 0.

    Gradient α·A^(α−1), finite at repeated eigenvalues; eigenvalues below ``EIG_FLOOR``·λ_max are floored
    in the gradient (it is infinite at λ = 0 for α < 1). Only the symmetric part of A is read.
    """
    _check_square(A)
    return _TracePower.apply(A, _check_alpha(alpha))


def shifted_matrix_power(A: Tensor, p: float, eps: float = DEFAULT_EPS) -> Tensor:
    """(A + εI)^p for a symmetric PSD matrix A (eigenvalues < 0 clamped to 0), any real p, ε > 0.

    fp64 ``eigh``; the Daleckii–Krein backward keeps gradients finite at repeated eigenvalues.
    """
    _check_square(A)
    return _ShiftedMatrixPower.apply(A, float(p), _check_eps(eps))


# --------------------------------------------------------------------------------------- entropy
def renyi_entropy(A: Tensor, alpha: float) -> Tensor:
    """Matrix-based Rényi α-entropy S_α(A) = (1 − α)⁻¹ log₂ tr(A^α), in bits (Sanchez Giraldo et al. 2015).

    A is a PSD Gram matrix; it is divided by its trace first, so K and K / tr K give the same value (and
    the same gradient for a unit-trace A). α = 2 uses tr(A²) = ‖A‖²_F: no eigendecomposition. α = 1 is the
    von Neumann entropy −tr(A log₂ A), computed exactly rather than as a limit. Other α: fp64 ``eigh``.
    Closed forms: S_α(I/n) = log₂ n for every α; S_α(rank-1) = 0; 0 ≤ S_α ≤ log₂ n; non-increasing in α.
    """
    _check_square(A)
    a = _check_alpha(alpha)
    A = A / A.diagonal().sum()
    if a == 2.0:
        return -torch.log2(A.pow(2).sum())
    if a == 1.0:
        return -_TraceXLogX.apply(A) / _LN2
    return torch.log2(_TracePower.apply(A, a)) / (1.0 - a)


# --------------------------------------------------------------------------------------- divergences
def _gram_from_log(log_k: Tensor) -> Tensor:
    """K / tr K from ln K."""
    K = log_k.exp()
    return K / K.diagonal().sum()


def _log_grams(x: Tensor, y: Tensor, sigma2: float | Tensor | None, kernel: str,
               bandwidth_grad: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """ln K_xx, ln K_yy, ln K_xy with one bandwidth (the pooled median when ``sigma2`` is None)."""
    # One pooled distance matrix serves the median and all three blocks: half the work of computing them
    # separately.
    n = x.shape[0]
    d2 = _self_sq_dists(torch.cat((x, y)))
    log_k = _log_kernel(d2, _resolve_sigma2(sigma2, d2, bandwidth_grad), kernel)
    return log_k[:n, :n], log_k[n:, n:], log_k[:n, n:]


def _ln_sq_frobenius(log_k: Tensor) -> Tensor:
    """ln ‖K‖²_F from ln K by log-sum-exp: no underflow, and a live gradient, for sets far apart."""
    return torch.logsumexp((2.0 * log_k).flatten(), dim=0)


def _cs2(log_kxx: Tensor, log_kyy: Tensor, log_kxy: Tensor) -> Tensor:
    """−log₂[‖K_xy‖⁴_F / (‖K_xx‖²_F ‖K_yy‖²_F)] from log-kernel matrices (bits)."""
    return (_ln_sq_frobenius(log_kxx) + _ln_sq_frobenius(log_kyy) - 2.0 * _ln_sq_frobenius(log_kxy)) / _LN2


def _jr2(log_kxx: Tensor, log_kyy: Tensor, log_kxy: Tensor) -> Tensor:
    """S₂(A_pooled) − ½(S₂(A_x) + S₂(A_y)) from log-kernel matrices with unit diagonal (bits).

    S₂(A) = −log₂(‖K‖²_F / (tr K)²) and the pooled Gram matrix [[K_xx, K_xy], [K_xyᵀ, K_yy]] has
    ‖·‖²_F = ‖K_xx‖²_F + 2‖K_xy‖²_F + ‖K_yy‖²_F and trace n + m.
    """
    n, m = log_kxx.shape[0], log_kyy.shape[0]
    lxx, lyy, lxy = _ln_sq_frobenius(log_kxx), _ln_sq_frobenius(log_kyy), _ln_sq_frobenius(log_kxy)
    l_pool = torch.logsumexp(torch.stack((lxx, lyy, lxy + _LN2)), dim=0)
    s_pool = 2.0 * math.log(n + m) - l_pool
    s_x, s_y = 2.0 * math.log(n) - lxx, 2.0 * math.log(m) - lyy
    return (s_pool - 0.5 * (s_x + s_y)) / _LN2


def _spectral(log_kxx: Tensor, log_kyy: Tensor, log_kxy: Tensor, alpha: float,
                        eps: float = DEFAULT_EPS) -> Tensor:
    """Unpaired Petz form (α − 1)⁻¹ log₂{tr[(A_x+εI)^{α−1} K_xy (A_y+εI)^{−α} K_xyᵀ] / (tr K_xx tr K_yy)}.

    Computed in fp64 (the powers span many decades; fp32 sums of mixed-sign products lose the value) and
    returned in the input dtype. K_xy is scaled by e^{−max ln K_xy} before the product so far-apart sets do
    not underflow to log 0.
    """
    dtype = log_kxy.dtype
    lxx, lyy, lxy = log_kxx.double(), log_kyy.double(), log_kxy.double()
    kxx, kyy = lxx.exp(), lyy.exp()
    tr_x, tr_y = kxx.diagonal().sum(), kyy.diagonal().sum()
    shift = lxy.detach().max()
    kxy = torch.exp(lxy - shift)
    P = _ShiftedMatrixPower.apply(kxx / tr_x, alpha - 1.0, eps)
    Q = _ShiftedMatrixPower.apply(kyy / tr_y, -alpha, eps)
    # tr(P K Q Kᵀ) = Σ_ij (P K Q)_ij K_ij
    log_t = torch.log(((P @ kxy @ Q) * kxy).sum()) + 2.0 * shift - torch.log(tr_x * tr_y)
    return (log_t / ((alpha - 1.0) * _LN2)).to(dtype)


def _logits(v: Tensor, name: str) -> Tensor:
    if not isinstance(v, Tensor) or not v.is_floating_point() or v.numel() < 1 or not (
            v.dim() == 1 or (v.dim() == 2 and v.shape[1] == 1)):
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"estimator='logistic' takes discriminator logits of shape (n,) or (n, 1) as {name} "
                         f"(ALAE's MappingD output on the codes), got {shape}")
    return v.reshape(-1)


def logistic_divergence(d_x: Tensor, d_y: Tensor) -> Tensor:
    """Variational Jensen–Shannon lower bound in bits from discriminator logits (ALAE's adversarial term).

    [2 ln 2 − mean softplus(−d_x) − mean softplus(d_y)] / (2 ln 2) ≤ JS(p‖q) ≤ 1, with equality at the
    Bayes-optimal logits d = ln p/q (Goodfellow et al., NeurIPS 2014, Thm. 1). Maximising it over the
    discriminator is ALAE's D step (its loss is −2 ln 2·D + 2 ln 2); ALAE's G step is the non-saturating
    mean softplus(−d_y), not −D.
    """
    d_x, d_y = _logits(d_x, "x"), _logits(d_y, "y")
    return (2.0 * _LN2 - F.softplus(-d_x).mean() - F.softplus(d_y).mean()) / (2.0 * _LN2)


def renyi_divergence(x: Tensor, y: Tensor, alpha: float = 2.0, estimator: Estimator = "cs2",
                     sigma2: float | Tensor | None = None, *, kernel: Kernel = "gaussian",
                     eps: float = DEFAULT_EPS, bandwidth_grad: bool = True) -> Tensor:
    """Matrix-based divergence between the sample sets x (n, d) and y (m, d), in bits (a 0-dim tensor).

    ``estimator``: ``"cs2"`` (α = 2 Cauchy–Schwarz, no eigensolver, the default), ``"jr2"`` (α = 2
    Jensen–Rényi), ``"spectral"`` (unpaired Petz form, any α > 0 except 1, fp64 eigh, ``eps`` regularises the
    matrix powers) or ``"logistic"`` (x, y are discriminator logits; see :func:`logistic_divergence`);
    formulas and properties in the module docstring. One bandwidth ``sigma2`` (σ²) serves x, y and the
    cross term; ``None`` is the median of the pooled pairwise squared distances. With ``bandwidth_grad``
    (default) the gradient flows through that median too, so D(s·x, s·y) = D(x, y) for every s > 0 and the
    gradient has no component along the common scale (Σ_i x_i·∂D/∂x_i + Σ_j y_j·∂D/∂y_j = 0, Euler); with
    ``bandwidth_grad=False`` the median is a constant in the backward pass, and enlarging both sets lowers
    every kernel value against it — a direction a maximising encoder follows without making the two sets any
    more distinguishable. ``cs2``/``jr2``/``spectral`` are invariant to the row order of x and of y;
    ``cs2``/``jr2`` are symmetric in (x, y). ``alpha``, ``sigma2`` and ``bandwidth_grad`` are ignored by
    ``logistic``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    a = _check_alpha(alpha)
    if estimator == "logistic":
        return logistic_divergence(x, y)
    _check_pair(x, y)
    _check_kernel(kernel)
    if estimator in ("cs2", "jr2") and a != 2.0:
        raise ValueError(f"estimator={estimator!r} is the α = 2 form; set alpha=2 or use estimator='spectral' "
                         f"for alpha={alpha!r}")
    if estimator == "spectral" and a == 1.0:
        raise ValueError("estimator='spectral' is undefined at alpha=1 (its (α−1)⁻¹ prefactor); use an alpha "
                         "near 1, e.g. 0.99 as the MBRCE notebook does")
    logs = _log_grams(x, y, sigma2, kernel, bandwidth_grad)
    if estimator == "cs2":
        return _cs2(*logs)
    if estimator == "jr2":
        return _jr2(*logs)
    return _spectral(*logs, alpha=a, eps=_check_eps(eps))


# --------------------------------------------------------------------------------------- cross-entropies
def renyi_cross_entropy(x: Tensor, y: Tensor, alpha: float, mirrored: bool = False,
                        sigma2: float | Tensor | None = None, *, kernel: Kernel = "gaussian",
                        eps: float = DEFAULT_EPS, bandwidth_grad: bool = True) -> Tensor:
    """The bipartite matrix-based Rényi α-cross-entropies of Sledge & Príncipe (arXiv 2109.11737), in bits.

    κ₁, κ₂ are the normalised Gram matrices A_x, A_y of *paired* samples (row i of x goes with row i of y,
    as in the notebook ``isledge/MBRCE``, Defs. 3–4), one shared bandwidth, each regularised to
    (A + εI)/(1 + nε): a little of the maximally mixed state mixed in, so negative powers exist while the
    trace stays 1 — the definitions' ``log tr κ₁`` normaliser is then 0 and C(x, x) is exactly 0.

    - ``mirrored=False``: C_α(κ₁‖κ₂) = (α − 1)⁻¹ log₂ tr(κ₁^α κ₂^{1−α})  (Petz form);
    - ``mirrored=True``: C′_α(κ₁‖κ₂) = (α − 1)⁻¹ log₂ tr[(κ₂^p κ₁ κ₂^p)^α], p = (1 − α)/(2α)
      (sandwiched form; the *matrix* is raised to α — the notebook raises its trace instead).

    Both are ≥ 0 for α ∈ (0, 2] (Petz) and α ≥ ½ (sandwiched), and C′_α ≤ C_α. The value depends on how x
    and y are paired (a joint permutation of the rows leaves it unchanged, a permutation of y alone does
    not); :func:`renyi_divergence` with ``estimator="spectral"`` is the unpaired Petz form. ``sigma2`` and
    ``bandwidth_grad`` as in :func:`renyi_divergence`.
    """
    _check_pair(x, y)
    _check_kernel(kernel)
    a = _check_alpha(alpha)
    if a == 1.0:
        raise ValueError("renyi_cross_entropy is undefined at alpha=1 (its (α−1)⁻¹ prefactor); use an alpha "
                         "near 1, e.g. 0.99 as the MBRCE notebook does")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"renyi_cross_entropy pairs x[i] with y[i], so x and y need the same number of rows, "
                         f"got {x.shape[0]} and {y.shape[0]}; for unpaired sets use "
                         "renyi_divergence(..., estimator='spectral')")
    e = _check_eps(eps)
    log_kxx, log_kyy, _ = _log_grams(x, y, sigma2, kernel, bandwidth_grad)
    a1, a2 = _gram_from_log(log_kxx.double()), _gram_from_log(log_kyy.double())
    # With c = 1 + nε, κ = (A + εI)/c, so κ^q = (A + εI)^q · c^(−q); in both forms the powers of c add up to
    # c^(−1): −α − (1 − α) = −1, and −α(2p + 1) = −1.
    ln_c = math.log1p(x.shape[0] * e)
    if not mirrored:
        t = (_ShiftedMatrixPower.apply(a1, a, e) * _ShiftedMatrixPower.apply(a2, 1.0 - a, e)).sum()
    else:
        s = _ShiftedMatrixPower.apply(a2, (1.0 - a) / (2.0 * a), e)
        inner = s @ (a1 + e * torch.eye(a1.shape[0], dtype=a1.dtype, device=a1.device)) @ s
        t = _TracePower.apply(inner, a)
    return ((torch.log(t) - ln_c) / ((a - 1.0) * _LN2)).to(x.dtype)
