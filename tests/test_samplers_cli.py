"""``python -m gancollapse.sample`` on a tiny trained toy run."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from gancollapse.sample import main, parse_args
from gancollapse.train import CONF_DIR, run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):  # noqa: ANN001, ANN201
    run_dir = tmp_path_factory.mktemp("grid_run")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=grid", "loss=standard", "logger=csv", "max_g_steps=30", "dataset.n_samples=2000",
            "dataset.batch_size=200", "dataset.evaluator.n_samples=500",
            "model.generator.hidden=32", "model.discriminator.hidden=32", "z_dim=4", "~callbacks.progress_bar"])
    run(cfg, run_dir)
    return run_dir


FAST = {"wlgan": ["sampler.chain_length=6", "sampler.warmup_steps=3", "sampler.warmup_chains=20"],
        "mhgan": ["sampler.chain_length=5"], "repgan": ["sampler.chain_length=5"], "ddls": ["sampler.n_steps=5"],
        "drs": ["sampler.n_pilot=200"], "prior": []}


@pytest.mark.parametrize("name", list(FAST))
def test_cli_writes_summary_and_samples(tiny_run, name):  # noqa: ANN001
    summary = main([str(tiny_run), f"sampler={name}", "n=64", "n_calibration=200", "progress=false",
                    "sampler.batch_size=25" if name != "prior" else "seed=3", *FAST[name]])
    out = tiny_run / f"samples_{name}"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["sampler"] == name and on_disk["n"] == 64 and on_disk["dataset"] == "grid"
    for key in ("toy/modes", "toy/hq_fraction", "toy/reverse_kl", "sampler/samples_per_s"):
        assert key in on_disk
    assert 0 <= on_disk["toy/modes"] <= 25 and 0.0 <= on_disk["toy/hq_fraction"] <= 1.0
    if name != "prior":
        assert on_disk["calibration/brier_calibrated"] <= on_disk["calibration/brier_raw"] + 0.02
    saved = torch.load(out / "samples.pt")
    assert saved["x"].shape == (64, 2) and saved["z"].shape == (64, 4)
    assert (out / "samples.png").is_file() and (out / "sampler.yaml").is_file()


def test_cli_same_seed_same_samples(tiny_run):  # noqa: ANN001
    args = [str(tiny_run), "sampler=repgan", "n=10", "n_calibration=100", "progress=false", "sampler.chain_length=3"]
    main([*args, "tag=a"])
    main([*args, "tag=b"])
    a = torch.load(tiny_run / "samples_repgan_a" / "samples.pt")["z"]
    b = torch.load(tiny_run / "samples_repgan_b" / "samples.pt")["z"]
    assert torch.equal(a, b)


def test_cli_bad_input_names_the_key(tiny_run):  # noqa: ANN001
    with pytest.raises(ValueError, match="unknown option"):
        parse_args([str(tiny_run), "chains=3"])
    with pytest.raises(ValueError, match="not key=value"):
        parse_args([str(tiny_run), "wlgan"])
    with pytest.raises(ValueError, match="sampler='nope'"):
        main([str(tiny_run), "sampler=nope", "n=4"])
    with pytest.raises(ValueError, match="n must be"):
        parse_args([str(tiny_run), "n=0"])


def test_cli_on_an_image_run_reports_fid(tmp_path):  # noqa: ANN001
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=digits", "model=dcgan32", "logger=csv", "max_g_steps=3", "z_dim=8",
            "model.generator.base=4", "model.discriminator.base=4", "dataset.evaluator.n_samples=64",
            "dataset.evaluator.n_real=128", "dataset.evaluator.kid=false", "dataset.evaluator.prdc=false",
            f"++dataset.evaluator.cache_dir={tmp_path / 'cache'}", "~callbacks.progress_bar"])
    run(cfg, tmp_path / "run")
    summary = main([str(tmp_path / "run"), "sampler=mhgan", "n=16", "n_calibration=64", "progress=false",
                    "sampler.chain_length=3", "sampler.batch_size=8"])
    assert summary["sampler"] == "mhgan" and summary["fid"] >= 0.0
    saved = torch.load(tmp_path / "run" / "samples_mhgan" / "samples.pt")
    assert saved["x"].dtype == torch.uint8 and saved["x"].shape == (16, 1, 32, 32)
