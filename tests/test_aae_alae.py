"""ALAE networks: equalised-lr layers, progressive G/E with exact fade-in endpoints, style mixing, EMA, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gancollapse.aae.alae import (
    ALAE,
    EqConv2d,
    EqLinear,
    LatentDiscriminator,
    alae_channels,
    build_optimizers,
    mix_styles,
    reset_optimizer_state,
    set_learning_rate,
    synthesize,
    truncate,
)
from gancollapse.aae.ema import EMA, ema_beta
from gancollapse.aae.lod import downsample2x

LATENT = 32
CHANNELS = [32, 32, 16, 16]  # 4, 8, 16, 32 px


@pytest.fixture
def alae() -> ALAE:
    torch.manual_seed(0)
    return ALAE(LATENT, mapping_layers=3, channels=CHANNELS)


def _randomise_noise_weights(model: ALAE) -> None:
    # Noise weights start at 0; make them non-zero so a wrongly-ignored `noise` flag would show.
    with torch.no_grad():
        for name, p in model.generator.named_parameters():
            if "noise" in name:
                p.normal_()


# ---------------------------------------------------------------- equalised learning rate


def test_equalised_lr_runtime_scale_is_he_constant_and_used_in_forward():
    lin = EqLinear(64, 8)
    assert lin.scale == pytest.approx(math.sqrt(2 / 64))
    conv = EqConv2d(4, 8, 3)
    assert conv.scale == pytest.approx(math.sqrt(2 / 36))
    slow = EqLinear(64, 8, lrmul=0.1)  # stored N(0, 1/lrmul²), effective weight still N(0, 2/fan_in)
    assert slow.scale == pytest.approx(0.1 * math.sqrt(2 / 64))
    with torch.no_grad():
        hand = EqLinear(8, 1)
        hand.weight.fill_(1.0)
        hand.bias.fill_(0.5)
        assert hand(torch.ones(1, 8)).item() == pytest.approx(8 * math.sqrt(2 / 8) + 0.5)  # = 4.5
        hand10 = EqLinear(8, 1, lrmul=0.1)
        hand10.weight.fill_(1.0)
        hand10.bias.fill_(0.5)
        assert hand10(torch.ones(1, 8)).item() == pytest.approx(0.1 * 4.0 + 0.05)
        c = EqConv2d(2, 1, 3, bias=False)
        c.weight.fill_(1.0)
        assert c(torch.ones(1, 2, 3, 3))[0, 0, 1, 1].item() == pytest.approx(18 * math.sqrt(2 / 18))


def test_equalised_lr_preserves_variance_with_unit_normal_weights():
    torch.manual_seed(0)
    lin = EqLinear(512, 512, gain=1.0)
    assert lin.weight.std().item() == pytest.approx(1.0, abs=0.01)  # stored N(0, 1)
    x = torch.randn(4096, 512)
    with torch.no_grad():
        assert lin(x).var().item() == pytest.approx(x.var().item(), rel=0.06)
        # He gain √2 doubles the variance so that a ReLU after it keeps the second moment.
        y = EqLinear(512, 512)(x)
        assert y.var().item() == pytest.approx(2.0, rel=0.06)
        assert F.relu(y).pow(2).mean().item() == pytest.approx(x.pow(2).mean().item(), rel=0.06)
        conv = EqConv2d(64, 64, 3, padding=0, gain=1.0)
        xc = torch.randn(16, 64, 16, 16)
        assert conv(xc).var().item() == pytest.approx(1.0, rel=0.06)
        wide = EqLinear(512, 512, gain=1.0, lrmul=0.01)
        assert wide(x).var().item() == pytest.approx(1.0, rel=0.06)


# ---------------------------------------------------------------- shapes and fade-in


def test_shapes_at_every_lod_and_blend(alae):
    z = torch.randn(3, LATENT)
    assert alae.num_style_layers == 8
    for lod in range(4):
        for blend in (1.0, 0.4):
            x, w = alae.generate(z, lod, blend, mix_prob=0.9, return_w=True)
            size = 4 * 2 ** lod
            assert x.shape == (3, 3, size, size) and w.shape == (3, LATENT)
            assert alae.encode(x, lod, blend).shape == (3, LATENT)  # the E(G(w)) round trip
            assert alae.discriminate(x, lod, blend).shape == (3,)
            assert torch.isfinite(x).all()


def test_generator_fade_in_endpoints_are_exact(alae):
    _randomise_noise_weights(alae)
    g = alae.generator
    w = alae.mapping(torch.randn(4, LATENT))
    for lod in (1, 2, 3):
        new = g(w, lod, 1.0, noise=False)
        low = g(w, lod - 1, 1.0, noise=False)
        old = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest ×2, as ALAE
        # β = 1: the plain path, blocks 0..lod then ToRGB_lod, nothing of the previous ToRGB.
        h = g.const.expand(4, -1, -1, -1)
        for r in range(lod + 1):
            h = g.blocks[r](h, w, w, False)
        assert torch.equal(new, g.to_rgb[lod](h))
        # β = 0: exactly the upsampled lod − 1 image.
        assert torch.equal(g(w, lod, 0.0, noise=False), old)
        assert torch.allclose(g(w, lod, 0.25, noise=False), 0.75 * old + 0.25 * new, atol=1e-6)
        assert (new - old).abs().max() > 1e-3  # the endpoints really differ


def test_encoder_fade_in_endpoints_are_exact(alae):
    e = alae.encoder
    x = torch.randn(4, 3, 32, 32)
    for lod in (1, 2, 3):
        xl = F.avg_pool2d(x, 2 ** (3 - lod))
        plain = e(xl, lod, 1.0)
        # β = 1: FromRGB_lod then blocks lod..0, styles summed.
        h, w = e.blocks[lod](F.leaky_relu(e.from_rgb[lod](xl), 0.2))
        for r in range(lod - 1, -1, -1):
            h, s = e.blocks[r](h)
            w = w + s
        assert torch.equal(plain, w)
        # β = 0: exactly the lod − 1 encoding of the 2×2-pooled image.
        assert torch.equal(e(xl, lod, 0.0), e(downsample2x(xl), lod - 1, 1.0))
        half = e(xl, lod, 0.5)
        assert (half - plain).abs().max() > 1e-4 and (half - e(xl, lod, 0.0)).abs().max() > 1e-4


def test_noise_flag_controls_randomness(alae):
    _randomise_noise_weights(alae)
    w = alae.mapping(torch.randn(2, LATENT))
    assert torch.equal(alae.generator(w, 2, noise=False), alae.generator(w, 2, noise=False))
    assert not torch.equal(alae.generator(w, 2, noise=True), alae.generator(w, 2, noise=True))


# ---------------------------------------------------------------- style mixing and truncation


def test_style_mixing_gives_an_image_different_from_both(alae):
    g = alae.generator
    w1 = alae.mapping(torch.randn(2, LATENT))
    w2 = alae.mapping(torch.randn(2, LATENT))
    styles = mix_styles(w1, w2, cutoff=2, num_layers=8)
    assert torch.equal(styles[:, 1], w1) and torch.equal(styles[:, 2], w2)
    lod = 2
    x1, x2, xm = g(w1, lod, noise=False), g(w2, lod, noise=False), g(styles, lod, noise=False)
    assert (xm - x1).abs().mean() > 0.05 * x1.abs().mean()
    assert (xm - x2).abs().mean() > 0.05 * x2.abs().mean()
    # A list of per-layer w's is the same input as the stacked tensor.
    assert torch.equal(g([styles[:, i] for i in range(8)], lod, noise=False), xm)
    # Layers past the active lod are unused: switching there changes nothing.
    assert torch.equal(g(mix_styles(w1, w2, 2 * (lod + 1), 8), lod, noise=False), x1)


def test_generate_mixes_with_probability_one_and_never_with_zero(alae):
    z = torch.randn(2, LATENT)
    alae.eval()
    plain = alae.generate(z, 2, noise=False)
    torch.manual_seed(1)
    assert torch.equal(alae.generate(z, 2, mix_prob=0.0, noise=False), plain)
    torch.manual_seed(1)
    mixed, w = alae.generate(z, 2, mix_prob=1.0, noise=False, return_w=True)
    assert not torch.equal(mixed, plain)
    assert torch.equal(w, alae.mapping(z))  # the AE target is the unmixed w


def test_truncation_and_w_avg_tracking(alae):
    styles = torch.stack([torch.full((LATENT,), 4.0), torch.full((LATENT,), 8.0)])[None]
    out = truncate(styles, torch.zeros(LATENT), psi=0.5, cutoff=1)
    assert torch.equal(out[0, 0], torch.full((LATENT,), 2.0)) and torch.equal(out[0, 1], styles[0, 1])
    z = torch.randn(5, LATENT)
    alae.train()
    alae.generate(z, 1)
    assert torch.allclose(alae.mapping.w_avg, 0.005 * alae.mapping(z).mean(0), atol=1e-7)
    alae.eval()
    before = alae.mapping.w_avg.clone()
    alae.generate(z, 1)
    assert torch.equal(alae.mapping.w_avg, before)  # sampling does not move it
    # ψ = 0 on every layer: every z gives the image of w̄.
    x0 = alae.generate(z, 1, noise=False, truncation_psi=0.0, truncation_cutoff=8)
    ref = alae.generator(alae.mapping.w_avg.expand(5, -1), 1, noise=False)
    assert torch.allclose(x0, ref, atol=1e-6)


def test_latent_discriminator_is_affine_by_default_as_alae():
    torch.manual_seed(0)
    w1, w2 = torch.randn(4, LATENT), torch.randn(4, LATENT)
    d = LatentDiscriminator(LATENT)
    with torch.no_grad():
        for layer in d.layers:
            layer.bias.normal_()
        assert torch.allclose(d(0.3 * w1 + 0.7 * w2), 0.3 * d(w1) + 0.7 * d(w2), atol=1e-5)
        dn = LatentDiscriminator(LATENT, nonlinearity=True)
        dn.load_state_dict(d.state_dict())
        assert not torch.allclose(dn(0.3 * w1 + 0.7 * w2), 0.3 * dn(w1) + 0.7 * dn(w2), atol=1e-3)


# ---------------------------------------------------------------- config errors


def test_bad_configuration_and_inputs_raise(alae):
    with pytest.raises(ValueError, match="channels has 4 entries but max_lod=2"):
        ALAE(LATENT, 2, CHANNELS, max_lod=2)
    with pytest.raises(ValueError, match="image_size must be a power of two"):
        ALAE(LATENT, 2, CHANNELS, image_size=48)
    assert ALAE(LATENT, 2, CHANNELS, image_size=32).max_lod == 3
    with pytest.raises(ValueError, match=r"expects \(N, C, 16, 16\)"):
        alae.encode(torch.randn(1, 3, 32, 32), lod=2)
    with pytest.raises(ValueError, match="lod must be in"):
        alae.generate(torch.randn(1, LATENT), lod=4)
    with pytest.raises(ValueError, match="blend must be in"):
        alae.generate(torch.randn(1, LATENT), lod=1, blend=1.5)
    with pytest.raises(ValueError, match="generator styles must be"):
        alae.generator(torch.randn(1, 5, LATENT), lod=1)
    assert alae_channels(64, 256, 5) == [256, 256, 256, 256, 128, 64]  # ALAE celeba: start 64, max 256


# ---------------------------------------------------------------- optimisers and EMA


def test_optimizers_cover_every_parameter_once_with_alae_betas(alae):
    opts = build_optimizers(alae, lr=0.0015)
    seen = [id(p) for o in opts.values() for g in o.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in alae.parameters())
    assert [g["name"] for g in opts["generator"].param_groups] == ["generator", "mapping"]
    assert [g["name"] for g in opts["encoder"].param_groups] == ["encoder", "discriminator"]
    assert all(g["betas"] == (0.0, 0.99) for o in opts.values() for g in o.param_groups)
    alae.encode(alae.generate(torch.randn(2, LATENT), 1), 1).pow(2).mean().backward()
    opts["encoder"].step()
    assert len(opts["encoder"].state) > 0
    reset_optimizer_state(opts["encoder"])
    assert len(opts["encoder"].state) == 0
    set_learning_rate(opts["generator"], 0.003)
    assert all(g["lr"] == 0.003 for g in opts["generator"].param_groups)


def test_ema_hand_values_buffers_and_state_dict():
    assert ema_beta(10_000) == pytest.approx(0.5)
    assert ema_beta(16) == pytest.approx(math.exp(-16 / 10_000 * math.log(2)))  # ≈ 0.99889
    live = nn.Linear(2, 1, bias=False)
    live.register_buffer("count", torch.tensor(0.0))
    with torch.no_grad():
        live.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = EMA({"net": live})
    with torch.no_grad():
        live.weight.copy_(torch.tensor([[3.0, 6.0]]))
        live.count.fill_(7.0)
    assert torch.equal(ema["net"].weight, torch.tensor([[1.0, 2.0]]))  # a copy, not a view
    ema.update({"net": live}, beta=0.75)
    assert torch.allclose(ema["net"].weight, torch.tensor([[1.5, 3.0]]))
    ema.update({"net": live}, beta=0.75)
    assert torch.allclose(ema["net"].weight, torch.tensor([[1.875, 3.75]]))
    assert ema["net"].count.item() == 7.0  # buffers copied
    assert not ema["net"].weight.requires_grad
    fresh = EMA({"net": nn.Linear(2, 1, bias=False)})
    fresh["net"].register_buffer("count", torch.tensor(0.0))
    fresh.load_state_dict(ema.state_dict())
    assert torch.equal(fresh["net"].weight, ema["net"].weight)
    ema.update({"net": live}, beta=0.0)
    assert torch.equal(ema["net"].weight, live.weight)
    with pytest.raises(ValueError, match="EMA tracks"):
        ema.update({"other": live}, beta=0.5)


def test_alae_ema_shadow_samples(alae):
    ema = alae.make_ema()
    ema.train()
    assert not ema["generator"].training
    z = torch.randn(2, LATENT)
    with torch.no_grad():
        for p in alae.generator.parameters():
            p.add_(0.1)
    shadow_x, _ = synthesize(ema["mapping"], ema["generator"], z, 1, noise=False)
    assert not torch.equal(shadow_x, alae.generate(z, 1, noise=False))
    ema.update(alae.ema_modules(), beta=0.0)
    alae.eval()
    shadow_x, _ = synthesize(ema["mapping"], ema["generator"], z, 1, noise=False)
    assert torch.equal(shadow_x, alae.generate(z, 1, noise=False))


# ---------------------------------------------------------------- it trains


def test_latent_autoencoding_loss_decreases_at_8px():
    """ALAE's third step, ‖E(G(w)) − w‖², at lod 1 (8 px): E learns to read w back from G's images."""
    torch.manual_seed(0)
    model = ALAE(LATENT, mapping_layers=3, channels=CHANNELS)
    opts = build_optimizers(model, lr=0.002)
    losses, relative = [], []
    for _ in range(120):
        x, w = model.generate(torch.randn(16, LATENT), lod=1, return_w=True)
        w = w.detach()
        loss = (model.encode(x, lod=1) - w).pow(2).mean()
        for o in opts.values():
            o.zero_grad()
        loss.backward()
        for o in opts.values():
            o.step()
        losses.append(loss.item())
        relative.append(loss.item() / w.var(0).mean().item())
    assert sum(losses[20:30]) < 0.7 * sum(losses[:10])  # already falling after ~30 steps
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    # Better than predicting the batch mean of w (relative error 1): E really reads the image.
    assert sum(relative[-20:]) / 20 < 0.85
