"""The protocol options the papers' 2D-mixture tables need (docs/REPRODUCTION_PROTOCOLS.md): ring layouts,
fresh or fixed training data, the papers' MLPs (BatchNorm, maxout, initialisations), the mode / high-quality
rules, and the conf/experiment/repro/ files (every cell composes and trains two steps)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from gancollapse.build import build_module
from gancollapse.data.toy import ToyDataModule, ring_centers
from gancollapse.instantiate import build_datamodule
from gancollapse.metrics.toy import captured_modes, mode_histogram, mode_stats
from gancollapse.metrics.toy_callback import ToyEvaluator
from gancollapse.nets.mlp import MLP, Maxout
from gancollapse.paths import CONF_DIR
from gancollapse.runner import ADDED_KEYS, config_changes
from gancollapse.train import run
from tests.conftest import compose_cfg

REPRO = sorted(p.stem for p in (Path(CONF_DIR) / "experiment" / "repro").glob("*.yaml"))
#: regularizers other branches add (Unrolled GAN, GDPP): cells using them compose once those configs exist
PENDING = {"unrolled", "gdpp"}


# ---------------------------------------------------------------------------- ring layouts
def test_uniform_ring_is_unchanged_and_endpoint_ring_repeats_its_first_mean():
    k = np.arange(8) * 2 * np.pi / 8
    assert np.allclose(ring_centers().numpy(), np.stack([np.cos(k), np.sin(k)], 1), atol=1e-7)
    theta = np.linspace(0, 2 * np.pi, 8)  # the Unrolled GAN notebook / GDPP layout, written independently
    gdpp = ring_centers(8, 1.0, "endpoint", "sin_cos").numpy()
    assert np.allclose(gdpp, np.stack([np.sin(theta), np.cos(theta)], 1), atol=1e-7)
    assert np.allclose(gdpp[0], [0, 1]) and np.allclose(gdpp[7], [0, 1], atol=1e-7)
    assert len({tuple(np.round(c, 6)) for c in gdpp}) == 7
    assert gdpp[7, 0] < 0 == gdpp[0, 0]  # sin(2π) ≈ -2.4e-16: the doubled mean sits just left of the first


def test_ring_keys_are_checked_and_refused_for_the_grid():
    with pytest.raises(ValueError, match="dataset.angles='spiral'"):
        ToyDataModule(angles="spiral")
    with pytest.raises(ValueError, match="dataset.axes='xy'"):
        ToyDataModule(axes="xy")
    with pytest.raises(ValueError, match="dataset.angles=endpoint: a ring-only key"):
        ToyDataModule(kind="grid", angles="endpoint")
    with pytest.raises(ValueError, match="dataset.fresh='yes'"):
        ToyDataModule(fresh="yes")


def _epochs(dm: ToyDataModule, epochs: list[int]) -> list[torch.Tensor]:
    """Each epoch's batches from one loader, as training takes them (Lightning calls set_epoch on its sampler)."""
    loader = dm.train_dataloader()
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out.append(torch.cat(list(loader)))
    return out


def test_fresh_data_are_new_every_epoch_and_the_same_for_the_same_epoch():
    fresh = ToyDataModule(n_samples=40, batch_size=10, fresh=True, seed=3)
    e0, e1 = _epochs(fresh, [0, 1])
    assert e0.shape == (40, 2)
    assert not any(torch.isclose(e1, p).all(1).any() for p in e0)  # no point of epoch 0 again in epoch 1
    again = ToyDataModule(n_samples=40, batch_size=10, fresh=True, seed=3)  # a resumed run rebuilds the epoch
    assert torch.equal(_epochs(again, [1])[0], e1)
    f0, f1 = _epochs(ToyDataModule(n_samples=40, batch_size=10, seed=3), [0, 1])
    assert torch.equal(f0.sort(0).values, f1.sort(0).values)  # one fixed set, reshuffled


def test_a_run_saved_before_the_new_keys_resumes_with_their_old_values():
    now = compose_cfg([])
    saved = OmegaConf.create(OmegaConf.to_container(now))  # a config.yaml written before the keys existed
    for key in ADDED_KEYS:
        node, leaf = (saved, key) if "." not in key else (saved[key.split(".")[0]], key.split(".")[1])
        if leaf in node:
            del node[leaf]
    assert config_changes(saved, now) == []
    changed = compose_cfg(["dataset.fresh=true"])
    assert config_changes(saved, changed) == ["dataset.fresh (False → True)"]  # the value the old run ran with


# ---------------------------------------------------------------------------- nets
def test_maxout_takes_the_max_of_each_group_of_pieces():
    x = torch.tensor([[1.0, 5.0, 2.0, 0.0, -1.0, -3.0]])
    assert torch.equal(Maxout(3)(x), torch.tensor([[5.0, 0.0]]))
    assert torch.equal(Maxout(2)(x), torch.tensor([[5.0, 2.0, -1.0]]))


