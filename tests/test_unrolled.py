"""Unrolled GAN (gancollapse.regularizers.unrolled): the look-ahead is k steps of D's own optimizer, G's gradient
is the derivative of the unrolled objective, k = 0 is the plain GAN, and bad combinations are refused."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from gancollapse.losses import HingeLoss, NonSaturatingLoss, StandardLoss, WassersteinLoss
from gancollapse.models.gan import GANModule
from gancollapse.models.phased import PhaseBatch
from gancollapse.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gancollapse.nets.mlp import MLP
from gancollapse.regularizers.base import Step
from gancollapse.regularizers.gradient_penalty import GradientPenalty
from gancollapse.regularizers.maem import ManifoldEntropy
from gancollapse.regularizers.spectral_norm import SpectralNorm
from gancollapse.regularizers.unrolled import Unrolled, optimizer_rule, rule_step
from gancollapse.regularizers.weight_clipping import WeightClipping
from gancollapse.train import run
from tests.conftest import compose_cfg, metric_values

OPTIMS = {
    "adam": partial(torch.optim.Adam, lr=1e-2, betas=(0.5, 0.9), weight_decay=1e-3),
    "adamw": partial(torch.optim.AdamW, lr=1e-2, betas=(0.5, 0.9), weight_decay=1e-2),
    "rmsprop": partial(torch.optim.RMSprop, lr=1e-2),
    "rmsprop_centered_momentum": partial(torch.optim.RMSprop, lr=1e-2, centered=True, momentum=0.5, weight_decay=1e-3),
    "sgd_nesterov": partial(torch.optim.SGD, lr=1e-1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_dampening": partial(torch.optim.SGD, lr=1e-1, momentum=0.5, dampening=0.3),
}


def _module(reg: Unrolled | None, d_opt=OPTIMS["adam"], objective=None, dtype=torch.float64, d_net=None,
            g_net=None, z_dim=3, extra=None, **kw) -> GANModule:
    torch.manual_seed(0)
    g = g_net if g_net is not None else MLP(z_dim, 2, hidden=6, depth=1)
    d = d_net if d_net is not None else MLP(2, 1, hidden=5, depth=2, negative_slope=0.2)
    regs = {"unrolled": reg} if reg is not None else {}
    regs.update(extra or {})
    m = GANModule(g.to(dtype), d.to(dtype), objective or NonSaturatingLoss(), regs,
                  optim={"generator": partial(torch.optim.Adam, lr=1e-3), "discriminator": d_opt}, z_dim=z_dim, **kw)
    m.use_optimizers(m.configure_optimizers())
    return m


def _batch(m: GANModule, n: int = 8, dim: int = 2, dtype=torch.float64) -> PhaseBatch:
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(n, dim, generator=gen, dtype=dtype)
    return PhaseBatch(real, torch.randn(n, m.z_dim, generator=gen, dtype=dtype))


def _warm_up(m: GANModule, pb: PhaseBatch, steps: int = 2) -> None:
    """Real D steps, so D's optimizer has non-zero moments and a step count for the look-ahead to continue."""
    for _ in range(steps):
        m._update(m.d_loss(pb)["loss"], "d")


def _g_step(m: GANModule, pb: PhaseBatch) -> Step:
    fake = m.generator(pb.z)
    return Step("g", pb.real, fake, pb.z, None, None, m.generator, m.discriminator, m.g_steps, 0)


def _lookahead(reg: Unrolled, *module_args) -> tuple[GANModule, PhaseBatch, Step, dict[str, torch.Tensor]]:
    """A module with ``reg`` after two real D steps, its batch, a G step on it and the look-ahead's θ^k."""
    m = _module(reg, *module_args)
    pb = _batch(m)
    _warm_up(m, pb)
    step = _g_step(m, pb)
    return m, pb, step, reg.g_discriminator(m, step).params


