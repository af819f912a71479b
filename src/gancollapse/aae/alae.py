"""ALAE networks: mapping F, style generator G, style encoder E and latent discriminator D, progressive.

Adversarial Latent Autoencoders (Pidhorskyi, Adjeroh & Doretto, CVPR 2020, Fig. 3–4; code
``podgorskiy/ALAE:net.py``, ``model.py``), the architecture MBRCE-AAE (Sledge & Príncipe, arXiv 2109.11737)
states it keeps unchanged. Written from the paper and the public code, with these choices:

- **Equalised learning rate** (Karras et al., "Progressive Growing of GANs", ICLR 2018, §4.1): every
  linear/conv weight is stored N(0, 1/lrmul²) and multiplied at run time by ``gain / sqrt(fan_in) · lrmul``
  (He's constant for ``gain = √2``); biases are stored zero and multiplied by ``lrmul``. The scaling sits in
  the layers (ALAE's explicit ``lreq`` path), so the optimiser is plain ``torch.optim.Adam(betas=(0, 0.99))``,
  not ALAE's LREQAdam.
- **Level of detail** ``lod`` ↔ side ``2 ** (lod + 2)``; ``channels[r]`` is the width at lod ``r`` (r = 0 is
  4×4), ALAE's ``min(MAX_CHANNEL_COUNT, START_CHANNEL_COUNT · 2^(max_lod − r))`` (:func:`alae_channels`).
- **F** (``MappingF``): pixel norm of z, then ``mapping_layers`` equalised linear layers of width
  ``latent_dim`` with leaky ReLU 0.2 after each, lr multiplier 0.1 (ALAE's MappingF; StyleGAN uses 0.01).
  F keeps a running mean of w (β = 0.995, ALAE ``DLATENT_AVG_BETA``) for truncation at sampling time only.
- **G** (``GeneratorDefault``): a learned 4×4 constant (init 1); block r > 0 upsamples (nearest), convolves
  3×3 and blurs ([1, 2, 1]²); every block then applies twice: per-channel-weighted noise (init 0), bias,
  leaky ReLU 0.2, instance norm, AdaIN ``x·(1 + s) + b`` from w (two styles per block, so
  ``2·(max_lod + 1)`` style layers); one 1×1 ToRGB per lod with gain 0.03. The upsample is never fused with
  the conv (ALAE fuses it as a transposed conv only from 128 px on, to save memory): same function, simpler.
- **E** (``EncoderDefault``): one 1×1 FromRGB + leaky ReLU per lod; block r: 3×3 conv, leaky ReLU, then the
  per-channel (mean, std) over space → an equalised linear style, instance norm; blur, 3×3 conv, 2×2 average
  pool, leaky ReLU, statistics → second style, instance norm. The styles of all blocks are *summed* into w.
  Block 0 takes 4×4 down to 2×2 as in ALAE. Differences: the leaky ReLU after FromRGB is applied once (ALAE
  applies it twice, i.e. slope 0.04), and the std carries a 1e-8 floor so its gradient stays finite.
- **D** (``MappingD``): w → scalar, ``d_layers`` equalised linear layers with lr multiplier 0.1 and, as in ALAE,
  no nonlinearity between them by default (``d_nonlinearity=True`` adds leaky ReLU 0.2). The per-sample
  discriminator of ALAE is D∘E.
- **Progressive fade-in** (Karras et al. 2018 §2; ALAE ``decode2``/``encode2``): with ``blend = β < 1`` at
  lod k > 0, G outputs ``lerp(up(ToRGB_{k−1}(h_{k−1})), ToRGB_k(h_k), β)`` and E feeds block k−1 with
  ``lerp(FromRGB_{k−1}(down(x)), block_k(FromRGB_k(x)), β)``, block k's styles weighted by β. ``torch.lerp``
  makes β = 0 and β = 1 exact: β = 0 is the upsampled lod-(k−1) image (G) and the lod-(k−1) encoding of
  ``down(x)`` (E).
- **Style mixing** (Karras et al., "A Style-Based Generator", CVPR 2019, §3.1): G takes one w per style layer;
  :func:`synthesize` with ``mix_prob`` switches, at a random layer in ``[1, 2·(lod+1) − 1]``, to the w of
  another z (StyleGAN's range; ALAE's ``random.randint`` also draws the no-op ``2·(lod+1)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gancollapse.aae.ema import EMA
from gancollapse.aae.lod import downsample2x, lod_of, resolution_of, upsample2x

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2


# ---------------------------------------------------------------- equalised-learning-rate layers


class EqLinear(nn.Module):
    """Linear layer with equalised learning rate: ``y = x (c·W)ᵀ + lrmul·b``, c = gain/√fan_in · lrmul.

    W is stored N(0, 1/lrmul²), so the effective weight c·W starts N(0, gain²/fan_in) (He init for gain √2)
    while Adam's steps on W move c·W by ~lr·c: every layer learns at the same speed (Karras et al. 2018 §4.1),
    and ``lrmul < 1`` slows a whole layer down (the mapping net's 0.1).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = SQRT2,
                 lrmul: float = 1.0) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"EqLinear sizes must be > 0, got {in_features} → {out_features}")
        if lrmul <= 0:
            raise ValueError(f"lrmul must be > 0, got {lrmul}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.lrmul = float(lrmul)
        self.scale = float(gain) / math.sqrt(in_features) * self.lrmul
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / self.lrmul)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lrmul
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, scale={self.scale:.4g}, lrmul={self.lrmul:g}"


