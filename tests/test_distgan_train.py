"""Short runs of the three models of the Dist-GAN vs NuGAN study (plain GAN, Dist-GAN, NuGAN+Dist-GAN) on
the embedded digits resized to 28×28, with tiny nets: each trains and logs Hessian eigenvalues."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

import gancollapse
from gancollapse.build import build_module
from gancollapse.instantiate import build_datamodule
from gancollapse.paths import CONF_DIR
from gancollapse.train import run

TINY = ["optim=distgan", "dataset=digits", "dataset.img_size=28", "evaluator=none",
        "z_dim=2", "max_g_steps=6", "log_every_n_steps=2", "logger=csv", "callbacks.progress_bar=null",
        "model.generator.dim=4", "model.generator.bridge=crop", "model.discriminator.dim=4", "dataset.batch_size=16",
        "prior=uniform", "+callbacks=observatory", "callbacks.observatory.every_n_steps=3",
        "callbacks.observatory.k=2", "callbacks.observatory.iterations=4", "callbacks.observatory.n_spread=32",
        "callbacks.observatory.hessian_batch=16", "callbacks.observatory.plot=false"]
EXTRA = {
    "gan_mnist": [],
    "distgan_mnist": ["model.module.schedule_steps=8"],
    "nugan_distgan_mnist": ["model.module.nudge.every_n_steps=2",
                            "model.module.nudge.k=2", "model.module.nudge.iterations=4", "model.module.nudge.threshold=0.0"],
}


def _columns(path) -> dict[str, list[float]]:
    cols: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if v not in ("", None):
                    cols.setdefault(k, []).append(float(v))
    return cols


@pytest.mark.parametrize("model", list(EXTRA))
def test_short_run_trains_and_logs_eigenvalues(tmp_path, model):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"method={model}", *TINY, *EXTRA[model]])
    torch.manual_seed(0)
    summary = run(cfg, tmp_path)
    assert summary["g_steps"] == 6 and summary["d_steps"] == 6 and summary["nonfinite_skips"] == 0
    cols = _columns(tmp_path / "metrics.csv")
    assert len(cols["observatory/g_eig0"]) == 2 and len(cols["observatory/d_eig1"]) == 2
    for net in ("g", "d"):
        top, second = cols[f"observatory/{net}_eig0"], cols[f"observatory/{net}_eig1"]
        assert all(math.isfinite(v) for v in top + second)
        assert max(abs(v) for v in top) > 1e-6, net  # a real curvature, not a zero placeholder
        assert all(a >= b for a, b in zip(top, second, strict=True))  # largest algebraic first
        assert summary[f"observatory/{net}_eig0"] == pytest.approx(top[-1])  # summary = the last check
    handle = gancollapse.load(tmp_path)
    L.seed_everything(cfg.seed, verbose=False)  # rebuild the run's initial weights exactly as train.run does
    build_datamodule(cfg)
    initial = build_module(cfg)
    for net in ("generator", "discriminator"):
        trained, start = getattr(handle, net).parameters(), getattr(initial, net).parameters()
        moved = [not torch.equal(a, b) for a, b in zip(trained, start, strict=True)]
        assert moved and all(moved), (net, moved)  # every weight of both nets took optimizer steps
    assert handle.sample(4, seed=0).shape == (4, 1, 28, 28)
    if model == "gan_mnist":
        return
    assert summary["d_steps"] == handle.module.r_steps == 6  # R, D, G once per iteration, counters restored
    # logged after G step 6, whose D step ran at iteration 5 of N=8 (distgan) or N=max_g_steps=6 (nugan):
    # μ = 0.2·5/8 − 0.1 = 0.025, or clip(0.2·5/6 − 0.1) = 0.05
    assert cols["train/w_real"][-1] == pytest.approx(0.975 if model == "distgan_mnist" else 1.0, abs=1e-6)
    assert cols["train/w_real"][0] == pytest.approx(0.95, abs=1e-6)
    if model == "nugan_distgan_mnist":
        # every 2 G steps: steps 0, 2, 4 -> three spectral checks, eigenvalues logged each time
        assert len(cols["nugan/g/eig0"]) == 3 and len(cols["nugan/g/eig1"]) == 3
        assert cols["nugan/g/fired"][0] >= 1 and cols["nugan/g/removed_norm"][0] > 0


def test_study_configs_compose_for_all_models():
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for model in EXTRA:
            cfg = compose("train", overrides=["experiment=collapse_mnist", f"method={model}", "z_dim=10",
                                              "model.generator.bridge=crop", "model.generator.dim=4", "model.discriminator.dim=4"])
            assert cfg.prior.distribution == "uniform" and cfg.max_g_steps == 20000
            assert cfg.callbacks.observatory.classifier == "auto" and cfg.dataset.img_size == 28
            module = build_module(cfg)
            assert module.z_dim == 10
            opts = module.configure_optimizers()
            assert opts[0].param_groups[0]["betas"] == (0.5, 0.9)
            if model == "nugan_distgan_mnist":
                from gancollapse.optim.nudged_adam import NudgedAdam

                assert isinstance(opts[0], NudgedAdam) and opts[0].threshold == 500.0 and opts[0].k == 5
                assert not isinstance(opts[1], NudgedAdam) and len(opts) == 3
            assert instantiate(cfg.callbacks.observatory).every == 1000
        cfg = compose("train", overrides=["experiment=distgan_mnist"])
        assert cfg.z_dim == 100 and cfg.max_g_steps == 100000 and cfg.dataset.batch_size == 64


def test_nugan_distgan_resumes_counters_and_nudge_state(tmp_path):
    over = ["method=nugan_distgan_mnist", *TINY, *EXTRA["nugan_distgan_mnist"], "callbacks.observatory.every_n_steps=100"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        first = compose("train", overrides=over)
        second = compose("train", overrides=[*over, "max_g_steps=9"])
    run(first, tmp_path)
    summary = run(second, tmp_path)
    assert summary["g_steps"] == 9 and summary["d_steps"] == 9
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["gancollapse"]["steps"]["r"] == 9
    nudge = state["optimizer_states"][0]["nudge"]
    assert nudge["steps_taken"] == 9 and nudge["checks"] == 5  # G steps 0, 2, 4 | 6, 8
    checks = _columns(tmp_path / "metrics.csv")["nugan/g/eig0"]
    assert len(checks) == 5
