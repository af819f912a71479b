"""The step skeleton (gancollapse.models.gan): phase schedule, the one ``_update``, on-device non-finite
skipping, gradient accumulation, NudgedAdam on any model."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from gancollapse.losses import NonSaturatingLoss, StandardLoss
from gancollapse.models.gan import GANModule
from gancollapse.models.phased import PhaseBatch, found_nonfinite, masked_step
from gancollapse.nets.mlp import MLP
from gancollapse.optim.nudged_adam import NudgedAdam
from gancollapse.train import run
from tests.conftest import compose_cfg, metrics_csv


def _gan(optim=None, **kw) -> GANModule:
    torch.manual_seed(0)
    m = GANModule(MLP(4, 2, hidden=16, depth=2), MLP(2, 1, hidden=16, depth=2), NonSaturatingLoss(),
                  optim=optim, z_dim=4, **kw)
    m.use_optimizers(m.configure_optimizers())
    return m


def _state(m: GANModule) -> list[torch.Tensor]:
    """D's parameters and every tensor of D's optimizer state, in a fixed order."""
    out = [p.detach().clone() for p in m.discriminator.parameters()]
    for opt in m._standalone_opts[1:]:
        for p in (p for g in opt.param_groups for p in g["params"]):
            out += [v.clone() for v in opt.state.get(p, {}).values() if isinstance(v, torch.Tensor)]
    return out


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_phase_schedule_counts_d_and_g_steps():
    m = _gan(n_critic=3)
    phases = []
    for _ in range(7):
        phases.append(tuple(m.phases()))
        m.training_step(torch.randn(8, 2))
    assert phases == [("d",), ("d",), ("d", "g")] * 2 + [("d",)]
    assert m.steps == {"d": 7, "g": 2}


@pytest.mark.parametrize("optim", [
    None,  # plain Adam: the generic masked step restores parameters and state
    {"generator": partial(torch.optim.Adam, lr=1e-2, fused=True),
     "discriminator": partial(torch.optim.Adam, lr=1e-2, fused=True)},  # the fused kernel's found_inf
    {"generator": partial(torch.optim.RMSprop, lr=1e-2), "discriminator": partial(torch.optim.RMSprop, lr=1e-2)},
])
def test_nonfinite_step_leaves_weights_and_optimizer_state_untouched(optim):
    m = _gan(optim)
    for _ in range(3):  # build optimizer state first
        m.training_step(torch.randn(8, 2))
    before = _state(m)
    bad = torch.randn(8, 2)
    bad[0, 0] = float("nan")  # D's loss is NaN; G's (fake data only) is not
    m.training_step(bad)
    assert _same(before, _state(m)), "a non-finite step changed D's weights or optimizer state"
    assert m.nonfinite_skips == {"d": 1, "g": 0} and m.steps == {"d": 4, "g": 4}
    m.training_step(torch.randn(8, 2))
    assert not _same(before, _state(m)), "a finite step after a skip must train"


def test_first_step_skipped_leaves_fresh_optimizer_state():
    m = _gan()
    bad = torch.full((8, 2), float("inf"))
    m.training_step(bad)
    for opt in m._standalone_opts[1:]:
        for state in opt.state.values():
            assert all(torch.count_nonzero(v) == 0 for v in state.values() if isinstance(v, torch.Tensor))


def test_found_nonfinite_sees_gradients_as_well_as_the_loss():
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([0.0, float("inf"), 0.0])
    assert float(found_nonfinite(torch.tensor(1.0), [p])) == 1.0
    p.grad = torch.zeros(3)
    assert float(found_nonfinite(torch.tensor(1.0), [p])) == 0.0
    assert float(found_nonfinite(torch.tensor(float("nan")), [p])) == 1.0
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.ones(3)
    masked_step(opt, torch.tensor(1.0))
    assert torch.equal(p.detach(), torch.ones(3))
    masked_step(opt, torch.tensor(0.0))
    assert torch.equal(p.detach(), torch.zeros(3))


def test_step_has_no_host_sync(monkeypatch):
    """``_update`` and the GAN phases read nothing back to the host: .item(), bool() and .tolist() on a
    tensor raise inside a training step (the skip counters are read only at log intervals)."""
    # Fused Adam: torch's own non-fused CPU kernels call .item() on their step counters.
    fused = {"generator": partial(torch.optim.Adam, lr=1e-3, fused=True),
             "discriminator": partial(torch.optim.Adam, lr=1e-3, fused=True)}
    m = _gan(fused, log_every_n_steps=1000)
    m.training_step(torch.randn(8, 2))  # optimizer state exists; the next steps are the steady state

    def forbid(*_a, **_k):
        raise AssertionError("host sync inside a training step")

    for name in ("item", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, forbid)
    for _ in range(3):
        m.training_step(torch.randn(8, 2))
    monkeypatch.undo()
    assert m.steps == {"d": 4, "g": 4}


def test_gradient_accumulation_equals_one_step_on_the_whole_batch():
    """A=2 micro-batches of 8 give the same update as one batch of 16 (SGD, mean losses, no BatchNorm)."""
    sgd = {"generator": partial(torch.optim.SGD, lr=0.1), "discriminator": partial(torch.optim.SGD, lr=0.1)}
    torch.manual_seed(1)
    x, z = torch.randn(16, 2), torch.randn(16, 4)
    whole, acc = _gan(sgd), _gan(sgd, accumulate_grad_batches=2)
    whole._update(whole.d_loss(PhaseBatch(x, z))["loss"], "d")
    for half in (slice(0, 8), slice(8, 16)):
        acc._update(acc.d_loss(PhaseBatch(x[half], z[half]))["loss"], "d")
    for a, b in zip(whole.discriminator.parameters(), acc.discriminator.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert acc.steps == {"d": 1} and acc.micro == {"d": 2}


def test_accumulation_schedule_with_n_critic():
    m = _gan(n_critic=2, accumulate_grad_batches=2)
    for _ in range(8):
        m.training_step(torch.randn(8, 2))
    # 8 batches: D steps every 2 micro-batches; G joins the last 2 of every 4 batches.
    assert m.steps == {"d": 4, "g": 2} and m.micro == {"d": 8, "g": 4}


def test_nudged_adam_runs_on_the_plain_gan():
    nudged = {"generator": partial(NudgedAdam, lr=1e-3, k=2, iterations=4, threshold=0.0, every_n_steps=2),
              "discriminator": partial(torch.optim.Adam, lr=1e-3)}
    plain = {"generator": partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.9)),
             "discriminator": partial(torch.optim.Adam, lr=1e-3)}
    a, b = _gan(nudged), _gan(plain)
    for _ in range(4):
        x = torch.randn(8, 2)
        with torch.random.fork_rng():
            a.training_step(x)
        b.training_step(x)
    opt = a._standalone_opts[0]
    assert opt.checks == 2 and opt.fired_total > 0 and "nugan/g/eig0" in a.nudge_metrics
    moved = [not torch.equal(p, q) for p, q in zip(a.generator.parameters(), b.generator.parameters(), strict=True)]
    assert any(moved), "NudgedAdam behaved as plain Adam"


def test_nudged_adam_rejects_accumulation():
    with pytest.raises(ValueError, match="accumulate_grad_batches"):
        _gan({"generator": partial(NudgedAdam, lr=1e-3)}, accumulate_grad_batches=2)


def test_optim_nudged_adam_on_the_ring_logs_its_spectrum(tmp_path):
    cfg = compose_cfg(["optim=nudged_adam", "loss=standard", "dataset=ring", "max_g_steps=6",
                       "log_every_n_steps=2", "optim.generator.every_n_steps=2", "optim.generator.k=2",
                       "optim.generator.iterations=4", "optim.generator.threshold=0.0",
                       "evaluator=none"])
    summary = run(cfg, tmp_path)
    assert summary["g_steps"] == 6
    rows = metrics_csv(tmp_path, "nugan/g/eig0")
    assert len(rows) == 3  # checks at G steps 0, 2, 4
    assert float(rows[-1]["nugan/g_fired_total"]) > 0


def test_bad_step_options_are_rejected():
    for key in ("n_critic", "accumulate_grad_batches", "log_every_n_steps"):
        with pytest.raises(ValueError, match=key):
            GANModule(MLP(4, 2), MLP(2, 1), StandardLoss(), z_dim=4, **{key: 0})
