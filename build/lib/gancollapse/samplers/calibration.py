"""D calibrator shared by the refined samplers (MH-GAN, DRS, REP-GAN, DDLS, WL-GAN).

MH-GAN (Turner et al. 2019, §3.3) and REP-GAN / WL-GAN need D's output to be a *calibrated* probability of
"real", so that its logit d(x) estimates log p_data(x)/p_g(x). Like the REP-GAN and WL-GAN seeds we fit a
one-dimensional logistic regression d(x) = a·ℓ(x) + b on D's raw logit ℓ(x), real = 1 vs generated = 0, on
held-out samples. The seeds run 5,000 full-batch SGD epochs on the same convex objective; we solve it by
Newton's method in float64, which reaches the same optimum deterministically in a few iterations.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def raw_logits(discriminator: nn.Module, x: Tensor, batch_size: int = 10_000) -> Tensor:
    """D's raw score per sample, shape (n,). A D with several outputs (a MaEM code vector) is averaged over
    them, as the objectives do."""
    out = [discriminator(chunk).reshape(chunk.shape[0], -1).mean(dim=1) for chunk in x.split(batch_size)]
    return torch.cat(out)


def brier_score(logits: Tensor, labels: Tensor) -> float:
    """Brier score mean((σ(logit) − y)²) of probabilistic predictions (lower is better calibrated)."""
    if logits.shape != labels.shape:
        raise ValueError(f"brier_score: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
    return float((torch.sigmoid(logits.double()) - labels.double()).pow(2).mean().item())


def fit_logistic_1d(scores: Tensor, labels: Tensor, l2: float = 1e-6, max_iter: int = 100,
                    tol: float = 1e-10) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of P(y=1 | s) = σ(a·s + b) by Newton–Raphson (IRLS).

    ``l2`` is a tiny ridge on (a, b) so that perfectly separable scores (an over-confident D) still give a
    finite, steep calibrator instead of diverging. Returns python floats.
    """
    s = scores.detach().double().flatten().cpu()
    y = labels.detach().double().flatten().cpu()
    if s.numel() != y.numel() or s.numel() < 2:
        raise ValueError("fit_logistic_1d needs as many labels as scores, at least 2")
    if not ((y == 0) | (y == 1)).all() or y.min() == y.max():
        raise ValueError("fit_logistic_1d needs labels of both classes 0 and 1")
    # Standardising the scores keeps the Hessian well conditioned whatever D's output scale.
    mu, sd = s.mean(), s.std().clamp_min(1e-12)
    x = torch.stack([(s - mu) / sd, torch.ones_like(s)], dim=1)
    w = torch.zeros(2, dtype=torch.float64)
    reg = torch.diag(torch.tensor([l2, l2], dtype=torch.float64)) * len(s)
    for _ in range(max_iter):
        p = torch.sigmoid(x @ w)
        grad = x.T @ (p - y) + reg @ w
        hess = (x.T * (p * (1 - p))) @ x + reg
        step = torch.linalg.solve(hess + 1e-12 * torch.eye(2, dtype=torch.float64), grad)
        w = w - step
        if step.abs().max() < tol:
            break
    a = w[0] / sd
    b = w[1] - w[0] * mu / sd
    return float(a), float(b)


class Calibrator(nn.Module):
    """d = a·ℓ + b applied to raw D logits ℓ; the identity until :meth:`fit` is called."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("a", torch.tensor(1.0))
        self.register_buffer("b", torch.tensor(0.0))
        self.fitted = False

    def forward(self, logits: Tensor) -> Tensor:
        return logits * self.a.to(logits) + self.b.to(logits)

    def fit(self, real_logits: Tensor, fake_logits: Tensor, l2: float = 1e-6) -> Calibrator:
        scores = torch.cat([real_logits.flatten(), fake_logits.flatten()])
        labels = torch.cat([torch.ones(real_logits.numel()), torch.zeros(fake_logits.numel())])
        a, b = fit_logistic_1d(scores, labels, l2=l2)
        self.a.fill_(a)
        self.b.fill_(b)
        self.fitted = True
        return self


def calibration_report(calibrator: Calibrator, real_logits: Tensor, fake_logits: Tensor) -> dict[str, float]:
    """Brier scores of the raw and calibrated D on (held-out) real and generated logits."""
    logits = torch.cat([real_logits.flatten(), fake_logits.flatten()]).detach().cpu()
    labels = torch.cat([torch.ones(real_logits.numel()), torch.zeros(fake_logits.numel())])
    cal = logits.double() * float(calibrator.a) + float(calibrator.b)
    return {"calibration/brier_raw": brier_score(logits, labels),
            "calibration/brier_calibrated": brier_score(cal, labels),
            "calibration/a": float(calibrator.a), "calibration/b": float(calibrator.b)}