class EqConv2d(nn.Module):
    """2-D convolution with equalised learning rate; fan_in = in_channels · k², 'same' padding by default."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, bias: bool = True, gain: float = SQRT2, lrmul: float = 1.0) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0 or kernel_size <= 0:
            raise ValueError(f"EqConv2d sizes must be > 0, got {in_channels} → {out_channels}, k={kernel_size}")
        if lrmul <= 0:
            raise ValueError(f"lrmul must be > 0, got {lrmul}")
        self.in_channels, self.out_channels, self.kernel_size = int(in_channels), int(out_channels), int(kernel_size)
        self.stride = int(stride)
        self.padding = kernel_size // 2 if padding is None else int(padding)
        self.lrmul = float(lrmul)
        self.scale = float(gain) / math.sqrt(in_channels * kernel_size * kernel_size) * self.lrmul
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / self.lrmul)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lrmul
        return F.conv2d(x, self.weight * self.scale, bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, stride={self.stride}, "
                f"scale={self.scale:.4g}, lrmul={self.lrmul:g}")


# ---------------------------------------------------------------- small pure pieces


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """x / sqrt(mean_c x² + ε) (Karras et al. 2018 §4.2), applied to z before the mapping net."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def channel_stats(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-channel spatial (mean, std) of (N, C, H, W) → (N, 2C): what instance norm removes, E's style input."""
    mean = x.mean(dim=(2, 3))
    std = torch.sqrt((x - mean[:, :, None, None]).pow(2).mean(dim=(2, 3)) + eps)
    return torch.cat([mean, std], dim=1)


def alae_channels(start_channels: int, max_channels: int, max_lod: int) -> list[int]:
    """ALAE's widths per lod: ``min(max_channels, start_channels · 2^(max_lod − r))`` for r = 0..max_lod."""
    if start_channels <= 0 or max_channels <= 0 or max_lod < 0:
        raise ValueError(f"need start_channels, max_channels > 0 and max_lod >= 0, got "
                         f"{start_channels}, {max_channels}, {max_lod}")
    return [min(int(max_channels), int(start_channels) * 2 ** (max_lod - r)) for r in range(max_lod + 1)]


