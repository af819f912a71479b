"""Mode-collapse metrics for 2D Gaussian mixtures, the protocol of VEEGAN (Srivastava et al., NeurIPS 2017,
Sec. 5.1) and PacGAN (Lin et al., NeurIPS 2018, Sec. 5.1; code fjxmlzn/PacGAN).

* A generated sample is *high quality* (HQ) when it lies within ``threshold`` standard deviations of its
  nearest mode centre (VEEGAN: 3σ; PacGAN's ``MetricLogger``: Mahalanobis distance < 3 with the diagonal
  variances, the same for isotropic modes; GDPP's ``evaluate_samples``: Euclidean distance <= 3·std).
* A mode is *captured* when it holds at least ``min_count`` HQ samples and at least ``min_fraction`` of all
  scored samples. The papers count a mode with one HQ sample (VEEGAN's "nearest to at least one high quality
  sample"; PacGAN and GDPP count the non-empty bins): ``min_count=1, min_fraction=0``. The platform's default
  (0.008, "20 of 2,500") asks for a share, so that a stray sample does not count.
* Reverse KL = KL(p̂ ‖ U_K) = ln K − H(p̂), with p̂ the mode histogram of the HQ samples (PacGAN, Table 1).

Nearest centres come from float64 differences (not the ``‖x‖² + ‖c‖² − 2x·c`` matrix product), as the
papers' NumPy code computes them: in GDPP's ring two means coincide up to sin(2π) ≈ −2.4e−16, and which of the
two a sample goes to (so whether the doubled mode counts once or twice) depends on that difference.

:class:`ToyModeStats` is the toy evaluator's metric (``evaluator.metrics.modes``); the HQ / capture rules are
the evaluator's keys (``evaluator.threshold``, ``min_fraction``, ``min_count``): the protocol every toy metric,
``python -m gancollapse.score`` and ``python -m gancollapse.sample`` share.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ModeStats:
    modes: int
    n_modes: int
    hq_fraction: float
    reverse_kl: float

    def as_dict(self, prefix: str = "toy/") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


def assign_modes(samples: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centre index (the first on a tie) and Euclidean distance to it, for each sample, in float64."""
    d = torch.cdist(samples.double(), centers.double().to(samples.device), compute_mode="donot_use_mm_for_euclid_dist")
    dist, idx = d.min(dim=1)
    return idx, dist


def mode_histogram(samples: Tensor, centers: Tensor, std: float, threshold: float = 3.0) -> tuple[Tensor, Tensor]:
    """(counts of HQ samples per mode, HQ mask)."""
    idx, dist = assign_modes(samples, centers)
    hq = dist <= threshold * std
    counts = torch.bincount(idx[hq], minlength=len(centers))
    return counts, hq


def reverse_kl_to_uniform(counts: Tensor) -> float:
    """KL(p̂ ‖ U_K) in nats; NaN when no sample is HQ (the histogram is undefined)."""
    total = counts.sum().item()
    if total == 0:
        return float("nan")
    p = counts.double() / total
    nz = p[p > 0]
    return float(math.log(len(counts)) + (nz * nz.log()).sum().item())


def captured_modes(counts: Tensor, n_scored: int, min_fraction: float = 0.008, min_count: int = 1) -> int:
    """Modes whose HQ count is at least ``min_count`` and at least ``min_fraction`` of the ``n_scored`` samples."""
    need = max(float(min_count), float(min_fraction) * int(n_scored))
    return int((counts >= need).sum().item())


def mode_stats(samples: Tensor, centers: Tensor, std: float, threshold: float = 3.0, min_fraction: float = 0.008,
               min_count: int = 1) -> ModeStats:
    """Modes captured, HQ fraction and reverse KL of ``samples`` against the mixture's centres."""
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    if samples.shape[0] == 0:
        raise ValueError("mode_stats needs at least one sample")
    check_rules(threshold, min_fraction, min_count)
    counts, hq = mode_histogram(samples, centers, std, threshold)
    captured = captured_modes(counts, samples.shape[0], min_fraction, min_count)
    return ModeStats(captured, len(centers), float(hq.float().mean().item()), reverse_kl_to_uniform(counts))


def check_rules(threshold: float, min_fraction: float, min_count: int, prefix: str = "evaluator.") -> None:
    """One-line errors for HQ / capture rules no paper could mean."""
    if not float(threshold) > 0:
        raise ValueError(f"{prefix}threshold={threshold}: must be > 0 (standard deviations; the papers use 3)")
    if not 0.0 <= float(min_fraction) <= 1.0:
        raise ValueError(f"{prefix}min_fraction={min_fraction}: must be in [0, 1] (a share of the scored samples)")
    if int(min_count) != min_count or int(min_count) < 1:
        raise ValueError(f"{prefix}min_count={min_count}: must be an integer >= 1 (HQ samples a captured mode holds; "
                         "the papers use 1)")


class ToyModeStats:
    """``toy/modes``, ``toy/n_modes``, ``toy/hq_fraction`` and ``toy/reverse_kl`` of the generated points
    (:func:`mode_stats`) under the evaluator's mixture and HQ / capture rules."""

    columns = {"toy/modes": ("modes", "{:.0f}"), "toy/hq_fraction": ("HQ %", "{:.1%}"),
               "toy/reverse_kl": ("reverse KL", "{:.3f}")}

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._points: list[Tensor] = []
        self._rules: tuple = ()

    def update(self, points: Tensor, centers: Tensor, std: float, threshold: float, min_fraction: float,
               min_count: int) -> None:
        self._points.append(points)
        self._rules = (centers, std, threshold, min_fraction, min_count)

    def compute(self) -> dict[str, float]:
        points = self._points[0] if len(self._points) == 1 else torch.cat(self._points)
        return mode_stats(points, *self._rules).as_dict()