@pytest.mark.parametrize("name", list(OPTIMS))
def test_lookahead_is_k_steps_of_ds_own_optimizer(name):
    """θ^k of the look-ahead equals k real steps of a copy of D and its optimizer on the same batch."""
    reg = Unrolled(k=3)
    m, pb, step, theta = _lookahead(reg, OPTIMS[name])
    assert reg.rule == optimizer_rule(m._standalone_opts[1]) and reg.k == 3 and reg.lr_used == OPTIMS[name].keywords["lr"]

    d = copy.deepcopy(m.discriminator)
    opt = OPTIMS[name](d.parameters())
    opt.load_state_dict(m._standalone_opts[1].state_dict())
    fake = step.fake.detach()
    for _ in range(3):
        opt.zero_grad()
        out = d(torch.cat([pb.real, fake]))
        m.objective.d_loss(out[:8], out[8:]).backward()
        opt.step()
    for n, p in d.named_parameters():
        torch.testing.assert_close(theta[n], p, rtol=1e-10, atol=1e-12)
        assert not torch.equal(p, dict(m.discriminator.named_parameters())[n])  # the look-ahead moved


def test_update_sgd_is_plain_gradient_descent_at_the_given_lr():
    reg = Unrolled(k=2, update="sgd", lr=0.3)
    m, pb, step, theta = _lookahead(reg)
    d = copy.deepcopy(m.discriminator)
    opt = torch.optim.SGD(d.parameters(), lr=0.3)
    for _ in range(2):
        opt.zero_grad()
        out = d(torch.cat([pb.real, step.fake.detach()]))
        m.objective.d_loss(out[:8], out[8:]).backward()
        opt.step()
    for n, p in d.named_parameters():
        torch.testing.assert_close(theta[n], p, rtol=1e-10, atol=1e-12)
    assert reg.rule == "sgd" and reg.lr_used == 0.3


@pytest.mark.parametrize("update,objective,g_objective", [("optimizer", NonSaturatingLoss(), "g_loss"),
                                                          ("sgd", HingeLoss(), "g_loss"),
                                                          ("optimizer", StandardLoss(), "value")])
def test_g_gradient_is_the_derivative_of_the_unrolled_objective(update, objective, g_objective):
    """Central finite differences of G's unrolled loss (float64) match the gradient G's step backpropagates,
    which therefore includes the look-ahead's dependence on θ_G."""
    reg = Unrolled(k=3, update=update, lr=0.5 if update == "sgd" else None, g_objective=g_objective)
    m = _module(reg, objective=objective)
    pb = _batch(m)
    _warm_up(m, pb)
    params = list(m.generator.parameters())
    m.generator.zero_grad()
    m.g_loss(pb)["loss"].backward()
    analytic = torch.cat([p.grad.flatten() for p in params])
    numeric = torch.zeros_like(analytic)
    h, i = 1e-6, 0
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for j in range(flat.numel()):
                old = flat[j].item()
                flat[j] = old + h
                with torch.enable_grad():
                    up = m.g_loss(pb)["loss"].item()
                flat[j] = old - h
                with torch.enable_grad():
                    down = m.g_loss(pb)["loss"].item()
                flat[j] = old
                numeric[i] = (up - down) / (2 * h)
                i += 1
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    # the look-ahead matters: the gradient with D frozen at θ⁰ (the plain GAN's) is a different vector
    plain = _module(None, objective=objective)
    plain.load_state_dict(m.state_dict())
    plain.generator.zero_grad()
    plain.g_loss(pb)["loss"].backward()
    frozen = torch.cat([p.grad.flatten() for p in plain.generator.parameters()])
    assert (analytic - frozen).norm() > 1e-3 * analytic.norm()


