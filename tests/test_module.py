"""The step skeleton (gancollapse.models.gan): phase schedule, the one ``_update``, on-device non-finite
skipping, gradient accumulation, NudgedAdam on any model."""

from __future__ import annotations

import os
from functools import partial

import lightning as L
import pytest
import torch
from torch import nn

from gancollapse.losses import NonSaturatingLoss, StandardLoss
from gancollapse.models import phased
from gancollapse.models.gan import GANModule
from gancollapse.models.phased import (
    PhaseBatch,
    direct_path,
    found_nonfinite,
    masked_step,
    nonfinite_on_host,
    skip_path,
)
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


FUSED = {"generator": partial(torch.optim.Adam, lr=1e-2, fused=True),
         "discriminator": partial(torch.optim.Adam, lr=1e-2, fused=True)}
RMSPROP = {"generator": partial(torch.optim.RMSprop, lr=1e-2), "discriminator": partial(torch.optim.RMSprop, lr=1e-2)}


@pytest.mark.parametrize(("optim", "sync_free", "path"), [
    (None, None, "host"),  # plain Adam on the CPU: the flag is read and the bad step gets no gradients
    (None, True, "masked"),  # the accelerator's way, forced: step, then restore parameters and state
    (FUSED, None, "fused"),  # the fused kernel's found_inf
    (RMSPROP, None, "host"),
    (RMSPROP, True, "masked"),
])
def test_nonfinite_step_leaves_weights_and_optimizer_state_untouched(optim, sync_free, path):
    m = _gan(optim)
    m.sync_free_skip = sync_free
    for _ in range(3):  # build optimizer state first
        m.training_step(torch.randn(8, 2))
    before = _state(m)
    bad = torch.randn(8, 2)
    bad[0, 0] = float("nan")  # D's loss is NaN; G's (fake data only) is not
    m.training_step(bad)
    assert _same(before, _state(m)), "a non-finite step changed D's weights or optimizer state"
    assert m.nonfinite_skips == {"d": 1, "g": 0} and m.steps == {"d": 4, "g": 4}
    assert m.consecutive_skips == {"d": 1, "g": 0} and m.skip_paths == {"d": path, "g": path}
    m.training_step(torch.randn(8, 2))
    assert not _same(before, _state(m)), "a finite step after a skip must train"
    assert m.nonfinite_skips == {"d": 1, "g": 0} and m.consecutive_skips == {"d": 0, "g": 0}


@pytest.mark.parametrize("sync_free", [None, True])
def test_first_step_skipped_leaves_fresh_optimizer_state(sync_free):
    m = _gan()
    m.sync_free_skip = sync_free
    bad = torch.full((8, 2), float("inf"))
    m.training_step(bad)
    for opt in m._standalone_opts[1:]:
        for state in opt.state.values():
            assert all(torch.count_nonzero(v) == 0 for v in state.values() if isinstance(v, torch.Tensor))


def test_cpu_step_reads_the_flag_instead_of_copying_the_weights(monkeypatch):
    """On the CPU a non-fused optimizer takes the host path: no clone-and-restore of weights and state
    (masked_step is never called), and a skip streak counts up and resets as on the device."""
    m = _gan(RMSPROP)

    def no_masked_step(*_a, **_k):
        raise AssertionError("masked_step (clone and restore) on the CPU")

    monkeypatch.setattr(phased, "masked_step", no_masked_step)
    bad = torch.randn(8, 2)
    bad[0, 0] = float("inf")
    for x in (bad, bad, torch.randn(8, 2), bad):
        m.training_step(x)
    assert m.skip_paths == {"d": "host", "g": "host"}
    assert m.nonfinite_skips == {"d": 3, "g": 0} and m.consecutive_skips == {"d": 1, "g": 0}


