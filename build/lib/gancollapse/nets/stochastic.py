"""Stochastic discriminator heads and how to read them deterministically.

MaEM's D (RealnessGAN's reparameterised head) returns D(x) = μ(x) + ε·exp(log σ²(x) / 2) with a fresh
ε ~ N(0, I) on every call. That noise belongs to training; anything that *scores* samples with a trained D
(the refined samplers, their calibration, evaluation statistics on D's codes) would otherwise score one random
draw per call, so two calls on the same input disagree and a seeded sampler does not reproduce. Such callers
wrap the scoring in :func:`deterministic`, which makes every stochastic head below the given modules return μ.

Protocol: a module with a stochastic head has a boolean attribute ``force_mean`` (default False) and returns μ
while it is True (:class:`gancollapse.nets.dcgan.DCGANDiscriminator`). Modules without it are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """μ + ε·exp(log σ² / 2), ε ~ N(0, I) (Kingma & Welling, 2014, Eq. 10; RealnessGAN's D head)."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def stochastic_heads(*nets: nn.Module | None) -> list[nn.Module]:
    """The submodules (the nets themselves included) that follow the ``force_mean`` protocol."""
    found: list[nn.Module] = []
    for net in nets:
        if net is None:
            continue
        found.extend(m for m in net.modules() if isinstance(getattr(m, "force_mean", None), bool))
    return found


@contextmanager
def deterministic(*nets: nn.Module | None, enabled: bool = True) -> Iterator[None]:
    """Within the block every stochastic head in ``nets`` returns its mean μ; restored afterwards.

    ``enabled=False`` is a no-op, so callers can keep one code path for a ``stochastic_d`` switch.
    """
    heads = stochastic_heads(*nets) if enabled else []
    saved = [h.force_mean for h in heads]
    for h in heads:
        h.force_mean = True
    try:
        yield
    finally:
        for h, s in zip(heads, saved, strict=True):
            h.force_mean = s