def test_k0_is_exactly_the_plain_gan():
    pb = None
    losses, grads = [], []
    for reg in (None, Unrolled(k=0), Unrolled(k=1)):
        m = _module(reg, dtype=torch.float32)
        pb = pb or _batch(m, dtype=torch.float32)
        _warm_up(m, pb)
        m.generator.zero_grad()
        out = m.g_loss(pb)
        out["loss"].backward()
        losses.append(out["loss"].detach())
        grads.append([p.grad.clone() for p in m.generator.parameters()])
    assert torch.equal(losses[0], losses[1])
    assert all(torch.equal(a, b) for a, b in zip(grads[0], grads[1], strict=True))
    assert not torch.equal(losses[0], losses[2])  # one look-ahead step already changes G's loss


def test_value_objective_is_minus_ds_loss_at_the_unrolled_d():
    """g_objective=value with the standard GAN: G minimises −L_D(θ_G, θ^k), real term included (the notebook's
    −unrolled_loss)."""
    reg = Unrolled(k=2, g_objective="value")
    m = _module(reg, objective=StandardLoss())
    pb = _batch(m)
    _warm_up(m, pb)
    torch.manual_seed(3)
    total = m.g_loss(pb)["loss"]
    torch.manual_seed(3)
    final = reg.g_discriminator(m, _g_step(m, pb))
    expected = -m.objective.d_loss(final(pb.real), final(m.generator(pb.z)))
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=1e-12)


def test_lookahead_changes_neither_d_nor_its_optimizer_nor_its_buffers():
    """Spectral norm's power-iteration vectors and BatchNorm statistics are buffers the look-ahead must copy."""
    d = DCGANDiscriminator(channels=1, base=2, img_size=28, batchnorm=True)
    reg = Unrolled(k=2)
    m = _module(reg, d_net=d, g_net=DCGANGenerator(4, channels=1, base=2, img_size=28), z_dim=4,
                dtype=torch.float32, extra={"spectral_norm": SpectralNorm()})
    gen = torch.Generator().manual_seed(0)
    pb = PhaseBatch(torch.rand(6, 1, 28, 28, generator=gen) * 2 - 1, torch.randn(6, 4, generator=gen))
    _warm_up(m, pb)
    before = {k: v.clone() for k, v in m.discriminator.state_dict().items()}
    opt_before = copy.deepcopy(m._standalone_opts[1].state_dict())
    m.generator.zero_grad()
    m.g_loss(pb)["loss"].backward()
    after = m.discriminator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k], after[k])]
    opt_after = m._standalone_opts[1].state_dict()["state"]
    assert all(torch.equal(v, opt_after[i][n]) for i, s in opt_before["state"].items() for n, v in s.items())
    assert all(torch.isfinite(p.grad).all() for p in m.generator.parameters())
    assert any(p.grad.abs().sum() > 0 for p in m.generator.parameters())


@pytest.mark.parametrize("d_opt", [partial(torch.optim.Adam, lr=1e-2), partial(torch.optim.RMSprop, lr=1e-2)],
                         ids=["adam", "rmsprop"])
