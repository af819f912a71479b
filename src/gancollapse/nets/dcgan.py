"""DCGAN generators and discriminators (Radford et al., 2016) at 28, 32, 64 and 128 pixels.

The 32×32 defaults are MaEM-GAN's nets (Liu et al., AAAI'23; github.com/HaozheLiu-ST/MEE ``models.py``):

* G (no biases): z → ConvT(z→8b, k4 s1) + BN + ReLU → ConvT(8b→4b, k4 s2 p1) + BN + ReLU
  → ConvT(4b→2b) + BN + ReLU → ConvT(2b→C) + Tanh, with b = ``base`` = 64.
* D (no biases, no BN, spectral norm in MaEM): Conv(C→2b, k4 s2 p1) → 4b → 8b, each LeakyReLU(0.2),
  → flatten → Linear(→ m) or, with the stochastic head, Linear(→ 2m) = (μ, log σ²) and
  D(x) = μ + ε·exp(log σ² / 2), ε ~ N(0, I) drawn afresh on every call (RealnessGAN / MaEM). Scoring
  outside training reads μ instead, through :func:`gancollapse.nets.stochastic.deterministic`.
* Init: conv weights N(0, 0.02); BN γ ~ N(1, 0.02), β = 0; linear layers orthogonal.

DCGAN-64 (CelebA) adds one stage on each side (G widths 8b…b, D widths b…8b). The 28×28 variant (MNIST
without padding) keeps the 32-pixel widths; G's second layer uses k3 s2 p1 so that 4 → 7 → 14 → 28, and D's
stride-2 convolutions give 28 → 14 → 7 → 3.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gancollapse.nets.stochastic import reparameterize

SUPPORTED_SIZES = (28, 32, 64, 128)


def _check(img_size: int, channels: int, base: int, where: str) -> int:
    if int(img_size) not in SUPPORTED_SIZES:
        raise ValueError(f"model.{where}.img_size must be one of {SUPPORTED_SIZES}, got {img_size}")
    for key, val in {"channels": channels, "base": base}.items():
        if int(val) < 1:
            raise ValueError(f"model.{where}.{key} must be >= 1, got {val}")
    # Number of stride-2 stages between the 4×4 (3×3 for 28) map and the image.
    return 3 if img_size in (28, 32) else int(math.log2(img_size)) - 2


def _width(base: int, level: int) -> int:
    """Channel width ``level`` stages away from the 4×4 map: 8b, 4b, 2b, b, b/2 (floored at 1)."""
    return max(1, (base * 8) >> level)


def init_dcgan_(module: nn.Module, std: float = 0.02) -> None:
    """MaEM's init: conv N(0, std), BN γ N(1, std) and β 0, linear orthogonal (biases zero)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (N, z_dim) → image (N, channels, img_size, img_size) in [-1, 1].

    Args:
        z_dim: latent size.
        channels: image channels (3 RGB, 1 grey).
        base: width unit b; the first map has 8b channels.
        img_size: 28, 32, 64 or 128.
        batchnorm: BN after every hidden transposed conv (DCGAN; MaEM uses it).
        bias: biases in the transposed convs (MaEM: none).
    """

    def __init__(self, z_dim: int, channels: int = 3, base: int = 64, img_size: int = 32,
                 batchnorm: bool = True, bias: bool = False) -> None:
        super().__init__()
        if int(z_dim) < 1:
            raise ValueError(f"model.generator.z_dim must be >= 1, got {z_dim}")
        n_up = _check(img_size, channels, base, "generator")
        self.z_dim, self.channels, self.img_size = int(z_dim), int(channels), int(img_size)
        layers: list[nn.Module] = []
        width_in = self.z_dim
        for level in range(n_up):
            width = _width(base, level)
            if level == 0:
                conv = nn.ConvTranspose2d(width_in, width, 4, 1, 0, bias=bias)
            elif level == 1 and img_size == 28:
                conv = nn.ConvTranspose2d(width_in, width, 3, 2, 1, bias=bias)  # 4 → 7
            else:
                conv = nn.ConvTranspose2d(width_in, width, 4, 2, 1, bias=bias)
            layers += [conv, nn.BatchNorm2d(width) if batchnorm else nn.Identity(), nn.ReLU(inplace=True)]
            width_in = width
        layers += [nn.ConvTranspose2d(width_in, self.channels, 4, 2, 1, bias=bias), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """image (N, channels, img_size, img_size) → code (N, out_dim) (a score when out_dim = 1).

    Args:
        channels: image channels.
        base: width unit b; the last conv has 8b channels.
        img_size: 28, 32, 64 or 128.
        out_dim: code size m (MaEM: 16 on CIFAR-10, 32 on CelebA; 1 for a plain score).
        stochastic: reparameterised head μ + ε·exp(log σ² / 2), fresh ε each call (RealnessGAN, MaEM).
        deterministic_eval: with ``stochastic``, return μ whenever the module is in eval mode; off by default
            because the seed always samples. Samplers do not need it: they read μ through
            :func:`gancollapse.nets.stochastic.deterministic` (the ``force_mean`` attribute) in any mode.
        spectral_norm: wrap every conv and linear layer (Miyato et al., 2018).
        batchnorm: BN after every conv but the first (classic DCGAN D; off for MaEM and with SN).
        bias: biases in convs and head (MaEM: none).
        negative_slope: LeakyReLU slope (0.2).
    """

    def __init__(self, channels: int = 3, base: int = 64, img_size: int = 32, out_dim: int = 1,
                 stochastic: bool = False, deterministic_eval: bool = False, spectral_norm: bool = False,
                 batchnorm: bool = False, bias: bool = False, negative_slope: float = 0.2) -> None:
        super().__init__()
        n_down = _check(img_size, channels, base, "discriminator")
        if int(out_dim) < 1:
            raise ValueError(f"model.discriminator.out_dim must be >= 1, got {out_dim}")
        self.channels, self.img_size, self.out_dim = int(channels), int(img_size), int(out_dim)
        self.stochastic, self.deterministic_eval = bool(stochastic), bool(deterministic_eval)
        self.force_mean = False  # set by gancollapse.nets.stochastic.deterministic
        layers: list[nn.Module] = []
        width_in, size = self.channels, int(img_size)
        for i in range(n_down):
            width = _width(base, n_down - 1 - i)
            layers.append(nn.Conv2d(width_in, width, 4, 2, 1, bias=bias))
            if batchnorm and i > 0:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(negative_slope, inplace=True))
            width_in, size = width, size // 2
        self.features = nn.Sequential(*layers)
        self.flat_dim = width_in * size * size
        self.head = nn.Linear(self.flat_dim, self.out_dim * (2 if self.stochastic else 1), bias=bias)
        init_dcgan_(self)
        if spectral_norm:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    _sn(m)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """D(x); with ``return_features`` also the flattened last conv map (B, flat_dim), the head's input."""
        f = self.features(x).flatten(1)
        h = self.head(f)
        if self.stochastic:
            mu, logvar = h.chunk(2, dim=1)
            h = mu if self.force_mean or (self.deterministic_eval and not self.training) else reparameterize(mu, logvar)
        return (h, f) if return_features else h