def test_maxout_mlp_is_linear_then_max_over_pieces():
    torch.manual_seed(0)
    d = MLP(2, 1, hidden=3, depth=1, maxout=4)
    lin, out = d.net[0], d.net[2]
    assert lin.out_features == 12 and not any(isinstance(m, (nn.LeakyReLU, nn.ReLU, nn.Tanh)) for m in d.net)
    x = torch.randn(5, 2)
    h = (x @ lin.weight.t() + lin.bias).reshape(5, 3, 4).max(-1).values
    assert torch.allclose(d(x), h @ out.weight.t() + out.bias, atol=1e-6)


def test_default_mlp_is_the_seed_net():
    torch.manual_seed(0)
    ours = MLP(32, 2, last_hidden_activation="tanh")
    torch.manual_seed(0)
    layers = []
    for i, width in enumerate([32, 256, 256, 256]):
        layers += [nn.Linear(width, 256), nn.Tanh() if i == 3 else nn.LeakyReLU(0.01)]
    seed = nn.Sequential(*layers, nn.Linear(256, 2))
    assert [type(m) for m in ours.net] == [type(m) for m in seed]
    x = torch.randn(4, 32)
    assert torch.equal(ours(x), seed(x))


def test_pacgan_and_unrolled_nets_have_the_papers_layers_and_initialisation():
    torch.manual_seed(0)
    g = MLP(2, 2, hidden=400, depth=4, activation="relu", batch_norm=True, bn_momentum=0.05, bias=False,
            init="normal", init_std=0.02)
    kinds = [type(m).__name__ for m in g.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 4 + ["Linear"]
    assert all(m.bias is None for m in g.net[:-1] if isinstance(m, nn.Linear)) and g.net[-1].bias is not None
    assert g.net[1].momentum == 0.05
    assert abs(float(g.net[3].weight.detach().std()) - 0.02) < 0.001 and float(g.net[-1].bias.detach().abs().max()) == 0
    d = MLP(2, 1, hidden=128, depth=2, activation="tanh", init="orthogonal", init_gain=1.4)
    w = d.net[2].weight.detach()  # 128 x 128: orthogonal x 1.4
    assert torch.allclose(w @ w.t(), 1.96 * torch.eye(128), atol=1e-4)
    assert [type(m).__name__ for m in d.net] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]


@pytest.mark.parametrize(("kw", "key"), [({"activation": "gelu"}, "activation='gelu'"),
                                         ({"init": "xavier"}, "init='xavier'"),
                                         ({"maxout": 0}, "maxout must be >= 1"),
                                         ({"bn_momentum": 2.0}, "bn_momentum=2.0"),
                                         ({"maxout": 5, "batch_norm": True}, "maxout > 1 with batch_norm")])
def test_bad_mlp_options_name_the_key(kw, key):
    with pytest.raises(ValueError, match=key.replace("(", r"\(")):
        MLP(2, 1, **kw)


# ---------------------------------------------------------------------------- mode / HQ rules
def test_papers_rule_counts_a_mode_with_one_hq_sample_and_never_an_empty_one():
    counts = torch.tensor([0, 1, 2, 50])
    assert captured_modes(counts, 2500, min_fraction=0.0, min_count=1) == 3
    assert captured_modes(counts, 2500, min_fraction=0.0, min_count=2) == 2
    assert captured_modes(counts, 2500, min_fraction=0.008) == 1  # 20 of 2,500: the platform default
    centers = ring_centers()
    x = torch.cat([centers[0].repeat(1, 1), centers[1].repeat(2499, 1)])
    assert mode_stats(x, centers, 0.01, min_fraction=0.0, min_count=1).modes == 2
    assert mode_stats(x, centers, 0.01).modes == 1


def test_nearest_mean_is_computed_in_float64_like_the_papers_numpy():
    """GDPP's ring: a HQ point right of x=0 at the top belongs to mean 0, one left of it to mean 7 (same place),
    so the doubled mode counts twice when both sides are hit — as gdppgan_Synthetic.py's float64 argmin does."""
    centers = ring_centers(8, 1.0, "endpoint", "sin_cos")
    both = torch.tensor([[0.001, 1.0], [-0.001, 1.0]])
    assert mode_stats(both, centers, 0.01, min_fraction=0.0).modes == 2
    assert mode_stats(both[:1], centers, 0.01, min_fraction=0.0).modes == 1
    # and agrees with a plain float64 NumPy nearest-mean count on random points around the ring
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(3000, 2)) * 0.02 + np.asarray(centers, dtype=np.float64)[rng.integers(0, 8, 3000)]
    d2 = ((pts[:, None, :] - np.asarray(centers, dtype=np.float64)[None]) ** 2).sum(-1)
    idx, hq = d2.argmin(1), np.sqrt(d2.min(1)) <= 3 * 0.01
    counts, ours_hq = mode_histogram(torch.from_numpy(pts), centers, 0.01)
    assert torch.equal(ours_hq, torch.from_numpy(hq))
    assert counts.tolist() == np.bincount(idx[hq], minlength=8).tolist() and counts[7] > 0


