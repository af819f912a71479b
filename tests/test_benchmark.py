"""The Stacked Digits benchmark: sweep commands, the modes/KL chart, and a tiny run scored by its evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from gancollapse.benchmark import (
    CONFIGS,
    SEEDS,
    bar_labels,
    load_set,
    plot_modes_kl,
    sample_commands,
    train_commands,
)
from gancollapse.paths import CONF_DIR
from gancollapse.train import run
from tests.conftest import compose_cfg


def test_every_benchmark_configuration_composes():
    assert set(CONFIGS) <= {p.stem for p in (Path(CONF_DIR) / "experiment" / "benchmark").glob("*.yaml")}
    for name in CONFIGS:
        cfg = compose_cfg([f"experiment=benchmark/{name}"], tiny=False)
        assert cfg.dataset.name == "stacked_digits" and cfg.dataset.img_size == 28
        assert cfg.max_g_steps == compose_cfg(["experiment=benchmark/ns"], tiny=False).max_g_steps  # equal G steps
    assert list(compose_cfg(["experiment=benchmark/pack2"], tiny=False).regularizer) == ["pack"]


def test_stacked_mnist5k_set_reuses_the_configurations_on_real_digits():
    digits, mnist = load_set("stacked_digits"), load_set("stacked_mnist5k")
    assert (digits.configs, digits.seeds) == (CONFIGS, SEEDS) and digits.overrides == ()
    assert set(mnist.configs) == {"wgan_gp", "lsgan", "r1", "pack2", "topk", "ns", "maem", "distgan", "sn"}
    assert mnist.seeds == (0, 1, 2, 3, 4) and mnist.out != digits.out
    recipe = compose_cfg(["experiment=benchmark/ns"], tiny=False).max_g_steps
    for name in mnist.configs:  # one budget for all, shortened from the recipe's to fit 3 h
        cfg = compose_cfg([f"experiment=benchmark/{name}", *mnist.overrides], tiny=False)
        assert cfg.dataset.name == "stacked_mnist5k" and cfg.dataset.img_size == 28
        assert cfg.max_g_steps == 900 < recipe
        assert cfg.evaluator._target_ == "gancollapse.benchmark.StackedDigitsEvaluator"
    with pytest.raises(ValueError, match="--set=nope: no conf/benchmark/nope.yaml"):
        load_set("nope")


def test_sweep_commands():
    cmds = train_commands(Path("out"), ["ns", "hinge"], [0, 1], ["max_g_steps=5"], python="py")
    assert len(cmds) == 4
    assert cmds[1] == ["py", "-m", "gancollapse.train", "experiment=benchmark/ns", "seed=1",
                       "hydra.run.dir=out/ns_s1", "max_g_steps=5"]
    samp = sample_commands(Path("out"), [2], ["prior", "mhgan"], n=100, python="py")
    assert samp[0][3:6] == ["out/ns_s2", "sampler=prior", "n=100"] and "sampler.chain_length=100" not in samp[0]
    assert "sampler.chain_length=100" in samp[1]


def test_chart_from_leaderboard_rows(tmp_path):
    rows = [{"overrides": "experiment=benchmark/ns max_g_steps=5", "modes": "100", "modes/std": "10",
             "kl_uniform": "2.0", "kl_uniform/std": ""},
            {"overrides": "experiment=benchmark/pack2 max_g_steps=5", "modes": "900", "kl_uniform": "0.2"},
            {"overrides": "experiment=benchmark/ns max_g_steps=5", "sampler": "drs", "sample_seed": "0,1",
             "modes": "120", "kl_uniform": "1.9"},
            {"overrides": "experiment=zoo/x", "fid": "3"}]  # no modes: not drawn
    assert bar_labels(rows[:3]) == ["ns", "pack2", "ns · drs sampling"]
    path = plot_modes_kl(rows, tmp_path / "chart.png")
    assert Image.open(path).size[0] > 500
    with pytest.raises(ValueError, match="no leaderboard row has a 'modes'"):
        plot_modes_kl(rows[3:], tmp_path / "none.png")


def test_tiny_stacked_digits_run_reports_modes_and_kl(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_cfg(["experiment=benchmark/ns", "dataset.n_samples=512", "dataset.batch_size=16", "z_dim=8",
                       "model.generator.base=2", "model.discriminator.base=2", "max_g_steps=4",
                       "evaluator.n_samples=200", "evaluator.n_real=200", "evaluator.batch_size=100",
                       "evaluator.grid_size=4", "evaluator.classifier_epochs=1", f"evaluator.cache_dir={cache}"],
                      tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert (cache / "classifiers" / "digits-28px-1ch.pt").is_file()  # built on first use
    assert 1 <= summary["modes"] <= 200 and 0.0 <= summary["kl_uniform"] <= 6.91  # ≤ ln 1000
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["modes"] == summary["modes"]