def test_skip_path_by_optimizer_and_device():
    p = [nn.Parameter(torch.ones(2))]
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert skip_path(torch.optim.RMSprop(p), cpu) == "host"
    assert skip_path(torch.optim.RMSprop(p), cuda) == "masked"
    assert skip_path(torch.optim.RMSprop(p), cpu, sync_free=True) == "masked"
    assert skip_path(torch.optim.RMSprop(p), cuda, sync_free=False) == "host"
    assert skip_path(torch.optim.Adam(p, fused=True), cpu) == "fused"
    assert skip_path(torch.optim.Adam(p, fused=True), cuda, sync_free=False) == "fused"


def test_accumulated_nonfinite_micro_batch_skips_the_step_on_every_path():
    """A NaN loss in the first of two micro-batches skips the step even when the last one is finite."""
    sgd = {"generator": partial(torch.optim.SGD, lr=0.1, momentum=0.9),
           "discriminator": partial(torch.optim.SGD, lr=0.1, momentum=0.9)}
    for sync_free in (None, True):
        m = _gan(sgd, accumulate_grad_batches=2)
        m.sync_free_skip = sync_free
        before = [p.detach().clone() for p in m.discriminator.parameters()]
        x, z = torch.randn(8, 2), torch.randn(8, 4)
        nan_loss = m.d_loss(PhaseBatch(x, z))["loss"] * float("nan")
        m._update(nan_loss, "d")
        for p in m.discriminator.parameters():
            p.grad = torch.zeros_like(p)  # finite gradients: only the first loss was bad
        m._update(m.d_loss(PhaseBatch(x, z))["loss"], "d")
        assert m.nonfinite_skips == {"d": 1}, sync_free
        assert all(torch.equal(a, b) for a, b in zip(before, m.discriminator.parameters(), strict=True))


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
    p.grad = torch.tensor([0.0, float("nan"), 0.0])
    assert nonfinite_on_host(torch.tensor(1.0), [p]) is True
    p.grad = torch.zeros(3)
    assert nonfinite_on_host(torch.tensor(1.0), [p]) is False
    assert nonfinite_on_host(torch.tensor(float("inf")), [p]) is True


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


def test_nudged_adam_step_without_gradients_after_a_nudge_changes_nothing():
    """The host path skips a bad step by stepping without gradients; an armed projection must not act then
    (nor fail on the moments a first step has not created)."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4))
    opt = NudgedAdam([w], lr=1e-2, k=1, iterations=2, threshold=-1e9, every_n_steps=1)
    opt.nudge((w ** 4).sum())  # arms the projection (threshold below every eigenvalue)
    before = w.detach().clone()
    opt.zero_grad(set_to_none=True)
    opt.step()
    assert torch.equal(w.detach(), before) and not opt.state


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


class CountHooks(L.Callback):
    """Counts Lightning's backward and optimizer-step hooks (a listener: the module must go through Lightning)."""

    calls: dict[str, int] = {}

    def on_after_backward(self, trainer, pl_module) -> None:  # noqa: ANN001
        CountHooks.calls["backward"] = CountHooks.calls.get("backward", 0) + 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        CountHooks.calls["step"] = CountHooks.calls.get("step", 0) + 1