class DCGAN32Generator(DCGANGenerator):
    """DCGAN-32 G (CIFAR-10; MaEM's G). ``img_size=28`` gives the unpadded MNIST variant."""

    def __init__(self, z_dim: int, channels: int = 3, base: int = 64, img_size: int = 32,
                 batchnorm: bool = True, bias: bool = False) -> None:
        if int(img_size) not in (28, 32):
            raise ValueError(f"model.generator.img_size must be 28 or 32 for DCGAN-32, got {img_size}")
        super().__init__(z_dim, channels, base, img_size, batchnorm, bias)


class DCGAN32Discriminator(DCGANDiscriminator):
    """DCGAN-32 D (MaEM's D with ``spectral_norm=True, stochastic=True, out_dim=16``)."""

    def __init__(self, channels: int = 3, base: int = 64, img_size: int = 32, out_dim: int = 1,
                 stochastic: bool = False, deterministic_eval: bool = False, spectral_norm: bool = False,
                 batchnorm: bool = False, bias: bool = False, negative_slope: float = 0.2) -> None:
        if int(img_size) not in (28, 32):
            raise ValueError(f"model.discriminator.img_size must be 28 or 32 for DCGAN-32, got {img_size}")
        super().__init__(channels, base, img_size, out_dim, stochastic, deterministic_eval, spectral_norm,
                         batchnorm, bias, negative_slope)


class DCGAN64Generator(DCGANGenerator):
    """DCGAN-64 G (CelebA 64×64)."""

    def __init__(self, z_dim: int, channels: int = 3, base: int = 64, batchnorm: bool = True,
                 bias: bool = False) -> None:
        super().__init__(z_dim, channels, base, 64, batchnorm, bias)


class DCGAN64Discriminator(DCGANDiscriminator):
    """DCGAN-64 D (CelebA 64×64)."""

    def __init__(self, channels: int = 3, base: int = 64, out_dim: int = 1, stochastic: bool = False,
                 deterministic_eval: bool = False, spectral_norm: bool = False, batchnorm: bool = False,
                 bias: bool = False, negative_slope: float = 0.2) -> None:
        super().__init__(channels, base, 64, out_dim, stochastic, deterministic_eval, spectral_norm,
                         batchnorm, bias, negative_slope)