def test_the_toy_evaluator_applies_the_capture_rule_it_was_given():
    class _Module:  # G puts 2 points on mean 0 and 98 on mean 1
        @staticmethod
        def generate(n, z):  # noqa: ANN001, ANN205
            c = ring_centers()
            return torch.cat([c[0].repeat(2, 1), c[1].repeat(98, 1)])

    ev = ToyEvaluator(n_samples=100, min_fraction=0.0, min_count=3)
    ev.datamodule, ev.eval_z = ToyDataModule(), torch.zeros(100, 32)
    assert ev.compute(_Module())["toy/modes"] == 1
    ev.min_count = 2
    assert ev.compute(_Module())["toy/modes"] == 2


@pytest.mark.parametrize(("kw", "key"), [({"threshold": 0}, "evaluator.threshold=0"),
                                         ({"min_fraction": 1.5}, "evaluator.min_fraction=1.5"),
                                         ({"min_count": 0}, "evaluator.min_count=0")])
def test_bad_rules_name_the_key(kw, key):
    with pytest.raises(ValueError, match=key):
        ToyEvaluator(**kw)


# ---------------------------------------------------------------------------- conf/experiment/repro
def _cells(name: str) -> dict:
    return compose_cfg([f"experiment=repro/{name}"], tiny=False).repro.cells


def _missing_groups(overrides: list[str]) -> set[str]:
    regs = {o.split("=", 1)[1] for o in overrides if o.startswith("regularizer=")}
    return {r for r in regs if not (Path(CONF_DIR) / "regularizer" / f"{r}.yaml").is_file()}


@pytest.mark.parametrize("name", REPRO)
def test_repro_file_states_its_paper_table_runs_and_published_numbers(name):
    cfg = compose_cfg([f"experiment=repro/{name}"], tiny=False)
    meta = cfg.repro
    assert meta.paper and meta.table and meta.error and meta.cells
    assert (meta.runs or meta.runs_chosen) >= 5
    for cell in meta.cells.values():
        assert {"modes", "hq_percent"} <= set(cell.published)
        missing = _missing_groups(list(cell.overrides))
        assert missing <= PENDING, f"{name}: unknown regularizer(s) {missing}"
    assert cfg.evaluator.n_samples == 2500 and cfg.evaluator.threshold == 3.0
    assert (cfg.evaluator.min_fraction, cfg.evaluator.min_count) == (0.0, 1)
    compose_cfg([f"experiment=repro/{name}", *meta.short], tiny=False)


def test_repro_layouts_match_the_authors_code():
    """Means and stds written out from the authors' code (docs/REPRODUCTION_PROTOCOLS.md), not from our configs."""
    theta = np.linspace(0, 2 * np.pi, 8)
    k = np.arange(8) * 2 * np.pi / 8
    grid = np.array([[i, j] for i in range(-4, 5, 2) for j in range(-4, 5, 2)], dtype=float)
    want = {"gdpp_ring": (np.stack([np.sin(theta), np.cos(theta)], 1), 0.01),
            "gdpp_grid": (grid, 0.05), "pacgan_ring": (np.stack([np.cos(k), np.sin(k)], 1), 0.01),
            "pacgan_grid": (grid, 0.05), "veegan_grid": (grid, 0.05)}
    for name, (means, std) in want.items():
        dm = build_datamodule(compose_cfg([f"experiment=repro/{name}"], tiny=False))
        assert np.allclose(dm.centers.numpy(), means, atol=1e-6), name
        assert dm.std == std, name


@pytest.mark.parametrize("name", REPRO)
def test_every_runnable_cell_builds_and_trains_two_steps(name, tmp_path):
    small = ["max_g_steps=2", "evaluator.n_samples=64", "evaluator.frames=false", "callbacks.progress_bar=null",
             "dataset.n_samples=1200", "logger=csv"]
    ran, trained_packed = 0, False
    for cell_name, cell in _cells(name).items():
        overrides = list(cell.overrides)
        if _missing_groups(overrides):
            continue  # Unrolled GAN / GDPP: their configs come from another branch
        cfg = compose_cfg([f"experiment=repro/{name}", *overrides, *small], tiny=False)
        module = build_module(cfg)
        assert module.simultaneous == (cfg.updates == "simultaneous")
        packed = "pack" in cfg.regularizer
        if ran == 0 or (packed and not trained_packed):  # one full run per file, and one with the packed D
            trained_packed |= packed
            summary = run(cfg, run_dir=tmp_path / cell_name)
            assert summary["g_steps"] == 2 and summary["status"] == "finished", cell_name
            assert math.isfinite(summary["toy/hq_fraction"])
        ran += 1
    assert ran >= 1
