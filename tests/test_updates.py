"""Simultaneous vs alternating D/G updates (gancollapse.models.gan ``updates``): both gradients at the step's
starting parameters, on the same fakes, against a hand-written two-step computation on a tiny net."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gancollapse.build import build_module
from gancollapse.losses import NonSaturatingLoss
from gancollapse.models.gan import GANModule
from gancollapse.nets.mlp import MLP
from tests.conftest import compose_cfg

LR = 0.1


def _nets(seed: int = 0) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(seed)
    return nn.Linear(2, 2), nn.Linear(2, 1)


def _module(updates: str, generator: nn.Module | None = None, **kw) -> GANModule:
    g, d = _nets()
    sgd = partial(torch.optim.SGD, lr=LR)
    m = GANModule(generator or g, d, NonSaturatingLoss(), optim={"generator": sgd, "discriminator": sgd}, z_dim=2,
                  updates=updates, skip_nonfinite=False, **kw)
    m.use_optimizers(m.configure_optimizers())
    return m


def _fixed(z: torch.Tensor):  # noqa: ANN202
    return lambda n: z


def _hand_step(real: torch.Tensor, z: torch.Tensor, simultaneous: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One D and one G SGD step written out: D minimises sp(-D(x)) + sp(D(G(z))), G minimises sp(-D(G(z)))."""
    g, d = _nets()
    wg, bg, wd, bd = (p.detach().clone().requires_grad_() for p in (g.weight, g.bias, d.weight, d.bias))
    fake = z @ wg.t() + bg
    d_loss = F.softplus(-(real @ wd.t() + bd)).mean() + F.softplus(fake.detach() @ wd.t() + bd).mean()
    gwd, gbd = torch.autograd.grad(d_loss, [wd, bd])
    new_wd, new_bd = wd - LR * gwd, bd - LR * gbd
    # simultaneous: G's gradient through the D the step started from; alternating: through the updated D
    wd_g, bd_g = (wd, bd) if simultaneous else (new_wd.detach(), new_bd.detach())
    g_loss = F.softplus(-(fake @ wd_g.detach().t() + bd_g.detach())).mean()
    gwg, gbg = torch.autograd.grad(g_loss, [wg, bg])
    return [wg - LR * gwg, bg - LR * gbg], [new_wd, new_bd]


@pytest.mark.parametrize("updates", ["simultaneous", "alternating"])
def test_one_step_equals_the_hand_written_two_step_computation(updates):
    real, z = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.2], [0.1, 0.1]]), torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    m = _module(updates)
    m.sample_z = _fixed(z)
    m.training_step(real)
    want_g, want_d = _hand_step(real, z, simultaneous=updates == "simultaneous")
    got_g = [m.generator.weight, m.generator.bias]
    got_d = [m.discriminator.weight, m.discriminator.bias]
    for got, want in zip(got_g + got_d, want_g + want_d, strict=True):
        assert torch.allclose(got, want.detach(), atol=1e-6)
    assert m.steps == {"d": 1, "g": 1}


def test_simultaneous_and_alternating_differ_in_g_only():
    real, z = torch.randn(8, 2, generator=torch.Generator().manual_seed(2)), torch.randn(8, 2)
    sim, alt = _module("simultaneous"), _module("alternating")
    for m in (sim, alt):
        m.sample_z = _fixed(z)
        m.training_step(real)
    assert torch.equal(sim.discriminator.weight, alt.discriminator.weight)  # D's step is the same
    assert not torch.allclose(sim.generator.weight, alt.generator.weight, atol=1e-7)


def test_simultaneous_runs_the_generator_once_per_step():
    """The fakes D judges are the ones G's loss differentiates: one G forward, one BatchNorm statistics update
    (alternating draws G(z) in each phase)."""
    counts = {}
    for updates in ("simultaneous", "alternating"):
        torch.manual_seed(0)
        g = MLP(2, 2, hidden=8, depth=1, batch_norm=True)
        m = _module(updates, generator=g)
        m.training_step(torch.randn(16, 2))
        counts[updates] = int(g.net[1].num_batches_tracked)
    assert counts == {"simultaneous": 1, "alternating": 2}


def test_bad_update_settings_are_refused_naming_the_key():
    g, d = _nets()
    with pytest.raises(ValueError, match="updates='sometimes'"):
        GANModule(g, d, NonSaturatingLoss(), updates="sometimes")
    with pytest.raises(ValueError, match="updates=simultaneous needs n_critic=1"):
        GANModule(g, d, NonSaturatingLoss(), updates="simultaneous", n_critic=5)
    with pytest.raises(ValueError, match="g_reuse_z=true"):
        GANModule(g, d, NonSaturatingLoss(), updates="simultaneous", g_reuse_z=False)
    with pytest.raises(ValueError, match="updates=simultaneous with compile=reduce-overhead"):
        GANModule(g, d, NonSaturatingLoss(), updates="simultaneous", compile="reduce-overhead")


def test_updates_key_reaches_the_module_and_other_modules_refuse_it():
    cfg = compose_cfg(["updates=simultaneous"])
    assert build_module(cfg).simultaneous
    assert not build_module(compose_cfg([])).simultaneous  # the default: alternating, as before
    with pytest.raises(ValueError, match="updates=simultaneous: DistGANModule has no simultaneous updates"):
        build_module(compose_cfg(["experiment=distgan_mnist", "updates=simultaneous"], tiny=False))
