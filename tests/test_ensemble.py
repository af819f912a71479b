"""``ensemble=K``: K seeds in one batched process, each member equal to the single run of its seed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import gancollapse
from gancollapse.aggregate import run_signature
from gancollapse.build import build_module
from gancollapse.data.toy import ToyDataModule
from gancollapse.ensemble import member_config
from gancollapse.models.ensemble import EnsembleGAN, check_config
from gancollapse.nets.mlp import MLP
from gancollapse.nets.stacked import StackedMLP
from gancollapse.optim.stacked import stacked_optimizer
from gancollapse.paths import CONF_DIR
from gancollapse.regularizers.pack import Pack
from gancollapse.regularizers.spectral_norm import apply_spectral_norm
from gancollapse.report import write_report
from gancollapse.runner import config_changes
from gancollapse.train import run

from .conftest import compose_cfg

# Tiny nets, 4 batches per epoch (6 G steps cross an epoch: top-k's schedule and the loader's order advance),
# an evaluation mid-run and at the end. eps=1e-3: the first RMSprop/Adam steps are ±lr wherever |gradient| is
# far below eps, so with the default 1e-8 a round-off difference in a near-zero gradient (baddbmm instead of
# addmm) can flip a whole update; a larger eps keeps the step a smooth function of the gradient, so the same math
# shows as the same numbers.
TOY = ["model.generator.hidden=16", "model.discriminator.hidden=16", "model.generator.depth=2",
       "model.discriminator.depth=2", "dataset.n_samples=100", "dataset.batch_size=25", "callbacks.progress_bar=null",
       "log_every_n_steps=1", "max_g_steps=6", "evaluator.every_n_steps=3", "evaluator.n_samples=500",
       "evaluator.frames=false", "+optim.generator.eps=1e-3", "+optim.discriminator.eps=1e-3"]
SAME = ("status", "g_steps", "d_steps", "epoch", "nonfinite_skips", "seed", "loss", "regularizers", "applied")
# The reproduction ledger's cells in miniature (conf/experiment/repro): each file's model, loss, optimizer betas,
# updates, data layout and capture rule, with tiny widths, 4 batches per epoch (6 G steps cross an epoch: fresh data
# are redrawn) and Adam's eps raised as in TOY.
CELL = ["dataset.n_samples=96", "dataset.batch_size=24", "callbacks.progress_bar=null", "log_every_n_steps=1",
        "max_g_steps=6", "evaluator.every_n_steps=3", "evaluator.n_samples=500", "evaluator.frames=false",
        "optim.generator.eps=1e-3", "optim.discriminator.eps=1e-3"]


def toy(*overrides: str):
    return compose_cfg([*TOY, *overrides], tiny=False)


def assert_member_is_single_run(member_dir, single_dir, atol: float = 1e-5) -> None:
    member = gancollapse.load(member_dir, which="last").module.state_dict()
    single = gancollapse.load(single_dir, which="last").module.state_dict()
    assert member.keys() == single.keys()
    for key, value in single.items():
        torch.testing.assert_close(member[key].float(), value.float(), atol=atol, rtol=0, msg=key)
    a = json.loads((member_dir / "summary.json").read_text())
    b = json.loads((single_dir / "summary.json").read_text())
    assert {k: a.get(k) for k in SAME} == {k: b.get(k) for k in SAME}
    for key in ("toy/modes", "toy/hq_fraction", "toy/g_step"):
        assert (key in a) == (key in b), key
        if key in b:
            assert a[key] == pytest.approx(b[key], abs=2e-3), key
    # what each logged, step by step: the member's own losses, not the ensemble's
    logged, expected = metrics(member_dir), metrics(single_dir)
    assert logged.keys() == expected.keys()
    for (step, key), value in expected.items():
        assert logged[step, key] == pytest.approx(value, abs=1e-4, nan_ok=True), (step, key)


def metrics(run_dir) -> dict[tuple[int, str], float]:
    """``(step, column) -> value`` of a run's metrics.csv, timings left out."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return {(int(row["step"]), k): float(v) for row in csv.DictReader(f) for k, v in row.items()
                if v != "" and k != "step" and not k.endswith("seconds")}


