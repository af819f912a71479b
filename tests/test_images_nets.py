"""DCGAN nets: shapes at every supported size, MaEM's D options, init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gancollapse.nets.dcgan import (
    DCGAN32Discriminator,
    DCGAN32Generator,
    DCGAN64Discriminator,
    DCGAN64Generator,
    DCGANDiscriminator,
    DCGANGenerator,
    reparameterize,
)


@pytest.mark.parametrize("size", [28, 32, 64])
def test_generator_and_discriminator_shapes(size):
    g = DCGANGenerator(16, channels=1, base=4, img_size=size)
    d = DCGANDiscriminator(channels=1, base=4, img_size=size, out_dim=3)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, 1, size, size)
    assert x.abs().max() <= 1.0
    assert d(x).shape == (5, 3)


def test_maem_nets_match_the_paper_architecture():
    g = DCGAN32Generator(64)  # z 64, widths 512/256/128
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 512), (512, 256), (256, 128), (128, 3)]
    assert all(c.bias is None for c in convs)
    d = DCGAN32Discriminator(out_dim=16, stochastic=True, spectral_norm=True)
    dconvs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in dconvs] == [(3, 128), (128, 256), (256, 512)]
    assert d.head.in_features == 8192 and d.head.out_features == 32  # (mu, logvar) for m = 16
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert all(hasattr(m, "parametrizations") for m in dconvs + [d.head])  # spectral norm everywhere
    out = d(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 16)


def test_stochastic_head_draws_fresh_noise_each_call():
    torch.manual_seed(0)
    d = DCGAN32Discriminator(base=4, out_dim=2, stochastic=True)
    x = torch.randn(3, 3, 32, 32)
    a, b = d(x), d(x)
    assert not torch.allclose(a, b)
    d_det = DCGAN32Discriminator(base=4, out_dim=2, stochastic=True, deterministic_eval=True).eval()
    assert torch.equal(d_det(x), d_det(x))


def test_reparameterize_moments():
    torch.manual_seed(0)
    mu, logvar = torch.full((200_000, 1), 2.0), torch.full((200_000, 1), 2 * torch.log(torch.tensor(3.0)))
    s = reparameterize(mu, logvar)
    assert abs(s.mean().item() - 2.0) < 0.03 and abs(s.std().item() - 3.0) < 0.03


def test_init_follows_maem():
    torch.manual_seed(0)
    g = DCGAN64Generator(100)
    w = g.net[0].weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    bn = g.net[1]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and torch.all(bn.bias == 0)
    d = DCGAN64Discriminator(base=8, out_dim=4)
    h = d.head.weight  # (4, flat): orthogonal rows
    assert torch.allclose(h @ h.t(), torch.eye(4), atol=1e-5)


def test_discriminator_batchnorm_option():
    d = DCGAN32Discriminator(base=4, batchnorm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 2  # all convs but the first


@pytest.mark.parametrize("bad", [{"img_size": 48}, {"channels": 0}, {"out_dim": 0}])
def test_bad_arguments_raise_value_error(bad):
    with pytest.raises(ValueError, match="model.discriminator"):
        DCGANDiscriminator(**{"channels": 3, "img_size": 32, **bad})
    with pytest.raises(ValueError, match="img_size"):
        DCGAN32Generator(8, img_size=64)