def mix_styles(w1: Tensor, w2: Tensor, cutoff: int, num_layers: int) -> Tensor:
    """Per-layer styles (N, L, D): layers ``< cutoff`` take ``w1`` (coarse), the rest ``w2`` (fine)."""
    layer = torch.arange(num_layers, device=w1.device)[None, :, None]
    return torch.where(layer < cutoff, w1[:, None, :], w2[:, None, :])


def truncate(styles: Tensor, w_avg: Tensor, psi: float, cutoff: int) -> Tensor:
    """Truncation trick (Karras et al. 2019 §B): layers ``< cutoff`` move to ``w_avg + ψ·(w − w_avg)``."""
    layer = torch.arange(styles.shape[1], device=styles.device)[None, :, None]
    coef = torch.where(layer < cutoff, torch.full_like(layer, psi, dtype=styles.dtype),
                       torch.ones_like(layer, dtype=styles.dtype))
    return torch.lerp(w_avg.to(styles.dtype)[None, None, :], styles, coef)


class Blur(nn.Module):
    """Depthwise [1, 2, 1] ⊗ [1, 2, 1] / 16 low-pass, 'same' padding (ALAE/StyleGAN anti-aliasing)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        f = torch.tensor([1.0, 2.0, 1.0])
        k = (f[:, None] * f[None, :]) / 16.0
        self.register_buffer("kernel", k.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel.to(x.dtype), padding=1, groups=x.shape[1])


class NoiseInjection(nn.Module):
    """x + w_c · n with n ~ N(0, 1) per pixel and a learned per-channel weight w_c (init 0; StyleGAN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor, noise: bool) -> Tensor:
        if not noise:
            return x
        n = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight * n


class StyleMod(nn.Module):
    """AdaIN modulation ``x·(1 + s) + b`` with (s, b) an equalised linear map of w (gain 1, ALAE ``style_mod``)."""

    def __init__(self, latent_dim: int, channels: int) -> None:
        super().__init__()
        self.affine = EqLinear(latent_dim, 2 * channels, gain=1.0)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        scale, shift = self.affine(w)[:, :, None, None].chunk(2, dim=1)
        return x * (1.0 + scale) + shift


# ---------------------------------------------------------------- F and D


class MappingNetwork(nn.Module):
    """F: z (N, D) → w (N, D). Pixel norm, then ``num_layers`` × (EqLinear(lrmul) + leaky ReLU 0.2).

    Buffer ``w_avg`` is the running mean of w (used only by truncation); call :meth:`update_w_avg`.
    """

    def __init__(self, latent_dim: int, num_layers: int = 8, lrmul: float = 0.1, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"mapping_layers must be >= 1, got {num_layers}")
        self.latent_dim = int(latent_dim)
        self.w_avg_beta = float(w_avg_beta)
        self.layers = nn.ModuleList(EqLinear(latent_dim, latent_dim, lrmul=lrmul) for _ in range(num_layers))
        self.register_buffer("w_avg", torch.zeros(latent_dim))

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"mapping expects z of shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        x = pixel_norm(z)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
        return x

    @torch.no_grad()
    def update_w_avg(self, w: Tensor) -> None:
        """w̄ ← β·w̄ + (1 − β)·mean(w) (ALAE ``dlatent_avg``)."""
        self.w_avg.lerp_(w.detach().mean(dim=0).to(self.w_avg.dtype), 1.0 - self.w_avg_beta)