@pytest.fixture(scope="module")
def default_pair(tmp_path_factory):
    """An ensemble of seeds 3 and 4 (default loss and optimizer) and the two single runs."""
    root = tmp_path_factory.mktemp("ensemble")
    summary = run(toy("ensemble=2", "seed=3"), root / "ens")
    for seed in (3, 4):
        run(toy(f"seed={seed}"), root / f"single_{seed}")
    return root, summary


def test_each_member_ends_equal_to_the_single_run_of_its_seed(default_pair):
    root, summary = default_pair
    for seed in (3, 4):
        assert_member_is_single_run(root / "ens" / f"seed_{seed}", root / f"single_{seed}")
    assert summary["status"] == "finished" and summary["ensemble"] == 2 and summary["n"] == 2
    # the members differ: two seeds, not one run twice
    a = gancollapse.load(root / "ens" / "seed_3", which="last").module.state_dict()
    b = gancollapse.load(root / "ens" / "seed_4", which="last").module.state_dict()
    assert not torch.allclose(a["generator.net.0.weight"], b["generator.net.0.weight"])


@pytest.mark.parametrize("overrides", [
    ["loss=wasserstein", "regularizer=gradient_penalty", "optim=adam", "n_critic=2", "g_reuse_z=false",
     "accumulate_grad_batches=2"],
    ["loss=hinge", "regularizer=[spectral_norm,topk,r1]", "regularizer.spectral_norm.generator=true",
     "regularizer.topk.gamma=0.5", "regularizer.r1.every=2"],
    ["loss=least_squares", "regularizer=weight_clipping"],
    ["loss=standard", "optim=adam", "+optim.discriminator.amsgrad=true"],
    ["+model.discriminator.batch_norm=true", "+model.generator.activation=tanh", "updates=simultaneous"],
], ids=["wgan_gp_adam_ncritic_fresh_z_accumulate", "hinge_sn_topk_r1", "lsgan_clip", "standard_amsgrad",
        "batch_norm_d_simultaneous"])
def test_member_equals_single_run_across_losses_and_regularizers(tmp_path, overrides):
    run(toy(*overrides, "ensemble=2", "seed=3"), tmp_path / "ens")
    run(toy(*overrides, "seed=4"), tmp_path / "single")
    assert_member_is_single_run(tmp_path / "ens" / "seed_4", tmp_path / "single")


def test_pacgan_cell_member_equals_single_run(tmp_path):
    """PacGAN's Table 1 protocol: BatchNorm-ReLU G without hidden biases, maxout D, N(0, 0.02) init, packed D
    (m = 3), simultaneous updates; here with fresh data too."""
    cell = ["experiment=repro/pacgan_ring", *CELL, "model.generator.hidden=16", "model.generator.depth=2",
            "model.discriminator.hidden=8", "model.discriminator.depth=2", "regularizer=pack", "regularizer.pack.m=3",
            "dataset.fresh=true", "optim.generator.lr=3e-3", "optim.discriminator.lr=3e-3"]  # (6 steps must show)
    summary = run(compose_cfg([*cell, "ensemble=2", "seed=3"], tiny=False), tmp_path / "ens")
    run(compose_cfg([*cell, "seed=4"], tiny=False), tmp_path / "single")
    assert_member_is_single_run(tmp_path / "ens" / "seed_4", tmp_path / "single")
    member = json.loads((tmp_path / "ens" / "seed_4" / "summary.json").read_text())["applied"]
    assert member["updates"] == "simultaneous" and member["regularizers"]["pack"]["m"] == 3
    assert member["optimizers"]["generator"]["type"] == "Adam"
    assert summary["status"] == "finished"
    state = gancollapse.load(tmp_path / "ens" / "seed_4", which="last").module.state_dict()
    assert state["generator.net.1.num_batches_tracked"] == 6  # one G forward per simultaneous step
    assert state["discriminator.net.0.weight"].shape == (8 * 5, 2 * 3)  # 8 units x 5 pieces, 3 packed points