class OnlyStepHook(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        pass


def _trainer(**kw) -> L.Trainer:
    return L.Trainer(**{"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False, **kw})


def test_backward_and_step_go_around_lightning_only_where_nothing_listens():
    m = _gan()
    assert direct_path(_trainer(), m)
    assert direct_path(_trainer(precision="bf16-mixed"), m)
    assert not direct_path(_trainer(callbacks=[CountHooks()]), m)
    assert not direct_path(_trainer(callbacks=[OnlyStepHook()]), m)
    assert not direct_path(_trainer(profiler="simple"), m)
    assert not direct_path(_trainer(devices=2, strategy="ddp"), m)


class SeenPath(L.Callback):
    """Records the module's hook path and Lightning's step count at the end of training."""

    seen: dict[str, object] = {}

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        SeenPath.seen = {"path": pl_module.hook_path, "global_step": trainer.global_step,
                         "steps": pl_module.d_steps + pl_module.g_steps}


@pytest.mark.parametrize("listen", [False, True])
def test_every_step_is_counted_and_every_listener_called_on_both_paths(tmp_path, listen):
    """The direct path still counts each optimizer step in trainer.global_step (checkpoint cadence, resume);
    with a listening callback the hooks run once per backward and per step."""
    CountHooks.calls, SeenPath.seen = {}, {}
    extra = ["+callbacks.count._target_=tests.test_module.CountHooks"] if listen else []
    cfg = compose_cfg(["max_g_steps=4", "evaluator=none", "+callbacks.seen._target_=tests.test_module.SeenPath",
                       *extra])
    summary = run(cfg, tmp_path)
    steps = summary["d_steps"] + summary["g_steps"]
    assert summary["g_steps"] == 4 and SeenPath.seen == {"path": "lightning" if listen else "direct",
                                                         "global_step": steps, "steps": steps}
    assert CountHooks.calls == ({"backward": steps, "step": steps} if listen else {})


class Snapshot(L.Callback):
    """The module's weights, its optimizers' states and learning rates, the path it took and Lightning's step
    count, at the end of training."""

    taken: dict[str, object] = {}

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        Snapshot.taken = {
            "path": pl_module.hook_path, "global_step": trainer.global_step,
            "weights": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "opt_state": [[v.clone() for s in o.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
                          for o in trainer.optimizers],
            "lr": [g["lr"] for o in trainer.optimizers for g in o.param_groups],
        }


def test_direct_path_trains_the_same_weights_as_lightnings_path(tmp_path):
    """The direct backward/step gives bitwise the weights, optimizer state, learning rates and step count of
    Lightning's manual_backward / LightningOptimizer.step, with n_critic=2, weight clipping after D's steps
    (after_update), Adam with a per-epoch StepLR crossing an epoch boundary and non-finite checks on."""
    base = ["max_g_steps=7", "evaluator=none", "n_critic=2", "optim=adam", "regularizer=weight_clipping",
            "regularizer.weight_clipping.clip=0.05", "dataset.n_samples=800",
            "optim.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1,gamma:0.5}",
            "+callbacks.snap._target_=tests.test_module.Snapshot"]
    taken = {}
    for path, extra in (("direct", []), ("lightning", ["+callbacks.listen._target_=tests.test_module.OnlyStepHook"])):
        Snapshot.taken = {}
        run(compose_cfg([*base, *extra]), tmp_path / path)
        taken[path] = Snapshot.taken
        assert taken[path]["path"] == path
    a, b = taken["direct"], taken["lightning"]
    assert a["global_step"] == b["global_step"] == 7 * 3  # 2 D steps and 1 G step per G step
    assert a["lr"] == b["lr"] and a["lr"][0] < 2e-4, "the scheduler stepped differently (or not at all)"
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    for sa, sb in zip(a["opt_state"], b["opt_state"], strict=True):
        assert len(sa) == len(sb) > 0 and all(torch.equal(x, y) for x, y in zip(sa, sb, strict=True))


class NoSharedFake(L.Callback):
    """Turns off the fake sharing between D's and G's phases (the reference: G recomputes G(z))."""

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        pl_module.share_fake = False


class CountGForwards(L.Callback):
    """Counts G's training-mode forward passes."""

    calls = 0

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        CountGForwards.calls = 0

        def count(module, args, out) -> None:  # noqa: ANN001
            CountGForwards.calls += int(module.training)

        pl_module.generator.register_forward_hook(count)


@pytest.mark.parametrize("extra", [
    [],
    ["n_critic=2", "optim=adam"],
    ["regularizer=[gradient_penalty,topk]", "loss=wasserstein"],
    ["regularizer=unrolled", "regularizer.unrolled.k=2"],
    ["regularizer=pack"],
    ["regularizer=maem"],
], ids=["plain", "n_critic2", "wgan_gp_topk", "unrolled", "pack", "maem"])
def test_shared_fakes_train_bitwise_the_same_weights_with_one_g_forward_fewer(tmp_path, extra):
    """D's phase records G(z) with grad and G's phase backpropagates through it: the same weights and
    optimizer state, bitwise, as recomputing G(z) in G's phase, with one G forward per G step fewer."""
    base = ["max_g_steps=6", "evaluator=none", "dataset.n_samples=800", "model.generator.hidden=32",
            "model.discriminator.hidden=32", "+callbacks.snap._target_=tests.test_module.Snapshot",
            "+callbacks.count._target_=tests.test_module.CountGForwards", *extra]
    taken, forwards = {}, {}
    for name, more in (("shared", []), ("recomputed", ["+callbacks.off._target_=tests.test_module.NoSharedFake"])):
        Snapshot.taken = {}
        summary = run(compose_cfg([*base, *more]), tmp_path / name)
        taken[name], forwards[name] = Snapshot.taken, CountGForwards.calls
    assert forwards["recomputed"] - forwards["shared"] == summary["g_steps"] == 6
    a, b = taken["shared"], taken["recomputed"]
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    for sa, sb in zip(a["opt_state"], b["opt_state"], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(sa, sb, strict=True))


def test_fakes_are_not_shared_where_a_second_g_forward_is_not_a_repeat():
    """Batch norm (running statistics), dropout or spectral norm (power iteration) in G, G drawing its own z:
    G's phase recomputes."""
    assert _gan().share_fake
    assert not _gan(g_reuse_z=False).share_fake
    torch.manual_seed(0)
    bn_g = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    assert not GANModule(bn_g, MLP(2, 1, hidden=16, depth=2), NonSaturatingLoss(), z_dim=4).share_fake
    drop_g = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2))
    assert not GANModule(drop_g, MLP(2, 1, hidden=16, depth=2), NonSaturatingLoss(), z_dim=4).share_fake
    for sn in (nn.utils.parametrizations.spectral_norm, nn.utils.spectral_norm):  # power iteration per forward
        sn_g = nn.Sequential(sn(nn.Linear(4, 8)), nn.ReLU(), nn.Linear(8, 2))
        assert not GANModule(sn_g, MLP(2, 1, hidden=16, depth=2), NonSaturatingLoss(), z_dim=4).share_fake


def _nvml_probe(answer):
    def probe() -> int:
        if isinstance(answer, Exception):
            raise answer
        return answer
    return probe


@pytest.mark.parametrize("nvml_count, flag, expected", [
    (OSError("libnvidia-ml.so.1: cannot open shared object file"), "1", "0"),  # no NVIDIA driver
    (-1, "1", "0"),  # the library loads, nvmlInit fails
    (0, "1", "1"), (2, "1", "1"), (-1, None, None), (RuntimeError("?"), "1", "1"),
], ids=["no_library", "init_fails", "no_gpu", "two_gpus", "not_asked", "unknown_error"])
def test_the_nvml_probe_is_skipped_only_where_nvml_cannot_load(monkeypatch, nvml_count, flag, expected):
    """Lightning's NVML-based CUDA check is replaced by CUDA's own count only where NVML fails to load (the
    check would fall back to it anyway); where NVML answers, or Lightning did not ask for it, nothing changes."""
    from gancollapse.runner import skip_failing_nvml_probe

    if flag is None:
        monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK", raising=False)
    else:
        monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", flag)
    monkeypatch.setattr(torch.cuda, "_raw_device_count_nvml", _nvml_probe(nvml_count))
    assert skip_failing_nvml_probe() == (expected == "0")
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == expected


def test_bench_toy_plain_loop_styles_run_and_an_unknown_style_is_refused():
    """``scripts/bench_toy.py --plain same|textbook|seed``: each bare loop trains a few steps; a typo is refused."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_toy.py"
    spec = importlib.util.spec_from_file_location("bench_toy_script", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for style in bench.PLAIN_STYLES:
        speed = bench.plain_loop(2, "cpu", batch=32, n=256, style=style)
        assert speed["wall"] > 0 and speed["cpu"] > 0, style
    with pytest.raises(ValueError, match="plain loop style 'seed-style'"):
        bench.plain_loop(2, "cpu", style="seed-style")
