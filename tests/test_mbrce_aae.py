"""MBRCE-AAE / ALAE module: training through every lod on real TFRecords, checkpoints per lod, resume vs lod-change
optimizer resets, evaluation + figures, the ALAE baseline, the sign of the encoder step, ALAE's loss and
optimizer assignment, configuration errors and the CelebA-256 recipe."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image

from gancollapse.aggregate import flatten
from gancollapse.build import build_module
from gancollapse.evaluate_aae import evaluate_run
from gancollapse.figures_aae import main as figures_main
from gancollapse.metrics.aae import reconstruction_metrics, ssim_sigma
from gancollapse.metrics.aae_figures import bilinear_grid, interleave
from gancollapse.models.mbrce_aae import MBRCEAAEModule, alae_discriminator_loss
from gancollapse.models.phased import PhaseBatch
from gancollapse.train import run
from tests.conftest import BATCH, N_IMAGES, N_TEST, compose_cfg, is_png, metric_values
from tests.conftest import aae_overrides as _overrides

STEPS_PER_EPOCH = (N_IMAGES - N_TEST) // BATCH


def _max_adam_step(optimizer_state: dict) -> int:
    return max((int(s["step"]) for s in optimizer_state["state"].values()), default=0)


# ---------------------------------------------------------------------------- a full run
@pytest.fixture(scope="module")
def full_run(digits16, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(_overrides(digits16, tmp_path_factory.mktemp("cache")), tiny=False)
    summary = run(cfg, run_dir)
    return run_dir, summary


def test_run_trains_every_lod_with_checkpoints_metrics_and_figures(full_run):
    run_dir, summary = full_run
    assert summary["status"] == "finished"
    assert summary["g_steps"] == 4 * STEPS_PER_EPOCH  # 4 epochs, one G step per batch
    for lod in range(3):
        ckpt = torch.load(run_dir / "checkpoints" / f"lod{lod}.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["mbrce_aae"]["lod"] == lod
        # lods 0 and 1 end after their one epoch; lod 2's checkpoint is the end of training
        assert ckpt["gancollapse"]["steps"]["g"] == {0: 1, 1: 2, 2: 4}[lod] * STEPS_PER_EPOCH
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["mbrce_aae"]["lod"] == 2 and last["mbrce_aae"]["blend"] == 1.0
    assert any(k.startswith("ema.shadow.generator.") for k in last["state_dict"])
    for key in ("fid", "kid", "precision", "recall", "recon/mse", "recon/psnr", "recon/ssim", "recon/fid",
                "class_coverage/covered", "class_coverage/entropy", "recon/class_accuracy"):
        assert key in summary and math.isfinite(summary[key]), key
    assert 0 <= summary["class_coverage/covered"] <= 10 and -1 <= summary["recon/ssim"] <= 1
    assert summary["recon/mse"] > 0 and summary["recon/lod"] == 2
    # best-FID only at the top lod: the first evaluation (and so best/fid_step) is inside lod 2's stage
    assert summary["best/fid_step"] > 2 * STEPS_PER_EPOCH
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    for name in ("samples", "recon", "interp", "stylemix"):
        assert is_png(run_dir / "figures" / f"{name}.png"), name
    with Image.open(run_dir / "figures" / "interp.png") as im:  # 8 × 8 grid of 16-px tiles, 2-px padding
        assert im.size == (8 * 18 + 2, 8 * 18 + 2)


def test_evaluate_and_figures_cli_on_the_run(full_run, tmp_path):
    run_dir, summary = full_run
    metrics = evaluate_run(run_dir, "lod1", figures=False)
    assert metrics["recon/lod"] == 1 and "fid" not in metrics  # below the top lod: no generation metrics
    metrics = evaluate_run(run_dir, "last", figures=False)
    # Same weights, latents, noise and batches: the same numbers, to round-off. (The re-evaluation builds its
    # feature extractor first; building it had shifted G's noise draws when generation was not seeded after it.)
    for key in ("fid", "kid", "kid_std", "precision", "recall", "recon/fid", "class_coverage/entropy"):
        assert metrics[key] == pytest.approx(summary[key], rel=1e-9, abs=1e-12), key
    assert json.loads((run_dir / "summary.json").read_text())["recon/psnr"] == pytest.approx(metrics["recon/psnr"])
    paths = figures_main([str(run_dir), "--what", "samples,stylemix", "--out", str(tmp_path)])
    assert sorted(paths) == ["samples", "stylemix"] and all(is_png(p) for p in paths.values())


# ---------------------------------------------------------------------------- resume vs lod change
def test_resume_keeps_adam_state_and_a_lod_change_resets_it(digits16, tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    base = _overrides(digits16, cache, epochs=(1, 2, 1)) + ["evaluator.figures=false", "evaluator.classifier=null"]

    def train_to(g_steps: int) -> dict:
        run(compose_cfg(base + [f"max_g_steps={g_steps}"], tiny=False), run_dir)
        return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)

    # lod 1 starts after 4 batches; stop 2 batches into it: each Adam has made 2 steps per batch (E: e, ae;
    # G/F: g, ae) since the reset at the stage start
    ckpt = train_to(STEPS_PER_EPOCH + 2)
    assert ckpt["mbrce_aae"]["lod"] == 1
    assert [_max_adam_step(s) for s in ckpt["optimizer_states"]] == [4, 4]
    # resumed inside lod 1's stage (a step-limit stop resumes at the next epoch, epoch 2, still lod 1): the
    # moments survive — a reset on resume would count 8, not 4 + 8
    ckpt = train_to(STEPS_PER_EPOCH + 6)
    assert ckpt["mbrce_aae"]["lod"] == 1 and ckpt["gancollapse"]["steps"]["g"] == STEPS_PER_EPOCH + 6
    assert [_max_adam_step(s) for s in ckpt["optimizer_states"]] == [12, 12]
    # epoch 3 is lod 2: fresh moments at its first batch, 4 batches old at the stop (no reset: 12 + 8)
    ckpt = train_to(STEPS_PER_EPOCH + 10)
    assert ckpt["mbrce_aae"]["lod"] == 2 and ckpt["mbrce_aae"]["sched_epoch"] == 3
    assert [_max_adam_step(s) for s in ckpt["optimizer_states"]] == [8, 8]


def test_alae_baseline_trains_through_the_same_pipeline(digits16, tmp_path):
    cfg = compose_cfg(_overrides(digits16, tmp_path / "cache", "alae_digits")
                      + ["max_g_steps=6", "evaluator.figures=false", "evaluator.classifier=null"], tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "finished" and summary["g_steps"] == 6 and summary["nonfinite_skips"] == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    n_encoder = sum(1 for k in ckpt["state_dict"] if k.startswith("alae.encoder."))
    n_head = sum(1 for k in ckpt["state_dict"] if k.startswith("alae.discriminator."))
    # ALAE's encoder optimizer also steps the latent discriminator head D (its parameters follow E's)
    assert n_head > 0 and set(range(n_encoder, n_encoder + n_head)) <= set(ckpt["optimizer_states"][0]["state"])


# ---------------------------------------------------------------------------- the objective does not inflate the codes
def _code_norms(data, run_dir, g_steps: int, extra: list[str]) -> list[float]:
    """Mean ‖E(x)‖ of the real batch at every G step of a digits run at lod 0 (4 px, so steps are cheap)."""
    cfg = compose_cfg([
        "experiment=mbrce_aae_digits", f"dataset.path={data}", "dataset.tfrecord_name=tiny", "dataset.prepare=null",
        "z_dim=8", "model.module.mapping_layers=2", "model.module.channels=[16,8,8]",
        "model.module.epochs_per_lod=[1000,1,1]", f"model.module.batch_sizes={BATCH}", "trainer.max_epochs=1002",
        f"max_g_steps={g_steps}", "callbacks.progress_bar=null", "log_every_n_steps=1", "ckpt_every_n_steps=100000",
        "evaluator=none", *extra], tiny=False)
    summary = run(cfg, run_dir)
    assert summary["status"] == "finished" and summary["nonfinite_skips"] == 0
    norms = metric_values(run_dir, "train/code_norm")
    assert len(norms) == g_steps
    return norms


def _within_twice_the_start(norms: list[float]) -> bool:
    return all(0.5 * norms[0] <= n <= 2.0 * norms[0] for n in norms)


def test_codes_keep_their_scale_without_r1(digits16, tmp_path):
    # 100 steps of the bare latent term (no R1, the seed's MBRCE setting): with the bandwidth detached, E raises
    # D by inflating its codes (their mean norm passes 2x the start within 100 steps); with the bandwidth
    # following the codes it cannot, and the norm stays within 2x.
    norms = _code_norms(digits16, tmp_path, 100, ["model.module.r1_gamma=0"])
    assert _within_twice_the_start(norms), (norms[0], min(norms), max(norms))


@pytest.mark.slow  # ~90 s on one loaded core
def test_codes_keep_their_scale_over_500_steps_of_the_digits_experiment(digits16, tmp_path):
    # The experiment as configured (R1 γ = 10). With the detached bandwidth the codes shrink more than 2x instead.
    norms = _code_norms(digits16, tmp_path, 500, [])
    assert _within_twice_the_start(norms), (norms[0], min(norms), max(norms))


# ---------------------------------------------------------------------------- MBRCE vs ALAE: one term apart
@pytest.mark.parametrize("mbrce, alae", [("mbrce_aae_digits", "alae_digits"),
                                         ("mbrce_aae_celeba256", "alae_celeba256")])
def test_mbrce_and_alae_experiments_differ_only_in_the_latent_term(mbrce, alae):
    # Same nets, R1, data, budget and schedule: the resolved configs differ in the estimator alone (the model
    # choice name, mbrce_aae vs alae, is not part of the composed config).
    a, b = (flatten(OmegaConf.to_container(compose_cfg([f"experiment={e}"], tiny=False), resolve=True))
            for e in (mbrce, alae))
    diff = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k, a) != b.get(k, b)}
    assert diff == {"model.module.estimator": ("cs2", "logistic")}
    assert a["model.module.r1_gamma"] == b["model.module.r1_gamma"] == 10.0  # ALAE's R1 in both


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_spectral_estimator_trains_through_the_pipeline(digits16, tmp_path, alpha):
    # The paper's general-α estimator (eigendecompositions, no double backward: R1 off).
    cfg = compose_cfg(_overrides(digits16, tmp_path / "cache")
                      + ["model.module.estimator=spectral", f"model.module.alpha={alpha}", "model.module.r1_gamma=0",
                         "max_g_steps=6", "evaluator.figures=false", "evaluator.classifier=null"], tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "finished" and summary["g_steps"] == 6 and summary["nonfinite_skips"] == 0
    divs = metric_values(tmp_path / "run", "train/divergence")
    assert len(divs) == 3 and all(math.isfinite(d) for d in divs)  # logged every 2 steps
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["mbrce_aae"]["estimator"] == "spectral"
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


# ---------------------------------------------------------------------------- unit behaviour
def _module(**kw) -> MBRCEAAEModule:
    torch.manual_seed(0)
    args = dict(image_size=8, image_channels=1, latent_dim=8, mapping_layers=2, channels=[16, 8], epochs_per_lod=1,
                batch_sizes=16, style_mixing_prob=0.0)
    args.update(kw)
    m = MBRCEAAEModule(**args)
    m.configure_schedule(dataset_size=64)
    m.use_optimizers(m.configure_optimizers())
    return m


def _fixed_divergence(m: MBRCEAAEModule, x: torch.Tensor, z: torch.Tensor) -> float:
    torch.manual_seed(1)  # G's noise inputs
    with torch.no_grad():
        fake = m.alae.generate(z, 0, 1.0)
        return float(m.divergence(m.alae.encode(x, 0), m.alae.encode(fake, 0)))


ESTIMATORS = [{}, {"estimator": "spectral", "alpha": 0.5}]  # cs2 (default) and the paper's α < 1 form


def _at_lod0_with_fixed_batch(**kw) -> tuple[MBRCEAAEModule, torch.Tensor, torch.Tensor]:
    """A module at lod 0 and a fixed batch (x: 16 images of 4², z: their latents)."""
    m = _module(**kw)
    m.phase_batch((torch.zeros(16, 1, 4, 4), None))  # sets lod 0
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 4, 4, generator=gen) * 2 - 1
    return m, x, torch.randn(16, 8, generator=gen)


@pytest.mark.parametrize("kw", ESTIMATORS, ids=["cs2", "spectral0.5"])
def test_encoder_step_pushes_real_and_generated_codes_apart(kw):
    m, x, z = _at_lod0_with_fixed_batch(**kw)
    before = _fixed_divergence(m, x, z)
    g_before = [p.clone() for p in m.alae.generator.parameters()]
    for _ in range(5):
        torch.manual_seed(1)
        m._update(m.e_loss(PhaseBatch(x, z))["loss"], "e")
    after = _fixed_divergence(m, x, z)
    assert after > before + 0.05
    assert all(torch.equal(a, b) for a, b in zip(g_before, m.alae.generator.parameters(), strict=True))


@pytest.mark.parametrize("kw", ESTIMATORS, ids=["cs2", "spectral0.5"])
def test_generator_step_pulls_generated_codes_towards_real_ones(kw):
    m, x, z = _at_lod0_with_fixed_batch(**kw)
    before = _fixed_divergence(m, x, z)
    e_before = [p.clone() for p in m.alae.encoder.parameters()]
    m.sample_z = lambda n: z[:n]  # the G step draws its own z: make it the fixed one
    for _ in range(5):
        torch.manual_seed(1)
        m._update(m.g_loss(PhaseBatch(x, z))["loss"], "g")
    assert _fixed_divergence(m, x, z) < before - 0.05
    assert all(torch.equal(a, b) for a, b in zip(e_before, m.alae.encoder.parameters(), strict=True))


def test_autoencoding_step_steps_both_adams_as_alae():
    m = _module()
    m.training_step((torch.rand(16, 1, 4, 4) * 2 - 1, None))
    enc, gen = (opt.state for opt in m._standalone_opts)
    # E: one step in `e` and one in `ae`; G and F: one in `g` and one in `ae` (train_alae.py)
    assert {int(s["step"]) for s in enc.values()} == {2}
    assert {int(s["step"]) for p, s in gen.items() if p is m.alae.mapping.layers[0].weight} == {2}
    assert all(p not in enc for p in m.alae.discriminator.parameters())  # no head outside estimator=logistic
    assert m.steps == {"e": 1, "g": 1, "ae": 1} and m.g_steps == 1


def test_logistic_encoder_step_is_alaes_discriminator_loss():
    # d = a·x per sample: the R1 gradient is a, so R1 = γ/2 ‖a‖² exactly
    a = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])
    real = torch.rand(3, 1, 2, 2, requires_grad=True)
    d_real = (real * a).flatten(1).sum(1)
    d_fake = torch.tensor([0.3, -1.0, 2.0])
    loss, r1 = alae_discriminator_loss(d_real, d_fake, real, r1_gamma=10.0)
    expected = (F.softplus(d_fake) + F.softplus(-d_real)).mean() + 5.0 * a.pow(2).sum()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(r1) == pytest.approx(5.0 * float(a.pow(2).sum()), rel=1e-6)
    m = _module(estimator="logistic", r1_gamma=10.0)
    m.phase_batch((torch.zeros(16, 1, 4, 4), None))
    d_before = [p.clone() for p in m.alae.discriminator.parameters()]
    m._update(m.e_loss(PhaseBatch(torch.rand(16, 1, 4, 4), torch.randn(16, 8)))["loss"], "e")
    assert not all(torch.equal(a, b) for a, b in zip(d_before, m.alae.discriminator.parameters(), strict=True))


def test_reconstruction_metrics_known_values():
    x = torch.zeros(2, 1, 16, 16)
    m = reconstruction_metrics(x, x + 0.1)
    assert m["mse"] == pytest.approx(0.01) and m["psnr"] == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-5)
    assert reconstruction_metrics(x, x)["ssim"] == pytest.approx(1.0)
    assert ssim_sigma(32) == 1.5 and ssim_sigma(4) == pytest.approx(0.375)
    corners = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    grid = bilinear_grid(corners, 3).flatten()
    assert grid.tolist() == pytest.approx([0, 0.5, 1, 1, 1.5, 2, 2, 2.5, 3])
    assert interleave(torch.zeros(2, 1), torch.ones(2, 1)).flatten().tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("kw, key", [
    ({"alpha": 0.0, "estimator": "spectral"}, "model.module.alpha"),
    ({"alpha": -1.0}, "model.module.alpha"),
    ({"sigma2": 0.0}, "model.module.sigma2"),
    ({"sigma2": -2.0}, "model.module.sigma2"),
    ({"epochs_per_lod": [1]}, "model.module.epochs_per_lod"),
    ({"batch_sizes": [16]}, "model.module.batch_sizes"),
    ({"learning_rates": [1e-3]}, "model.module.learning_rates"),
    ({"image_size": 12}, "model.module.image_size"),
    ({"image_size": 2}, "model.module.image_size"),
    ({"estimator": "mmd"}, "model.module.estimator"),
    ({"channels": [16, 8, 8]}, "model.module.channels"),
    ({"estimator": "spectral", "alpha": 0.5, "r1_gamma": 1.0}, "r1_gamma"),
])
def test_bad_configuration_names_the_key(kw, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        _module(**kw)


def test_batch_sizes_must_split_over_the_world_size():
    m = _module(batch_sizes=[16, 12])
    with pytest.raises(ValueError, match="batch_sizes"):
        m.configure_schedule(64, world_size=8)


@pytest.mark.parametrize("experiment, estimator", [("mbrce_aae_celeba256", "cs2"), ("alae_celeba256", "logistic")])
def test_celeba256_recipe_composes_and_builds_at_reduced_width(experiment, estimator):
    cfg = compose_cfg([f"experiment={experiment}", "z_dim=8", "model.module.mapping_layers=1",
                       "model.module.start_channels=1", "model.module.max_channels=4"], tiny=False)
    assert cfg.trainer.reload_dataloaders_every_n_epochs == 1 and cfg.trainer.max_epochs == 280
    assert cfg.dataset.max_resolution == 256 and cfg.dataset.flip
    module = build_module(cfg)  # image size and channels come from the config: no data needed
    assert isinstance(module, MBRCEAAEModule) and module.estimator == estimator
    assert module.max_lod == 6 and module.channels == [4, 4, 4, 4, 4, 2, 1]  # min(max, start · 2^(6 − lod))
    assert module.batch_sizes == [512, 256, 128, 64, 32, 32, 32] and module.epochs_per_lod == [30] * 7
    assert module.r1_gamma == 10.0  # ALAE's R1 in both: the runs differ in the latent term alone
    out = module.alae.generate(torch.randn(2, 8), lod=6)
    assert out.shape == (2, 3, 256, 256)