def test_gdpp_cell_member_equals_single_run(tmp_path):
    """GDPP's GAN row (the VEEGAN/Unrolled-GAN nets): tanh MLPs with orthogonal init, simultaneous updates, fresh
    data on the endpoint ring (np.linspace angles, (sin, cos) axes)."""
    cell = ["experiment=repro/gdpp_ring", *CELL, "model.generator.hidden=16", "model.discriminator.hidden=16",
            "z_dim=8"]
    run(compose_cfg([*cell, "ensemble=2", "seed=3"], tiny=False), tmp_path / "ens")
    run(compose_cfg([*cell, "seed=4"], tiny=False), tmp_path / "single")
    assert_member_is_single_run(tmp_path / "ens" / "seed_4", tmp_path / "single")
    config = (tmp_path / "ens" / "seed_4" / "config.yaml").read_text()
    assert "fresh: true" in config and "angles: endpoint" in config and "updates: simultaneous" in config


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(CONF_DIR) / "experiment" / "repro").glob("*.yaml")))
def test_every_repro_cell_batches_but_unrolled_and_gdpp(name):
    cells = compose_cfg([f"experiment=repro/{name}"], tiny=False).repro.cells
    for cell_name, cell in cells.items():
        cfg = compose_cfg([f"experiment=repro/{name}", *cell.overrides, "ensemble=10"], tiny=False)
        regs = set(cfg.regularizer or {})
        if regs & {"unrolled", "gdpp"}:
            with pytest.raises(ValueError, match=r"^regularizer\.(unrolled|gdpp)=.*(functional D replay|eigendecomp)"):
                check_config(cfg)
            continue
        try:  # accepted: it builds as one batched model (the whole run: scripts/bench_toy.py --cases pacgan)
            check_config(cfg)
            members = [build_module(member_config(cfg, s)) for s in (0, 1)]
            module = EnsembleGAN(members, [0, 1], [torch.get_rng_state()] * 2)
        except ValueError as err:
            pytest.fail(f"{name} cell {cell_name}: {err}")
        assert module.simultaneous == (cfg.updates == "simultaneous")
        module.training_step(torch.randn(2, int(cfg.dataset.batch_size), 2))  # one step of the batched model
        assert module.d_steps == 1 and module.g_steps == (1 if cfg.n_critic == 1 else 0)


def test_report_counts_the_members_as_seeds_of_one_configuration(default_pair):
    root, _ = default_pair
    write_report(root / "ens")
    with open(root / "ens" / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1  # the ensemble's own directory is not a run
    assert (rows[0]["n"], rows[0]["seed"]) == ("2", "3,4")
    assert rows[0]["runs"] == "seed_3,seed_4"
    record = json.loads((root / "ens" / "ensemble.json").read_text())
    assert record["members"] == {"seed_3": "finished", "seed_4": "finished"}
    # each member directory is a run directory: config with its own seed, metrics, loadable checkpoint
    for seed in (3, 4):
        member = root / "ens" / f"seed_{seed}"
        assert "seed: " + str(seed) in (member / "config.yaml").read_text()
        with open(member / "metrics.csv", newline="") as f:
            steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/d_loss")]
        assert steps == list(range(1, 7))
        assert gancollapse.load(member).sample(100, seed=0).shape == (100, 2)


def test_resumed_ensemble_ends_equal_to_an_uninterrupted_one(tmp_path, default_pair):
    root, _ = default_pair
    run(toy("ensemble=2", "seed=3", "max_g_steps=4"), tmp_path / "ens")
    run(toy("ensemble=2", "seed=3"), tmp_path / "ens")  # resumes from checkpoints/last.ckpt to 6 G steps
    for seed in (3, 4):
        resumed = gancollapse.load(tmp_path / "ens" / f"seed_{seed}", which="last").module.state_dict()
        straight = gancollapse.load(root / "ens" / f"seed_{seed}", which="last").module.state_dict()
        for key, value in straight.items():
            assert torch.equal(resumed[key], value), key
        with open(tmp_path / "ens" / f"seed_{seed}" / "metrics.csv", newline="") as f:
            steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/d_loss")]
        assert steps == list(range(1, 7))  # no step logged twice


def test_a_diverging_member_stops_alone_as_its_single_run_and_poisons_no_other(tmp_path, monkeypatch):
    setup = ToyDataModule.setup

    def poisoned(self, stage=None):  # seed 4's data hold NaNs: almost every D step of that run is skipped
        setup(self, stage)
        if self.seed == 4:
            self.data[::5] = float("nan")

    monkeypatch.setattr(ToyDataModule, "setup", poisoned)
    extra = ["max_consecutive_skips=2"]
    summary = run(toy(*extra, "ensemble=2", "seed=3"), tmp_path / "ens")
    for seed in (3, 4):
        run(toy(*extra, f"seed={seed}"), tmp_path / f"single_{seed}")
    sick = json.loads((tmp_path / "single_4" / "summary.json").read_text())
    assert sick["status"] == "diverged" and sick["g_steps"] < 6  # the poison works
    assert_member_is_single_run(tmp_path / "ens" / "seed_4", tmp_path / "single_4")
    assert json.loads((tmp_path / "ens" / "seed_4" / "summary.json").read_text())["reason"] == sick["reason"]
    assert_member_is_single_run(tmp_path / "ens" / "seed_3", tmp_path / "single_3")  # finished, unharmed
    assert summary["status"] == "finished"


@pytest.mark.parametrize("override, message", [
    ("regularizer=dlle", "regularizer.dlle=gancollapse.regularizers.dlle.DLLE: ensemble>1 batches only"),
    ("regularizer=unrolled", "regularizer.unrolled=gancollapse.regularizers.unrolled.Unrolled: Unrolled GAN's "
                             "look-ahead replays k D updates functionally"),
    ("regularizer=gdpp", "regularizer.gdpp=gancollapse.regularizers.gdpp.GDPP: GDPP needs each member's D features"),
    ("dataset=mnist", "dataset=mnist: ensemble>1 batches only the toy datasets"),
    ("optim=nudged_adam", "optim.generator=gancollapse.optim.nudged_adam.NudgedAdam: ensemble>1 batches only"),
    ("evaluator.monitor=toy/hq_fraction", None),  # accepted: best.ckpt per member
])
def test_what_cannot_be_batched_is_refused_in_one_line_before_any_file(tmp_path, override, message):
    if message is None:
        run(toy("ensemble=3", override, "evaluator.monitor_mode=max", "max_g_steps=1"), tmp_path)
        assert all((tmp_path / f"seed_{s}" / "checkpoints" / "best.ckpt").is_file() for s in range(3))
        return
    cfg = compose_cfg(["ensemble=3", override], tiny=False)
    with pytest.raises(ValueError) as err:
        run(cfg, tmp_path)
    assert str(err.value).startswith(message) and "ensemble=1" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "config.yaml").exists() and not list(tmp_path.glob("seed_*"))


