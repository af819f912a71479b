"""Mode-collapse metrics for 2D Gaussian mixtures, the protocol of VEEGAN (Srivastava et al., NeurIPS 2017,
Sec. 5.1) and PacGAN (Lin et al., NeurIPS 2018, Sec. 5.1; code fjxmlzn/PacGAN).

* A generated sample is *high quality* (HQ) when it lies within ``threshold`` standard deviations of its
  nearest mode centre (VEEGAN: 3σ).
* A mode is *captured* when at least ``min_fraction`` of all scored samples are HQ samples assigned to it
  (VEEGAN: 20 of 2,500 = 0.8%).
* Reverse KL = KL(p̂ ‖ U_K) = ln K − H(p̂), with p̂ the mode histogram of the HQ samples (PacGAN, Table 1).
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
    """Nearest centre index and Euclidean distance to it, for each sample."""
    d = torch.cdist(samples.float(), centers.float().to(samples.device))
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


def mode_stats(samples: Tensor, centers: Tensor, std: float, threshold: float = 3.0, min_fraction: float = 0.008) -> ModeStats:
    """Modes captured, HQ fraction and reverse KL of ``samples`` against the mixture's centres."""
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    if samples.shape[0] == 0:
        raise ValueError("mode_stats needs at least one sample")
    counts, hq = mode_histogram(samples, centers, std, threshold)
    captured = int((counts >= min_fraction * samples.shape[0]).sum().item())
    return ModeStats(captured, len(centers), float(hq.float().mean().item()), reverse_kl_to_uniform(counts))
