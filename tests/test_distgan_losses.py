"""Dist-GAN constraints on hand-computed inputs, the MNIST nets, and the phase order of one iteration."""

from __future__ import annotations

import math

import pytest
import torch

from gancollapse.models.distgan import DistGANModule
from gancollapse.models.distgan_losses import (
    discriminator_score_loss,
    generator_score_loss,
    interpolate,
    latent_distance_weight,
    reconstruction_loss,
    score_weights,
    slope_penalty,
)
from gancollapse.models.phased import PhaseBatch
from gancollapse.nets.mnist import MnistDiscriminator, MnistEncoder, MnistGenerator
from gancollapse.samplers.prior import PriorSampler


def test_reconstruction_loss_signed_means():
    t = reconstruction_loss(f_real=torch.tensor([[1.0, 2.0]]), f_recon=torch.tensor([[0.0, 2.0]]),
                            f_fake=torch.tensor([[0.0, 0.0]]), z_enc=torch.tensor([[0.5]]), z=torch.tensor([[0.1]]),
                            lambda_r=2.0, lambda_w=0.5)
    # ae = mean(1, 0) = 0.5; md_x = mean(0, 2) = 1; md_z = 0.5 * 0.4 = 0.2; reg = 0.8² = 0.64
    assert math.isclose(t["ae"].item(), 0.5)
    assert math.isclose(t["md_x"].item(), 1.0)
    assert math.isclose(t["md_z"].item(), 0.2, rel_tol=1e-6)
    assert math.isclose(t["latent_reg"].item(), 0.64, rel_tol=1e-6)
    assert math.isclose(t["r_loss"].item(), 0.5 + 2 * 0.64, rel_tol=1e-6)
    # Signed, not absolute: opposite-sign differences cancel.
    t = reconstruction_loss(torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1, 1))
    assert t["md_x"].item() == 0.0


def test_weights_and_schedule():
    assert latent_distance_weight(100, 4096) == 0.15625
    assert score_weights(0, 1000) == (0.95, 0.05)
    assert score_weights(500, 1000) == (0.95, 0.05)
    w_r, w_rec = score_weights(625, 1000)
    assert math.isclose(w_r, 0.975) and math.isclose(w_rec, 0.025)
    w_r, w_rec = score_weights(5000, 1000)
    assert math.isclose(w_r, 1.0) and math.isclose(w_rec, 0.0, abs_tol=1e-12)
    with pytest.raises(ValueError, match="schedule_steps"):
        score_weights(1, 0)


def test_discriminator_and_generator_scores():
    zero = torch.zeros(4, 1)
    t = discriminator_score_loss(zero, zero, zero, 0.95, 0.05)
    assert math.isclose(t["d_loss"].item(), 2 * math.log(2), rel_tol=1e-6)
    t = discriminator_score_loss(torch.full((2, 1), 3.0), torch.full((2, 1), -1.0), torch.full((2, 1), 2.0), 0.9, 0.1)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert math.isclose(t["d_loss"].item(), 0.9 * sp(-3) + 0.1 * sp(1) + sp(2), rel_tol=1e-6)
    g = generator_score_loss(torch.zeros(2, 1), torch.full((3, 1), math.log(3.0)))
    assert math.isclose(g.item(), 0.25, rel_tol=1e-6)  # |0.5 - 0.75|


def test_slope_penalty_mean_and_sum_forms():
    ones = torch.ones(2, 1, 2, 2)
    assert slope_penalty(ones, "mean").item() == pytest.approx(0.0, abs=1e-6)
    assert slope_penalty(ones, "sum").item() == pytest.approx(1.0, rel=1e-6)  # norm 2
    grad = torch.tensor([[3.0, 3.0, 3.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    assert slope_penalty(grad, "mean").item() == pytest.approx((4.0 + 0.0) / 2, rel=1e-6)
    x, y = torch.zeros(3, 1, 2, 2), torch.ones(3, 1, 2, 2)
    mixed = interpolate(x, y, torch.tensor([0.0, 0.5, 1.0]))
    assert mixed[:, 0, 0, 0].tolist() == [1.0, 0.5, 0.0]


def test_mnist_nets_shapes_and_feature_dim():
    d = MnistDiscriminator(dim=64)
    assert d.feature_dim == 4096
    small = MnistDiscriminator(dim=4)
    logit, f = small(torch.randn(3, 1, 28, 28), return_features=True)
    assert logit.shape == (3, 1) and f.shape == (3, 4 * 4 * 16)
    for bridge in ("fc", "crop"):
        g = MnistGenerator(z_dim=3, dim=4, bridge=bridge)
        out = g(torch.rand(5, 3))
        assert out.shape == (5, 1, 28, 28) and out.abs().max() <= 1
    assert MnistEncoder(z_dim=7, dim=4)(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    with pytest.raises(ValueError, match="bridge"):
        MnistGenerator(bridge="pool")


def _module(**kw) -> DistGANModule:
    torch.manual_seed(0)
    m = DistGANModule(MnistGenerator(z_dim=2, dim=4, bridge="crop"), MnistDiscriminator(dim=4), MnistEncoder(z_dim=2, dim=4),
                      prior=PriorSampler("uniform"), z_dim=2, schedule_steps=10, **kw)
    m.use_optimizers(m.configure_optimizers())  # no Trainer in a unit test
    return m


def _snapshot(net):
    return [p.detach().clone() for p in net.parameters()]


def _changed(net, before):
    return any(not torch.equal(p, b) for p, b in zip(net.parameters(), before, strict=True))


def test_phases_update_only_their_nets():
    m = _module()
    assert m.lambda_w == pytest.approx(math.sqrt(2 / 256))  # f = 4·4·(4·4) values
    opt_g, opt_d, opt_r = m._standalone_opts
    assert {id(p) for p in opt_r.param_groups[0]["params"]} == {id(p) for p in [*m.encoder.parameters(), *m.generator.parameters()]}
    real, z = torch.rand(8, 1, 28, 28) * 2 - 1, m.sample_z(8)
    nets = {"g": m.generator, "d": m.discriminator, "e": m.encoder}
    expect = {"r": {"g", "e"}, "d": {"d"}, "g": {"g"}}
    for phase in ("r", "d", "g"):
        assert m.current_phase() == phase
        before = {k: _snapshot(n) for k, n in nets.items()}
        with torch.random.fork_rng():
            m.training_step(real)
        changed = {k for k, n in nets.items() if _changed(n, before[k])}
        # BatchNorm running stats are buffers, not parameters: only the optimised nets may move.
        assert changed == expect[phase], phase
    d_terms = m.discriminator_loss(real, z)
    assert d_terms["gp"].requires_grad and d_terms["gp"].item() > 0
    assert m.current_phase() == "r" and m.steps == {"r": 1, "d": 1, "g": 1}


def test_distgan_rejects_bad_config():
    with pytest.raises(ValueError, match="n_critic"):
        _module(n_critic=2)
    with pytest.raises(ValueError, match="gp_reduction"):
        _module(gp_reduction="max")
    with pytest.raises(ValueError, match="nudge"):
        _module(nudge_discriminator=True)


def test_nonfinite_reconstruction_loss_is_skipped_and_counted():
    m = _module()
    before = _snapshot(m.encoder)
    loss = m.r_loss(PhaseBatch(torch.rand(8, 1, 28, 28), m.sample_z(8)))["loss"] * float("nan")
    m._update(loss, "r")
    assert m.nonfinite_skips["r"] == 1 and not _changed(m.encoder, before)