def test_runs_saved_before_the_ensemble_key_still_resume_and_group_with_new_ones(tmp_path):
    cfg = toy()
    old = OmegaConf.create(OmegaConf.to_container(cfg))
    del old["ensemble"]
    assert config_changes(old, cfg) == []  # an old run dir resumes under the new train.yaml
    assert config_changes(old, toy("ensemble=2")) == ["ensemble (1 → 2)"]
    for name, node in (("old", old), ("new", cfg)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(OmegaConf.to_yaml(node))
    assert run_signature(tmp_path / "old") == run_signature(tmp_path / "new")  # seeds of one configuration


def test_ensemble_size_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ValueError, match=r"^ensemble=0: must be an integer >= 1"):
        run(toy("ensemble=0"), tmp_path)


def test_stacked_mlp_is_its_members_side_by_side_with_spectral_norm():
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = MLP(2, 1, 8, 2)
        apply_spectral_norm(net)
        members.append(net)
    stacked = StackedMLP(members)
    x = torch.randn(3, 5, 2)
    for _ in range(3):  # each training-mode forward runs one power-iteration step, in every member
        out, ref = stacked(x), torch.stack([m(x[k]) for k, m in enumerate(members)])
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    layer = members[1].net[2].parametrizations.weight[0]
    torch.testing.assert_close(stacked.u_1[1], layer._u, atol=1e-6, rtol=0)


