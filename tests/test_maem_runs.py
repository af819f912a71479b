"""MaEM-GAN end to end: the replay buffer through real Lightning checkpoints (save, load, resume), a toy
run with the full bundle, and a short CPU run of the paper's CIFAR-10 experiment on tiny images."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import gancollapse
from gancollapse.paths import CONF_DIR
from gancollapse.train import run

from .conftest import compose_cfg, metrics_csv

BATCH = 32
SMALL_TOY = ["dataset.n_samples=256", f"dataset.batch_size={BATCH}", "evaluator=none", "log_every_n_steps=1"]


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"]


def test_fifo_buffer_round_trips_through_lightning_checkpoint_and_resume(tmp_path: Path) -> None:
    over = [*SMALL_TOY, "regularizer=maem_entropy", "regularizer.maem.buffer_size=100", "regularizer.maem.ramp_epochs=0"]
    run(compose_cfg([*over, "max_g_steps=5"]), tmp_path)
    state = _state(tmp_path)
    real_key, fake_key = "regularizers.maem.real_buffer", "regularizers.maem.fake_buffer"
    assert int(state[f"{real_key}.ptr"]) == (5 * BATCH) % 100  # one push of 32 real codes per D step
    assert int(state[f"{fake_key}.ptr"]) == (5 * BATCH) % 100  # and of 32 fake codes per G step
    # loading a run restores the buffers exactly
    module = gancollapse.load(tmp_path, which="last").module
    torch.testing.assert_close(module.regularizers["maem"].real_buffer.data, state[f"{real_key}.data"])
    # resuming continues the FIFO: slots not overwritten since the resume keep the checkpointed codes
    before = state[f"{real_key}.data"].clone()
    run(compose_cfg([*over, "max_g_steps=6"]), tmp_path)
    after = _state(tmp_path)
    assert int(after[f"{real_key}.ptr"]) == (6 * BATCH) % 100
    written = {(5 * BATCH + i) % 100 for i in range(BATCH)}
    kept = sorted(set(range(100)) - written)
    torch.testing.assert_close(after[f"{real_key}.data"][kept], before[kept])
    assert not torch.equal(after[f"{real_key}.data"][sorted(written)], before[sorted(written)])


def test_seed_compat_buffer_shrinks_in_a_real_run_and_reloads(tmp_path: Path) -> None:
    over = [*SMALL_TOY, "regularizer=maem_entropy", "regularizer.maem.seed_compat=true", "regularizer.maem.buffer_size=64"]
    run(compose_cfg([*over, "max_g_steps=4"]), tmp_path)
    state = _state(tmp_path)
    # 64 → 33 → 2 → 1 → 1 with batches of 32 (cat(buf[32:], new))
    assert tuple(state["regularizers.maem.real_buffer.data"].shape) == (1, BATCH, 1)
    module = gancollapse.load(tmp_path, which="last").module
    assert module.regularizers["maem"].real_buffer.data.shape == (1, BATCH, 1)
    summary = run(compose_cfg([*over, "max_g_steps=6"]), tmp_path)  # resumes with the shrunk buffer
    assert summary["g_steps"] == 6


def test_toy_ring_run_with_full_maem_bundle(tmp_path: Path) -> None:
    cfg = compose_cfg(["regularizer=maem", "loss=maf", "model.discriminator.out_dim=4", "max_g_steps=60",
                       "regularizer.maem.ramp_epochs=1", "evaluator.every_n_steps=60"])
    summary = run(cfg, tmp_path)
    assert summary["g_steps"] == 60 and summary["nonfinite_skips"] == 0
    assert summary["toy/hq_fraction"] is not None
    rows = metrics_csv(tmp_path)
    for name in ("maem_entropy_real", "maem_entropy_fake", "dlle", "disomap"):
        vals = [float(r[f"train/{name}"]) for r in rows if r.get(f"train/{name}")]
        assert vals and all(math.isfinite(v) for v in vals), name
    late = [float(r["train/maem_entropy_real"]) for r in rows if r.get("train/maem_entropy_real")][-1]
    assert late != 0.0  # σ has ramped up after the first epoch


def _entropy_estimates(run_dir: Path, sigma: float) -> tuple[list[float], list[float]]:
    """The logged terms −σ·log(mean NN distance) turned back into the estimates (real side, fake side)."""
    rows = metrics_csv(run_dir)
    real = [-float(r["train/maem_entropy_real"]) / sigma for r in rows if r.get("train/maem_entropy_real")]
    fake = [-float(r["train/maem_entropy_fake"]) / sigma for r in rows if r.get("train/maem_entropy_fake")]
    return real, fake


def test_maem_entropy_raises_the_code_entropy_it_estimates(tmp_path: Path) -> None:
    """MaEM's purpose: a higher nearest-neighbour entropy of D's real codes (D step) and fake codes (G step)
    against the replay buffers. Baseline: the same run with σ = 1e-12, i.e. regularizer=none for the nets
    (the term's gradient is ~1e-10 of the loss's) on the same random streams (the buffers' U(−1, 1) initial
    codes draw from the global RNG, so a regularizer=none run would differ by its random numbers), still logging
    the estimate. Over the second half of 60 steps σ = 0.05 gave +0.6…0.9 nats (real) and +1.8…2.8 (fake)
    on seeds 0–2; a detached or sign-flipped term gives ≤ 0."""
    common = ["regularizer=maem_entropy", "loss=maf", "model.discriminator.out_dim=4", "evaluator=none",
              "max_g_steps=60", "log_every_n_steps=1", "regularizer.maem.ramp_epochs=0"]
    est = {}
    for sigma in (1e-12, 0.05):
        run(compose_cfg([*common, f"regularizer.maem.sigma={sigma}"]), tmp_path / str(sigma))
        est[sigma] = _entropy_estimates(tmp_path / str(sigma), sigma)

    def late(v: list[float]) -> float:
        assert len(v) == 60 and all(math.isfinite(x) for x in v)
        return sum(v[30:]) / 30

    (base_real, base_fake), (real, fake) = est[1e-12], est[0.05]
    assert late(real) > late(base_real) + 0.3
    assert late(fake) > late(base_fake) + 1.0


def _image_configs_present() -> bool:
    conf = Path(CONF_DIR)
    return all((conf / p).is_file() for p in ("model/dcgan32.yaml", "dataset/digits.yaml", "experiment/maem_cifar10.yaml"))


@pytest.mark.skipif(not _image_configs_present(), reason="DCGAN-32 / digits configs (issue 3) not present")
def test_maem_cifar10_experiment_short_cpu_run_logs_all_terms(tmp_path: Path) -> None:
    # The paper's experiment, shrunk: digits as tiny RGB 32×32 images instead of CIFAR-10, narrow nets,
    # 4-batch epochs so that the σ ramp (2 epochs here) and the per-epoch StepLR (every 2 epochs) both move.
    cfg = compose_cfg([
        "experiment=maem_cifar10", "dataset=digits", "~dataset.train_test", "dataset.channels=3",
        "dataset.batch_size=16", "evaluator=none", "trainer.accelerator=cpu",
        "model.generator.base=4", "model.discriminator.base=4", "+trainer.limit_train_batches=4",
        "max_g_steps=8", "regularizer.maem.ramp_epochs=2", "optim.scheduler.step_size=2", "log_every_n_steps=1",
    ], tiny=False)
    assert cfg.n_critic == 3 and cfg.g_reuse_z and cfg.z_dim == 64
    assert cfg.model.discriminator.stochastic and cfg.model.discriminator.spectral_norm
    assert cfg.regularizer.maem.code_dim == 16 and set(cfg.regularizer) == {"maem", "dlle", "disomap"}
    summary = run(cfg, tmp_path)
    assert (summary["g_steps"], summary["d_steps"]) == (8, 24) and summary["nonfinite_skips"] == 0
    rows = metrics_csv(tmp_path)
    for name in ("d_loss", "g_loss", "maem_entropy_real", "maem_entropy_fake", "dlle", "disomap"):
        vals = [float(r[f"train/{name}"]) for r in rows if r.get(f"train/{name}")]
        assert vals and all(math.isfinite(v) for v in vals), name
    real = [float(r["train/maem_entropy_real"]) for r in rows if r.get("train/maem_entropy_real")]
    assert real[0] == 0.0 and real[-1] != 0.0  # w(0) = 0, w(e ≥ 2) = σ
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    lrs = [s["_last_lr"][0] for s in ckpt["lr_schedulers"]]
    assert lrs == pytest.approx([1e-4 * 0.9**3] * 2)  # 6 epochs, ×0.9 every 2


@pytest.mark.skipif(not (Path(CONF_DIR) / "model/dcgan64.yaml").is_file(), reason="DCGAN-64 config (issue 3) not present")
def test_maem_celeba_recipe_builds_the_papers_nets() -> None:
    from gancollapse.build import build_module

    cfg = compose_cfg(["experiment=maem_celeba", "model.generator.base=4", "model.discriminator.base=4"], tiny=False)
    assert (cfg.z_dim, cfg.regularizer.maem.sigma, cfg.regularizer.maem.code_dim) == (128, 0.05, 32)
    module = build_module(cfg)
    codes = module.discriminator(module.generator(torch.randn(2, 128)))
    assert codes.shape == (2, 32)
    assert set(module.regularizers) == {"maem", "dlle", "disomap"}
