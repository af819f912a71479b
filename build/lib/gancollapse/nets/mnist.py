"""DCGAN nets for 28×28 images, as in the Dist-GAN reference (tntrung/gan ``models_dcgan.py``, MNIST).

Reference layout (TF "SAME" padding, kernel 5, stride 2, Xavier-uniform weights, zero biases):

* **E:** conv 64 + ReLU → conv 128 + BN + ReLU → conv 256 + BN + ReLU (28→14→7→4) → FC → z_dim.
* **G:** FC z→4·4·256 + BN + ReLU → deconv 128 + BN + ReLU (4→8) → *bridge* 8×8×128 → 7×7×128 →
  deconv 64 + BN + ReLU (7→14) → deconv C (14→28) → output activation.
* **D:** conv 64 + LReLU(0.2) → conv 128 + BN + LReLU → conv 256 + BN + LReLU (28→14→7→4) → FC → 1 logit.
  The last conv map (4·4·256 = 4096 values) is Dist-GAN's feature f(x).

Differences from the reference, kept small and switchable:

* ``output="tanh"`` (default) because the platform's image data lives in [-1, 1]; the reference outputs
  ``sigmoid`` for data in [0, 1]. ``output="sigmoid"`` is available for [0, 1] data.
* ``bridge="fc"`` is the reference's 8192→6272 fully connected layer (51.4M weights: it dominates G's
  size and the cost of Hessian-vector products); ``bridge="crop"`` drops the last row/column as the
  WGAN-GP MNIST generator does (G shrinks to ~1.4M parameters).

Input sizes other than 28×28 work for E and D (the feature size is computed); G always emits 28×28.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn


def _conv(c_in: int, c_out: int, bias: bool = True) -> nn.Conv2d:
    # padding=2 on a 5×5 kernel with stride 2 reproduces TF "SAME": out = ceil(in / 2).
    return nn.Conv2d(c_in, c_out, 5, stride=2, padding=2, bias=bias)


def _deconv(c_in: int, c_out: int, bias: bool = True) -> nn.ConvTranspose2d:
    # TF conv2d_transpose "SAME" with stride 2 doubles the size: output_padding=1 makes that exact here.
    return nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1, bias=bias)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases on every conv/linear layer (TF slim defaults used by the
    reference)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _conv_size(size: int, n: int = 3) -> int:
    for _ in range(n):
        size = math.ceil(size / 2)
    return size


def _check(name: str, **vals: int) -> None:
    for key, val in vals.items():
        if int(val) < 1:
            raise ValueError(f"model.{name}.{key} must be >= 1, got {val}")


class MnistGenerator(nn.Module):
    """Dist-GAN DCGAN generator for 28×28 images; ``dim`` is the reference's ``gf_dim`` (64)."""

    def __init__(self, z_dim: int = 100, channels: int = 1, dim: int = 64,
                 bridge: Literal["fc", "crop"] = "fc", output: Literal["tanh", "sigmoid"] = "tanh") -> None:
        super().__init__()
        _check("generator", z_dim=z_dim, channels=channels, dim=dim)
        if bridge not in ("fc", "crop"):
            raise ValueError(f"model.generator.bridge must be 'fc' (reference) or 'crop', got {bridge!r}")
        if output not in ("tanh", "sigmoid"):
            raise ValueError(f"model.generator.output must be 'tanh' ([-1,1] data) or 'sigmoid' ([0,1]), got {output!r}")
        self.z_dim, self.dim, self.bridge_kind = int(z_dim), int(dim), bridge
        d = self.dim
        self.fc = nn.Sequential(nn.Linear(z_dim, 4 * 4 * 4 * d, bias=False), nn.BatchNorm1d(4 * 4 * 4 * d), nn.ReLU())
        self.up1 = nn.Sequential(_deconv(4 * d, 2 * d, bias=False), nn.BatchNorm2d(2 * d), nn.ReLU())
        self.bridge = nn.Sequential(nn.Linear(8 * 8 * 2 * d, 7 * 7 * 2 * d), nn.ReLU()) if bridge == "fc" else None
        self.up2 = nn.Sequential(_deconv(2 * d, d, bias=False), nn.BatchNorm2d(d), nn.ReLU())
        self.up3 = _deconv(d, channels)
        self.out = nn.Tanh() if output == "tanh" else nn.Sigmoid()
        xavier_init(self)

    def forward(self, z: Tensor) -> Tensor:
        d = self.dim
        y = self.fc(z.reshape(z.shape[0], -1)).reshape(-1, 4 * d, 4, 4)
        y = self.up1(y)
        if self.bridge is not None:
            y = self.bridge(y.flatten(1)).reshape(-1, 2 * d, 7, 7)
        else:
            y = y[:, :, :7, :7]
        return self.out(self.up3(self.up2(y)))


class MnistDiscriminator(nn.Module):
    """Dist-GAN DCGAN discriminator. ``forward(x)`` returns the logit (B, 1), so the net drops into any
    objective; ``forward(x, return_features=True)`` returns ``(logit, f)`` with f the flattened last conv
    map (Dist-GAN's feature space, 4096-d for 28×28 and ``dim=64``).

    ``batch_norm=False`` replaces BN by identity: BN couples the samples of a batch, which makes
    per-sample input gradients (R1, per-sample GP) inexact. The reference uses BN.
    """

    def __init__(self, channels: int = 1, dim: int = 64, image_size: int = 28, batch_norm: bool = True) -> None:
        super().__init__()
        _check("discriminator", channels=channels, dim=dim, image_size=image_size)
        d = int(dim)

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if batch_norm else nn.Identity()

        self.features = nn.Sequential(
            _conv(channels, d), nn.LeakyReLU(0.2),
            _conv(d, 2 * d, bias=not batch_norm), norm(2 * d), nn.LeakyReLU(0.2),
            _conv(2 * d, 4 * d, bias=not batch_norm), norm(4 * d), nn.LeakyReLU(0.2),
        )
        side = _conv_size(int(image_size))
        self.feature_dim = 4 * d * side * side
        self.head = nn.Linear(self.feature_dim, 1)
        xavier_init(self)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        f = self.features(x).flatten(1)
        logit = self.head(f)
        return (logit, f) if return_features else logit


class MnistEncoder(nn.Module):
    """Dist-GAN DCGAN encoder x → z (unbounded linear output, like the reference's ``logit``)."""

    def __init__(self, z_dim: int = 100, channels: int = 1, dim: int = 64, image_size: int = 28) -> None:
        super().__init__()
        _check("encoder", z_dim=z_dim, channels=channels, dim=dim, image_size=image_size)
        d = int(dim)
        self.net = nn.Sequential(
            _conv(channels, d), nn.ReLU(),
            _conv(d, 2 * d, bias=False), nn.BatchNorm2d(2 * d), nn.ReLU(),
            _conv(2 * d, 4 * d, bias=False), nn.BatchNorm2d(4 * d), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * d * _conv_size(int(image_size)) ** 2, z_dim),
        )
        xavier_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


__all__ = ["MnistGenerator", "MnistDiscriminator", "MnistEncoder", "xavier_init", "count_parameters"]

if __name__ == "__main__":  # pragma: no cover - size check
    for bridge in ("fc", "crop"):
        g = MnistGenerator(bridge=bridge)
        print(bridge, count_parameters(g), g(torch.randn(2, 100)).shape)
    print(count_parameters(MnistDiscriminator()), count_parameters(MnistEncoder()))
