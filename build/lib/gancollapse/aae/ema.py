"""Exponential moving average of network weights, as ALAE's sampling model (``model_s.lerp(model, betta)``).

ALAE (Pidhorskyi, Adjeroh & Doretto, CVPR 2020; ``podgorskiy/ALAE:train_alae.py``) keeps a shadow copy of its
networks and after every iteration moves each shadow parameter towards the live one,
``θ̄ ← β·θ̄ + (1 − β)·θ``, with β = 0.5^(batch / 10⁴): a half-life of 10k images, so β ≈ 0.9984 at batch 16.
Buffers (e.g. the mapping net's running mean of w, used for truncation) are copied, not averaged.
Samples and figures use the shadow networks; training never does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn


def ema_beta(batch_size: int, half_life_images: float = 10_000.0) -> float:
    """β = 0.5^(batch_size / half_life_images): the shadow forgets half of itself every ``half_life`` images."""
    if batch_size <= 0 or half_life_images <= 0:
        raise ValueError(f"ema batch_size and half_life_images must be > 0, got {batch_size}, {half_life_images}")
    return 0.5 ** (float(batch_size) / float(half_life_images))


class EMA(nn.Module):
    """Shadow copies of named modules, e.g. ``EMA({"mapping": alae.mapping, "generator": alae.generator})``.

    The shadows live in ``self.shadow`` (an ``nn.ModuleDict``: ``ema.shadow["generator"]``), have
    ``requires_grad=False``, stay in eval mode, follow ``.to(device)`` and go into ``state_dict()`` with the
    owning module. The live modules are passed again at every :meth:`update`, so they are not registered twice.
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not modules:
            raise ValueError("EMA needs at least one module to track")
        self.shadow = nn.ModuleDict({name: copy.deepcopy(m) for name, m in modules.items()})
        self.shadow.requires_grad_(False)
        self.shadow.eval()

    def train(self, mode: bool = True) -> EMA:
        # The shadows are sampling models: keep them in eval mode whatever the owner does.
        super().train(mode)
        self.shadow.eval()
        return self

    def __getitem__(self, name: str) -> nn.Module:
        return self.shadow[name]

    @torch.no_grad()
    def update(self, modules: Mapping[str, nn.Module], beta: float) -> None:
        """θ̄ ← β·θ̄ + (1 − β)·θ for every parameter; buffers copied. β = 0 copies, β = 1 freezes."""
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"ema beta must be in [0, 1], got {beta}")
        if set(modules) != set(self.shadow.keys()):
            raise ValueError(f"EMA tracks {sorted(self.shadow.keys())} but update got {sorted(modules)}")
        for name, live in modules.items():
            shadow = self.shadow[name]
            for (pn, p_bar), (qn, p) in zip(shadow.named_parameters(), live.named_parameters(), strict=True):
                if pn != qn:
                    raise ValueError(f"EMA[{name}] parameter mismatch: {pn} vs {qn}")
                p_bar.lerp_(p.detach(), 1.0 - beta)
            for b_bar, b in zip(shadow.buffers(), live.buffers(), strict=True):
                b_bar.copy_(b)
