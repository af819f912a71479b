"""Spectral normalisation (Miyato et al., 2018) applied once to the nets' weight layers."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gancollapse.regularizers.base import Regularizer

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def apply_spectral_norm(net: nn.Module, n_power_iterations: int = 1) -> int:
    """Wrap every Linear/Conv layer of ``net`` that is not already normalised. Returns how many."""
    count = 0
    for module in list(net.modules()):
        if isinstance(module, _LAYERS) and not _has_sn(module):
            spectral_norm(module, n_power_iterations=n_power_iterations)
            count += 1
    return count


def _has_sn(module: nn.Module) -> bool:
    params = getattr(module, "parametrizations", None)
    return params is not None and "weight" in params


class SpectralNorm(Regularizer):
    def __init__(self, discriminator: bool = True, generator: bool = False, n_power_iterations: int = 1) -> None:
        super().__init__()
        self.on_d = bool(discriminator)
        self.on_g = bool(generator)
        self.n_power_iterations = int(n_power_iterations)

    def apply_to_nets(self, generator: nn.Module, discriminator: nn.Module) -> None:
        if self.on_d:
            apply_spectral_norm(discriminator, self.n_power_iterations)
        if self.on_g:
            apply_spectral_norm(generator, self.n_power_iterations)
