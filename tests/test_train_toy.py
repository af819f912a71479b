"""End-to-end behaviour of the toy lab: training improves, runs resume, bad input is rejected clearly."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hydra.errors import MissingConfigException

import gancollapse
from gancollapse.build import build_module
from gancollapse.instantiate import build_datamodule
from gancollapse.metrics.toy import mode_stats
from gancollapse.train import run

from .conftest import REPO, TINY, compose_cfg, nan_loss, run_cli


def test_short_training_improves_hq_over_untrained_generator(tmp_path):
    # Adam at 1e-3 trains the tiny toy in 600 G steps on every seed tried (0-3: HQ 0.12-0.39, 1-8 modes);
    # shorter or slower recipes (300 WGAN-GP steps) collapse to 0 modes on most seeds.
    cfg = compose_cfg(["max_g_steps=600", "evaluator.every_n_steps=300", "optim=adam",
                       "optim.generator.lr=1e-3", "optim.discriminator.lr=1e-3"])
    dm = build_datamodule(cfg)
    torch.manual_seed(cfg.seed)
    untrained = build_module(cfg)
    before = mode_stats(untrained.generate(5000), dm.centers, dm.std)
    summary = run(cfg, tmp_path)
    assert summary["g_steps"] == 600
    assert summary["toy/hq_fraction"] > before.hq_fraction + 0.1
    assert summary["toy/modes"] > before.modes  # the untrained G covers none of the 8 modes
    for name in ("config.yaml", "metrics.csv", "summary.json", "checkpoints/last.ckpt", "plots/training.gif", "plots/final.png"):
        assert (tmp_path / name).is_file(), name
    handle = gancollapse.load(tmp_path)
    x = handle.sample(10_000, seed=1)
    assert x.shape == (10_000, 2)
    # the summary describes the trained G: fresh samples of the saved G give the same statistics
    after = mode_stats(x, dm.centers, dm.std)
    assert after.hq_fraction > before.hq_fraction + 0.1
    assert after.hq_fraction == pytest.approx(summary["toy/hq_fraction"], abs=0.03)
    assert abs(after.modes - summary["toy/modes"]) <= 1


def test_n_critic_counts_d_steps_per_g_step(tmp_path):
    # 10 batches per epoch and 1 max epoch: max_g_steps, not the epoch limit, decides the length
    cfg = compose_cfg(["max_g_steps=10", "n_critic=3", "evaluator=none", "trainer.max_epochs=1"])
    summary = run(cfg, tmp_path)
    assert (summary["g_steps"], summary["d_steps"]) == (10, 30)


def test_epoch_limit_applies_without_max_g_steps(tmp_path):
    cfg = compose_cfg(["max_g_steps=null", "trainer.max_epochs=2", "evaluator=none"])
    assert run(cfg, tmp_path)["g_steps"] == 20


def test_resume_from_last_checkpoint_continues_step_count(tmp_path):
    run(compose_cfg(["max_g_steps=40", "evaluator=none"]), tmp_path)
    first = json.loads((tmp_path / "summary.json").read_text())
    summary = run(compose_cfg(["max_g_steps=70", "evaluator=none"]), tmp_path)
    assert first["g_steps"] == 40 and summary["g_steps"] == 70
    steps = [int(line.split(",")[0]) for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[0] == 10 and steps[-1] == 70  # appended, not overwritten


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_signal_saves_last_checkpoint_and_rerun_resumes(tmp_path, sig):
    args = [*TINY, "max_g_steps=100000", "evaluator=none", "ckpt_every_n_steps=40", f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gancollapse.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    periodic = tmp_path / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not periodic.is_file():
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out[-2000:]
    interrupted = json.loads((tmp_path / "summary.json").read_text())
    assert interrupted["status"].startswith("interrupted"), out[-2000:]
    done = interrupted["g_steps"]
    assert done >= 20
    res = run_cli([*TINY, f"max_g_steps={done + 20}", "evaluator=none", f"hydra.run.dir={tmp_path}"], REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    final = json.loads((tmp_path / "summary.json").read_text())
    assert final["status"] == "finished" and final["g_steps"] == done + 20


NaNEveryThird = nan_loss(lambda n: n % 3 == 0)


def test_nonfinite_loss_steps_are_skipped_counted_and_logged(tmp_path):
    cfg = compose_cfg(["max_g_steps=30", "evaluator=none", "log_every_n_steps=5"])
    cfg.loss = {"_target_": "tests.test_train_toy.NaNEveryThird"}
    summary = run(cfg, tmp_path)
    assert summary["g_steps"] == 30
    assert summary["nonfinite_skips"] == 10
    # the run's loss is this test's class, outside the packages a loaded run may name by default
    assert all(math.isfinite(p.sum().item()) for p in gancollapse.load(tmp_path, trusted=True).discriminator.parameters())
    assert "train/nonfinite_skips" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("override,key", [("dataset.std=-1", "dataset.std"), ("dataset.batch_size=0", "dataset.batch_size"),
                                          ("n_critic=0", "n_critic"),
                                          ("max_g_steps=null trainer.max_epochs=-1", "max_g_steps")])
def test_nonsensical_values_raise_valueerror_naming_the_key(tmp_path, override, key):
    with pytest.raises(ValueError, match=key):
        run(compose_cfg(["max_g_steps=1", *override.split()]), tmp_path)


def test_unknown_loss_lists_the_choices():
    with pytest.raises(MissingConfigException) as err:
        compose_cfg(["loss=nonexistent"])
    assert "hinge" in str(err.value) and "wasserstein" in str(err.value)


def test_multirun_sweep_and_report(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", *TINY, "loss=standard,hinge", "max_g_steps=20", "evaluator.every_n_steps=10",
                   "evaluator.n_samples=500", f"hydra.sweep.dir={sweep}"], REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli([str(sweep)], REPO, module="gancollapse.report")
    assert res.returncode == 0, res.stderr[-3000:]
    board = (sweep / "leaderboard.md").read_text()
    rows = [line for line in board.splitlines() if line.startswith("| ") and "standard" in line or "hinge" in line]
    assert len([r for r in rows if r.startswith("|")]) == 2
    assert "modes" in board and "HQ %" in board and "reverse KL" in board and "wall s" in board
    assert (sweep / "scatter_grid.png").stat().st_size > 1000


def test_wandb_logger_runs_offline_beside_csv(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_cfg(["logger=wandb", "max_g_steps=10", "log_every_n_steps=5", "evaluator=none"])
    run(cfg, tmp_path)
    assert list((tmp_path / "wandb").glob("offline-run-*")), "expected an offline wandb run directory"
    assert (tmp_path / "metrics.csv").is_file()


@pytest.mark.slow
def test_compiled_nets_train_and_reload(tmp_path):
    summary = run(compose_cfg(["compile=true", "max_g_steps=20", "evaluator=none"]), tmp_path)
    assert summary["g_steps"] == 20
    assert gancollapse.load(tmp_path).sample(8).shape == (8, 2)


def test_ddp_on_two_cpu_processes_shards_the_data(tmp_path):
    res = run_cli([*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "max_g_steps=20",
                   "evaluator.every_n_steps=10", "evaluator.n_samples=500", f"hydra.run.dir={tmp_path}"], REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    # 2000 samples / batch 200 / 2 ranks = 5 batches per epoch and rank
    assert summary["g_steps"] == 20 and summary["epoch"] == 4
    assert gancollapse.load(tmp_path).sample(4).shape == (4, 2)


def test_csv_logger_flushes_without_finalize_and_appends_on_reopen(tmp_path):
    from gancollapse.loggers import CSVLogger

    first = CSVLogger(str(tmp_path), flush_every_s=0)
    first.log_metrics({"a": 1.0}, 50)  # never finalized, as after kill -9
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["a,step", "1.0,50"]
    second = CSVLogger(str(tmp_path), flush_every_s=0)
    second.log_metrics({"a": 2.0, "b": 3.0}, 100)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["a,b,step", "1.0,,50", "2.0,3.0,100"]


def test_image_dataset_picks_image_nets_and_adam_and_maem_trains(tmp_path):
    from gancollapse.train import resolve_default_choice

    assert resolve_default_choice("model", "default/cifar10") == "dcgan32"
    assert resolve_default_choice("model", "default/celeba") == "dcgan64"
    assert resolve_default_choice("optim", "default/ring") == "rmsprop"
    cfg = compose_cfg(["regularizer=maem", "dataset=digits", "model.generator.base=8", "model.discriminator.base=8",
                       "max_g_steps=3", "evaluator=none", "log_every_n_steps=1"], tiny=False)
    assert cfg.model.generator._target_.endswith("DCGAN32Generator") and cfg.optim.generator._target_ == "torch.optim.Adam"
    assert run(cfg, tmp_path)["g_steps"] == 3
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "train/maem_entropy_real" in header and "train/dlle" in header