def test_stacked_mlp_is_its_members_side_by_side_with_batch_norm_maxout_and_packing():
    """PacGAN's nets: G Linear(no bias) → BatchNorm → ReLU, maxout D packed 3 at a time; each member keeps its own
    running statistics, and a pack holds m points of one member."""
    gens, discs = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        g = MLP(2, 2, 8, 2, activation="relu", batch_norm=True, bn_momentum=0.05, bias=False, init="normal")
        d = MLP(2, 1, 8, 2, maxout=3, init="normal")
        Pack(3).apply_to_nets(g, d)
        gens.append(g)
        discs.append(d)
    sg, sd = StackedMLP(gens), StackedMLP(discs)
    assert sd.pack == 3 and not hasattr(sg, "bias_0") and sg.batch_norm and not sd.batch_norm
    for _ in range(3):
        z = torch.randn(3, 6, 2) * torch.tensor([1.0, 3.0, 0.3]).reshape(3, 1, 1)  # members' statistics differ
        fake, ref = sg(z), torch.stack([g(z[k]) for k, g in enumerate(gens)])
        torch.testing.assert_close(fake, ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(sd(ref), torch.stack([d(ref[k]) for k, d in enumerate(discs)]), atol=1e-6, rtol=0)
    for k, g in enumerate(gens):
        torch.testing.assert_close(sg.running_var_0[k], g.net[1].running_var, atol=1e-6, rtol=0)
    sg.eval()
    z = torch.randn(3, 5, 2)
    for k, g in enumerate(gens):  # eval mode: each member's own running statistics
        g.eval()
        torch.testing.assert_close(sg(z)[k], g(z[k]), atol=1e-6, rtol=0)
    # written back, a fresh member net holds member 1's state (weights, BatchNorm buffers)
    torch.manual_seed(9)
    blank = MLP(2, 2, 8, 2, activation="relu", batch_norm=True, bn_momentum=0.05, bias=False, init="normal")
    sg.write_member(1, blank)
    for key, value in gens[1].state_dict().items():
        torch.testing.assert_close(blank.state_dict()[key], value, atol=1e-6, rtol=0, msg=key)
    with pytest.raises(ValueError, match=r"^PacGAN: D got a batch of 4 samples, not a multiple of regularizer.pack.m=3"):
        sd(torch.randn(3, 4, 2))


@pytest.mark.parametrize("cls, kwargs", [
    (torch.optim.RMSprop, {"lr": 1e-2}),
    (torch.optim.RMSprop, {"lr": 1e-2, "centered": True, "momentum": 0.9, "weight_decay": 0.1}),
    (torch.optim.Adam, {"lr": 1e-2, "betas": (0.5, 0.999)}),
    (torch.optim.Adam, {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.01}),
])
def test_stacked_optimizer_is_one_torch_optimizer_per_member_with_its_own_skips(cls, kwargs):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 5)) for _ in range(3)]
    singles = [cls([p], **kwargs) for p in params]
    stacked = torch.nn.Parameter(torch.stack([p.detach() for p in params]).clone())
    opt = stacked_optimizer(singles[0], [stacked], "optim.generator")
    for step in range(5):
        grad = torch.randn(3, 4, 5)
        keep = torch.tensor([True, step != 1, step != 3])  # members 1 and 2 skip one step each
        for k in range(3):
            if keep[k]:
                params[k].grad = grad[k].clone()
                singles[k].step()
        stacked.grad = grad
        opt.step(keep=keep)
    for k in range(3):
        torch.testing.assert_close(stacked[k], params[k].detach(), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match=r"^optim.generator=SGD: ensemble>1 batches only"):
        stacked_optimizer(torch.optim.SGD([params[0]], lr=1.0), [stacked], "optim.generator")


def test_ensemble_shares_g_of_d_phase_with_g_phase_bitwise(tmp_path, monkeypatch):
    """As the single run (:attr:`GANModule.share_fake`): G's phase backpropagates through the stacked G(z) of
    D's phase, one stacked G forward per G step fewer, with bitwise the same members as recomputing it."""
    calls = {"n": 0}
    forward = StackedMLP.forward

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls["n"] += int(self.training)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(StackedMLP, "forward", counted)
    weights, forwards = {}, {}
    for name in ("shared", "recomputed"):
        if name == "recomputed":  # members that do not share make the ensemble recompute
            monkeypatch.setattr("gancollapse.models.gan._forward_is_pure", lambda net: False)
        calls["n"] = 0
        summary = run(toy("ensemble=2", "seed=3", "max_g_steps=6", "regularizer=topk"), tmp_path / name)
        forwards[name] = calls["n"]
        weights[name] = gancollapse.load(tmp_path / name / "seed_4", which="last").module.state_dict()
    # the G forwards of the shared run: one per D phase (and none in G's); the recomputing run adds one per G step
    assert forwards["recomputed"] - forwards["shared"] == summary["g_steps"] == 6
    for key, value in weights["shared"].items():
        assert torch.equal(value, weights["recomputed"][key]), key