class LatentDiscriminator(nn.Module):
    """D: w (N, D) → logits (N,). ALAE's MappingD: ``num_layers`` EqLinear(lrmul 0.1), linear by default."""

    def __init__(self, latent_dim: int, num_layers: int = 3, lrmul: float = 0.1, nonlinearity: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"d_layers must be >= 1, got {num_layers}")
        dims = [latent_dim] * num_layers + [1]
        self.layers = nn.ModuleList(EqLinear(a, b, lrmul=lrmul) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.nonlinearity = bool(nonlinearity)

    def forward(self, w: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (N,); with ``return_features`` also the last layer's input (N, D) (:mod:`gancollapse.nets`)."""
        x = w
        for i, layer in enumerate(self.layers):
            if i == len(self.layers) - 1:
                features = x
            x = layer(x)
            if self.nonlinearity and i < len(self.layers) - 1:
                x = F.leaky_relu(x, LRELU_SLOPE)
        return (x[:, 0], features) if return_features else x[:, 0]


# ---------------------------------------------------------------- G


class GeneratorBlock(nn.Module):
    """One lod of G: [upsample, 3×3 conv, blur] then twice (noise, bias, lrelu, instance norm, AdaIN)."""

    def __init__(self, in_channels: int, out_channels: int, latent_dim: int, first: bool) -> None:
        super().__init__()
        self.first = first
        if not first:
            self.conv1 = EqConv2d(in_channels, out_channels, 3, bias=False)
            self.blur = Blur(out_channels)
        self.noise1 = NoiseInjection(out_channels)
        self.bias1 = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.style1 = StyleMod(latent_dim, out_channels)
        self.conv2 = EqConv2d(out_channels, out_channels, 3, bias=False)
        self.noise2 = NoiseInjection(out_channels)
        self.bias2 = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.style2 = StyleMod(latent_dim, out_channels)

    def forward(self, x: Tensor, w1: Tensor, w2: Tensor, noise: bool) -> Tensor:
        if not self.first:
            x = self.blur(self.conv1(upsample2x(x)))
        x = F.leaky_relu(self.noise1(x, noise) + self.bias1, LRELU_SLOPE)
        x = self.style1(F.instance_norm(x, eps=1e-8), w1)
        x = F.leaky_relu(self.noise2(self.conv2(x), noise) + self.bias2, LRELU_SLOPE)
        return self.style2(F.instance_norm(x, eps=1e-8), w2)


class StyleGenerator(nn.Module):
    """G: styles → images (N, image_channels, 2^(lod+2), 2^(lod+2)), progressive with fade-in.

    ``styles`` is w (N, D), broadcast to every style layer, or per-layer styles: a tensor (N, L, D) or a list of
    L tensors (N, D), with ``L = num_style_layers = 2·(max_lod + 1)`` (block r uses layers 2r and 2r + 1).
    """

    def __init__(self, latent_dim: int, channels: Sequence[int], image_channels: int = 3) -> None:
        super().__init__()
        if len(channels) < 1:
            raise ValueError("channels must list one width per lod, got an empty list")
        self.latent_dim = int(latent_dim)
        self.channels = [int(c) for c in channels]
        self.max_lod = len(self.channels) - 1
        self.num_style_layers = 2 * len(self.channels)
        self.const = nn.Parameter(torch.ones(1, self.channels[0], 4, 4))
        self.blocks = nn.ModuleList(
            GeneratorBlock(self.channels[max(r - 1, 0)], c, latent_dim, first=r == 0) for r, c in enumerate(self.channels))
        self.to_rgb = nn.ModuleList(EqConv2d(c, image_channels, 1, gain=0.03) for c in self.channels)

    def expand_styles(self, styles: Tensor | Sequence[Tensor]) -> Tensor:
        """w (N, D), (N, L, D) or a list of L × (N, D) → (N, L, D)."""
        if not isinstance(styles, Tensor):
            styles = torch.stack(list(styles), dim=1)
        if styles.dim() == 2:
            styles = styles[:, None, :].expand(-1, self.num_style_layers, -1)
        if styles.dim() != 3 or styles.shape[1] != self.num_style_layers or styles.shape[2] != self.latent_dim:
            raise ValueError(f"generator styles must be (N, {self.latent_dim}) or (N, {self.num_style_layers}, "
                             f"{self.latent_dim}), got {tuple(styles.shape)}")
        return styles

    def forward(self, styles: Tensor | Sequence[Tensor], lod: int, blend: float = 1.0, noise: bool = True) -> Tensor:
        _check_lod_blend(lod, blend, self.max_lod)
        s = self.expand_styles(styles)
        x = self.const.expand(s.shape[0], -1, -1, -1)
        for r in range(lod):
            x = self.blocks[r](x, s[:, 2 * r], s[:, 2 * r + 1], noise)
        fading = lod > 0 and blend < 1.0
        if fading:
            previous = upsample2x(self.to_rgb[lod - 1](x))
        x = self.blocks[lod](x, s[:, 2 * lod], s[:, 2 * lod + 1], noise)
        image = self.to_rgb[lod](x)
        return torch.lerp(previous, image, float(blend)) if fading else image


# ---------------------------------------------------------------- E


class EncoderBlock(nn.Module):
    """One lod of E: conv → stats → IN → blur, conv, avg-pool → stats → IN; returns (features, style sum)."""

    def __init__(self, in_channels: int, out_channels: int, latent_dim: int) -> None:
        super().__init__()
        self.conv1 = EqConv2d(in_channels, in_channels, 3, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(1, in_channels, 1, 1))
        self.blur = Blur(in_channels)
        self.conv2 = EqConv2d(in_channels, out_channels, 3, bias=False)
        self.bias2 = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.style1 = EqLinear(2 * in_channels, latent_dim)
        self.style2 = EqLinear(2 * out_channels, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.leaky_relu(self.conv1(x) + self.bias1, LRELU_SLOPE)
        w1 = self.style1(channel_stats(x))
        x = F.instance_norm(x)
        x = downsample2x(self.conv2(self.blur(x)))
        x = F.leaky_relu(x + self.bias2, LRELU_SLOPE)
        w2 = self.style2(channel_stats(x))
        return F.instance_norm(x), w1 + w2


class StyleEncoder(nn.Module):
    """E: images (N, C, 2^(lod+2), 2^(lod+2)) → w (N, D): FromRGB at lod, then blocks lod..0, styles summed."""

    def __init__(self, latent_dim: int, channels: Sequence[int], image_channels: int = 3) -> None:
        super().__init__()
        if len(channels) < 1:
            raise ValueError("channels must list one width per lod, got an empty list")
        self.latent_dim = int(latent_dim)
        self.channels = [int(c) for c in channels]
        self.max_lod = len(self.channels) - 1
        self.from_rgb = nn.ModuleList(EqConv2d(image_channels, c, 1) for c in self.channels)
        self.blocks = nn.ModuleList(
            EncoderBlock(c, self.channels[max(r - 1, 0)], latent_dim) for r, c in enumerate(self.channels))

    def forward(self, x: Tensor, lod: int, blend: float = 1.0) -> Tensor:
        _check_lod_blend(lod, blend, self.max_lod)
        size = resolution_of(lod)
        if x.dim() != 4 or x.shape[-1] != size or x.shape[-2] != size:
            raise ValueError(f"encoder at lod {lod} expects (N, C, {size}, {size}) images, got {tuple(x.shape)}")
        h, w = self.blocks[lod](F.leaky_relu(self.from_rgb[lod](x), LRELU_SLOPE))
        if lod > 0 and blend < 1.0:
            low = F.leaky_relu(self.from_rgb[lod - 1](downsample2x(x)), LRELU_SLOPE)
            h = torch.lerp(low, h, float(blend))
            w = w * float(blend)
        for r in range(lod - 1, -1, -1):
            h, s = self.blocks[r](h)
            w = w + s
        return w


def _check_lod_blend(lod: int, blend: float, max_lod: int) -> None:
    if not 0 <= lod <= max_lod:
        raise ValueError(f"lod must be in [0, {max_lod}] for this network, got {lod}")
    if not 0.0 <= float(blend) <= 1.0:
        raise ValueError(f"blend must be in [0, 1], got {blend}")


# ---------------------------------------------------------------- the model


def synthesize(mapping: MappingNetwork, generator: StyleGenerator, z: Tensor, lod: int, blend: float = 1.0,
               mix_prob: float = 0.0, noise: bool = True, truncation_psi: float | None = None,
               truncation_cutoff: int = 8, update_w_avg: bool = False) -> tuple[Tensor, Tensor]:
    """z → (images, w) through ``mapping`` and ``generator`` (the live nets or their EMA shadows).

    With probability ``mix_prob`` (ALAE: 0.9 in the G step, 0 in the autoencoding step) the style layers from
    a random cutoff in [1, 2·(lod+1) − 1] on take the w of a fresh z. ``w`` returned is the unmixed F(z), the
    target of the latent autoencoding loss ‖E(G(w)) − w‖².
    """
    if not 0.0 <= mix_prob <= 1.0:
        raise ValueError(f"style_mixing_prob must be in [0, 1], got {mix_prob}")
    w = mapping(z)
    if update_w_avg:
        mapping.update_w_avg(w)
    styles: Tensor = w
    active_layers = 2 * (lod + 1)
    if mix_prob > 0.0 and active_layers > 1 and float(torch.rand(())) < mix_prob:
        w2 = mapping(torch.randn_like(z))
        cutoff = int(torch.randint(1, active_layers, ()))
        styles = mix_styles(w, w2, cutoff, generator.num_style_layers)
    if truncation_psi is not None:
        styles = truncate(generator.expand_styles(styles), mapping.w_avg, truncation_psi, truncation_cutoff)
    return generator(styles, lod, blend, noise), w


class ALAE(nn.Module):
    """The four ALAE networks, with ``.mapping`` (F), ``.generator`` (G), ``.encoder`` (E), ``.discriminator`` (D).

    Args:
        latent_dim: size of z and w (ALAE ``LATENT_SPACE_SIZE``).
        mapping_layers: depth of F (ALAE ``MAPPING_LAYERS``, 8 in its configs).
        channels: width per lod, lod 0 (4×4) first; see :func:`alae_channels`.
        max_lod: top lod; defaults to ``len(channels) − 1`` (then ``channels`` must have max_lod + 1 entries).
        image_size: alternative to ``max_lod``: the top resolution, a power of two >= 4.
        image_channels: 3 for RGB, 1 for grey.
        mapping_lrmul / d_layers / d_lrmul / d_nonlinearity: F's and D's settings (ALAE: 0.1, 3, 0.1, False).
        w_avg_beta: decay of F's running mean of w (truncation only).

    Training steps (ALAE ``model.py``): D step on E, D with ``discriminate``; G step on F, G with
    ``generate(..., mix_prob=0.9)``; latent autoencoding on all with ``generate(..., return_w=True)`` and
    ``encode``. Optimisers: :func:`build_optimizers`; EMA for sampling: :meth:`make_ema`.
    """

    def __init__(self, latent_dim: int, mapping_layers: int, channels: Sequence[int], max_lod: int | None = None,
                 image_size: int | None = None, image_channels: int = 3, mapping_lrmul: float = 0.1,
                 d_layers: int = 3, d_lrmul: float = 0.1, d_nonlinearity: bool = False,
                 w_avg_beta: float = 0.995) -> None:
        super().__init__()
        if int(latent_dim) <= 0:
            raise ValueError(f"latent_dim must be > 0, got {latent_dim}")
        channels = [int(c) for c in channels]
        if any(c <= 0 for c in channels):
            raise ValueError(f"every entry of channels must be > 0, got {channels}")
        if image_size is not None:
            size_lod = lod_of(image_size, key="image_size")
            if max_lod is not None and int(max_lod) != size_lod:
                raise ValueError(f"max_lod={max_lod} contradicts image_size={image_size} (lod {size_lod})")
            max_lod = size_lod
        if max_lod is None:
            max_lod = len(channels) - 1
        if int(max_lod) < 0:
            raise ValueError(f"max_lod must be >= 0, got {max_lod}")
        if len(channels) != int(max_lod) + 1:
            raise ValueError(f"channels has {len(channels)} entries but max_lod={max_lod} needs {int(max_lod) + 1} "
                             f"(one width per lod, 4×4 first)")
        self.latent_dim = int(latent_dim)
        self.max_lod = int(max_lod)
        self.image_channels = int(image_channels)
        self.mapping = MappingNetwork(latent_dim, mapping_layers, lrmul=mapping_lrmul, w_avg_beta=w_avg_beta)
        self.generator = StyleGenerator(latent_dim, channels, image_channels)
        self.encoder = StyleEncoder(latent_dim, channels, image_channels)
        self.discriminator = LatentDiscriminator(latent_dim, d_layers, lrmul=d_lrmul, nonlinearity=d_nonlinearity)

    @property
    def num_style_layers(self) -> int:
        return self.generator.num_style_layers

    def generate(self, z: Tensor, lod: int, blend: float = 1.0, mix_prob: float = 0.0, noise: bool = True,
                 return_w: bool = False, truncation_psi: float | None = None,
                 truncation_cutoff: int = 8) -> Tensor | tuple[Tensor, Tensor]:
        """G(F(z)) at ``lod``/``blend``; ``return_w`` also returns w = F(z). Tracks w̄ in training mode."""
        images, w = synthesize(self.mapping, self.generator, z, lod, blend, mix_prob, noise, truncation_psi,
                               truncation_cutoff, update_w_avg=self.training)
        return (images, w) if return_w else images

    def encode(self, x: Tensor, lod: int, blend: float = 1.0) -> Tensor:
        """E(x) → w (N, latent_dim); ``x`` must be at ``resolution_of(lod)``."""
        return self.encoder(x, lod, blend)

    def discriminate(self, x: Tensor, lod: int, blend: float = 1.0) -> Tensor:
        """D(E(x)) → logits (N,): ALAE's per-sample discriminator."""
        return self.discriminator(self.encoder(x, lod, blend))

    def ema_modules(self) -> dict[str, nn.Module]:
        """The networks ALAE samples with, by name: pass to :class:`EMA` and to ``EMA.update``."""
        return {"mapping": self.mapping, "generator": self.generator}

    def make_ema(self) -> EMA:
        """A fresh EMA of F and G (update it with ``ema.update(alae.ema_modules(), ema_beta(batch))``)."""
        return EMA(self.ema_modules())


def build_optimizers(alae: ALAE, lr: float, betas: tuple[float, float] = (0.0, 0.99),
                     eps: float = 1e-8) -> dict[str, torch.optim.Adam]:
    """ALAE's two Adams (``train_alae.py``): ``generator`` over G, F and ``encoder`` over E, D.

    Plain Adam suffices because the equalised-lr scaling sits in the layers. Each network is its own named
    param group (``group["name"]``); set the schedule's lr with :func:`set_learning_rate`.
    """
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    gen = torch.optim.Adam([{"params": list(alae.generator.parameters()), "name": "generator"},
                            {"params": list(alae.mapping.parameters()), "name": "mapping"}],
                           lr=lr, betas=betas, eps=eps)
    enc = torch.optim.Adam([{"params": list(alae.encoder.parameters()), "name": "encoder"},
                            {"params": list(alae.discriminator.parameters()), "name": "discriminator"}],
                           lr=lr, betas=betas, eps=eps)
    return {"generator": gen, "encoder": enc}


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's lr (ALAE: ``LEARNING_RATES[lod]`` at each stage)."""
    for group in optimizer.param_groups:
        group["lr"] = float(lr)


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Drop Adam's moments and step counts (ALAE does this at every lod change, so new blocks start fresh)."""
    optimizer.state.clear()
