"""``python -m gancollapse.sample`` on a tiny trained toy run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import gancollapse
from gancollapse.metrics.toy import mode_stats
from gancollapse.paths import CONF_DIR
from gancollapse.runio import RunError
from gancollapse.sample import image_metrics, main, parse_args
from gancollapse.train import run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):  # noqa: ANN001, ANN201
    run_dir = tmp_path_factory.mktemp("grid_run")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=grid", "loss=standard", "logger=csv", "max_g_steps=30", "dataset.n_samples=2000",
            "dataset.batch_size=200", "evaluator.n_samples=500",
            "model.generator.hidden=32", "model.discriminator.hidden=32", "z_dim=4", "~callbacks.progress_bar"])
    run(cfg, run_dir)
    # A 30-step G puts no sample within the evaluator's default 3σ of a mode, so every toy metric would read 0
    # whatever the samples. An HQ radius at this G's median distance to the nearest mode makes HQ% a statistic
    # that tells one sample set from another (about half of them inside).
    handle = gancollapse.load(run_dir)
    dm = handle.datamodule()
    x = handle.sample(2000, seed=0)
    radius = (torch.cdist(x, dm.centers).min(dim=1).values / dm.std).median().item()
    saved = OmegaConf.load(run_dir / "config.yaml")
    saved.evaluator.threshold = radius
    OmegaConf.save(saved, run_dir / "config.yaml")
    return run_dir


FAST = {"wlgan": ["sampler.chain_length=6", "sampler.warmup_steps=3", "sampler.warmup_chains=20"],
        "mhgan": ["sampler.chain_length=5"], "repgan": ["sampler.chain_length=5"], "ddls": ["sampler.n_steps=5"],
        "drs": ["sampler.n_pilot=200"], "prior": []}


@pytest.mark.parametrize("name", list(FAST))
def test_cli_writes_summary_and_samples(tiny_run, name):  # noqa: ANN001
    summary = main([str(tiny_run), f"sampler={name}", "n=128", "n_calibration=200", "progress=false",
                    "sampler.batch_size=25" if name != "prior" else "seed=3", *FAST[name]])
    out = tiny_run / f"samples_{name}"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["sampler"] == name and on_disk["n"] == 128 and on_disk["dataset"] == "grid"
    for key in ("toy/modes", "toy/hq_fraction", "toy/reverse_kl", "sampler/samples_per_s"):
        assert key in on_disk
    if name != "prior":
        assert on_disk["calibration/brier_calibrated"] <= on_disk["calibration/brier_raw"] + 0.02
    saved = torch.load(out / "samples.pt")
    assert saved["x"].shape == (128, 2) and saved["z"].shape == (128, 4)
    # the stored samples are G(z) of the stored codes, and the reported metrics are theirs
    handle = gancollapse.load(tiny_run)
    torch.testing.assert_close(saved["x"], handle.module.generate(128, z=saved["z"]).cpu())
    dm = handle.datamodule()
    threshold = float(handle.cfg.evaluator.threshold)
    stats = mode_stats(saved["x"], dm.centers, dm.std, threshold).as_dict()
    assert 0.0 < stats["toy/hq_fraction"] < 1.0  # a statistic of these samples, not a constant
    for key in ("toy/modes", "toy/hq_fraction"):
        assert on_disk[key] == pytest.approx(stats[key]), key
    if name == "prior":  # seed=3: the prior's own codes
        torch.testing.assert_close(saved["z"], torch.randn(128, 4, generator=torch.Generator().manual_seed(3)))
    assert (out / "samples.png").is_file() and (out / "sampler.yaml").is_file()


def test_cli_same_seed_same_samples(tiny_run):  # noqa: ANN001
    args = [str(tiny_run), "sampler=repgan", "n=10", "n_calibration=100", "progress=false", "sampler.chain_length=3"]
    main([*args, "tag=a"])
    main([*args, "tag=b"])
    a = torch.load(tiny_run / "samples_repgan_a" / "samples.pt")["z"]
    b = torch.load(tiny_run / "samples_repgan_b" / "samples.pt")["z"]
    assert torch.equal(a, b)


def test_cli_bad_input_names_the_key(tiny_run):  # noqa: ANN001
    with pytest.raises(RunError, match="unknown option"):
        parse_args([str(tiny_run), "chains=3"])
    with pytest.raises(RunError, match="not key=value"):
        parse_args([str(tiny_run), "wlgan"])
    with pytest.raises(RunError, match="sampler=.nope."):
        main([str(tiny_run), "sampler=nope", "n=4"])
    with pytest.raises(RunError, match="n must be"):
        parse_args([str(tiny_run), "n=0"])


def test_cli_on_an_image_run_reports_fid(tmp_path):  # noqa: ANN001
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=digits", "model=dcgan32", "logger=csv", "max_g_steps=3", "z_dim=8",
            "model.generator.base=4", "model.discriminator.base=4", "evaluator.n_samples=64",
            "evaluator.n_real=128", "evaluator.metrics.kid=null", "evaluator.metrics.prdc=null",
            f"++evaluator.cache_dir={tmp_path / 'cache'}", "~callbacks.progress_bar"])
    run(cfg, tmp_path / "run")
    summary = main([str(tmp_path / "run"), "sampler=mhgan", "n=16", "n_calibration=64", "progress=false",
                    "sampler.chain_length=3", "sampler.batch_size=8"])
    saved = torch.load(tmp_path / "run" / "samples_mhgan" / "samples.pt")
    assert saved["x"].dtype == torch.uint8 and saved["x"].shape == (16, 1, 32, 32)
    # the FID is the run's evaluator on G(z) for the sampled codes: recomputed from the saved codes, it matches
    assert summary["sampler"] == "mhgan" and math.isfinite(summary["fid"]) and summary["fid"] > 0
    handle = gancollapse.load(tmp_path / "run")
    assert image_metrics(handle, handle.datamodule(), saved["z"])["fid"] == pytest.approx(summary["fid"], rel=1e-4)
    torch.testing.assert_close(saved["x"], ((handle.module.generate(16, z=saved["z"]).cpu().clamp(-1, 1) + 1) * 127.5)
                               .round().to(torch.uint8), atol=1, rtol=0)


def test_run_handle_builds_samplers_as_the_cli_does(tmp_path):  # noqa: ANN001
    """``RunHandle.sample(n, sampler="mhgan")``: the run's training prior, and D's calibrator fitted on held-out
    real data, as ``python -m gancollapse.sample`` does (unfitted, MH-GAN would score raw logits and start its
    chains from generated samples; with the default normal prior, a uniform-prior G would see the wrong z)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=ring", "max_g_steps=10", "dataset.n_samples=1000", "dataset.batch_size=100", "evaluator=none",
            "prior=uniform",
            "model.generator.hidden=16", "model.discriminator.hidden=16", "~callbacks.progress_bar"])
    run(cfg, tmp_path)
    handle = gancollapse.load(tmp_path)
    sampler = handle.make_sampler("mhgan", n_calibration=400)
    assert sampler.distribution == "uniform" and (sampler.low, sampler.high) == (-1.0, 1.0)
    assert sampler.calibrator.fitted and sampler.real_logits is not None
    assert not handle.make_sampler("mhgan", fit=False).calibrator.fitted
    sampler.chain_length = 3
    z = handle.sample_z(200, sampler, seed=0)
    assert z.shape == (200, handle.z_dim) and z.abs().max() <= 1.0  # every chain state is a uniform draw
    assert handle.sample(50, sampler, seed=0).shape == (50, 2)