def test_a_parameter_with_zero_gradient_and_moment_keeps_gs_gradient_finite(d_opt):
    """A hidden unit whose outgoing weight is 0 gives its incoming weights a gradient of exactly 0 (no weight
    decay); from a fresh optimizer state √v is then √0, whose derivative (∞·0) would make G's gradient NaN."""
    reg = Unrolled(k=2)
    m = _module(reg, d_opt)
    with torch.no_grad():
        m.discriminator.net[-1].weight[:, 0] = 0.0
    pb = _batch(m)
    m.generator.zero_grad()
    m.g_loss(pb)["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.generator.parameters())


def test_replays_ds_regularizer_terms_only_when_asked():
    gp = GradientPenalty(weight=10.0)
    with_gp, without = Unrolled(k=2), Unrolled(k=2, d_regularizers=False)
    thetas = []
    for reg in (with_gp, without):
        m = _module(reg, objective=WassersteinLoss(), extra={"gradient_penalty": gp})
        pb = _batch(m)
        _warm_up(m, pb)
        torch.manual_seed(5)
        thetas.append(reg.g_discriminator(m, _g_step(m, pb)).params)
    assert with_gp.replayed == ["gradient_penalty"] and without.replayed == []
    assert any(not torch.equal(thetas[0][n], thetas[1][n]) for n in thetas[0])


@pytest.mark.parametrize("build,key", [
    (lambda: _module(Unrolled(k=1), extra={"again": Unrolled(k=2)}), "regularizer=[unrolled,again]"),
    (lambda: _module(Unrolled(k=1), d_opt=partial(torch.optim.Adagrad, lr=1e-2)), "regularizer.unrolled.update=optimizer"),
    (lambda: _module(Unrolled(k=1, g_objective="value"), objective=HingeLoss()), "regularizer.unrolled.g_objective=value"),
    (lambda: _module(Unrolled(k=1), extra={"clip": WeightClipping()}), "regularizer.unrolled.d_regularizers=true"),
    (lambda: _module(Unrolled(k=1), extra={"maem": ManifoldEntropy(code_dim=1)}), "regularizer.unrolled.d_regularizers=true"),
    (lambda: _module(Unrolled(k=1), compile=True), "regularizer.unrolled.k>0 with compile=true"),
    (lambda: Unrolled(k=-1), "regularizer.unrolled.k=-1"),
    (lambda: Unrolled(update="adam"), "regularizer.unrolled.update='adam'"),
])
def test_bad_combinations_are_refused_in_one_line_naming_the_key(build, key):
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")) as err:
        build()
    assert "\n" not in str(err.value)


def test_amsgrad_is_refused_at_start_up_and_at_the_first_lookahead():
    with pytest.raises(ValueError, match="optim.discriminator.amsgrad=true"):
        _module(Unrolled(k=1), d_opt=partial(torch.optim.Adam, lr=1e-2, amsgrad=True))
    reg = Unrolled(k=1)
    m = _module(reg)  # an optimizer swapped in after start-up is checked when it is first replayed
    m.use_optimizers([m._standalone_opts[0], torch.optim.Adam(m.discriminator.parameters(), amsgrad=True)])
    with pytest.raises(ValueError, match="amsgrad"):
        m.g_loss(_batch(m))


def test_rule_step_sgd_without_group_is_plain_descent():
    p, g = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.25])
    new, state = rule_step("sgd", {}, 0.1)(p, g, {})
    torch.testing.assert_close(new, p - 0.1 * g)
    assert state == {}


def test_ring_run_with_unrolled_trains_and_stacks_with_spectral_norm(tmp_path):
    cfg = compose_cfg(["regularizer=[unrolled,spectral_norm]", "regularizer.unrolled.k=2", "max_g_steps=20",
                       "evaluator=none", "log_every_n_steps=2"])
    summary = run(cfg, tmp_path)
    assert summary["g_steps"] == 20 and summary["status"] == "finished"
    g_losses = metric_values(tmp_path, "train/g_loss")
    assert len(g_losses) >= 5 and all(map(lambda v: v == v, g_losses))
    assert max(g_losses) - min(g_losses) > 1e-3


def test_dcgan_digits_run_stacks_unrolled_gdpp_and_spectral_norm(tmp_path):
    cfg = compose_cfg(["regularizer=[unrolled,gdpp,spectral_norm]", "regularizer.unrolled.k=2", "dataset=digits",
                       "model.generator.base=8", "model.discriminator.base=8", "max_g_steps=3", "evaluator=none",
                       "log_every_n_steps=1", "callbacks.progress_bar=null"], tiny=False)
    assert cfg.model.discriminator._target_.endswith("DCGAN32Discriminator")
    summary = run(cfg, tmp_path)
    assert summary["g_steps"] == 3 and summary["status"] == "finished"
    gdpp = metric_values(tmp_path, "train/gdpp")
    assert len(gdpp) == 3 and all(v > 0 for v in gdpp)
