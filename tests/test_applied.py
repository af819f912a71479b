"""Every config choice is applied or refused: each model × each option of each group either stops at start-up with
one line naming the key (before any file exists), or trains 2 steps and its ``summary.json["applied"]`` — read from
the objects the step called — shows the choice. Plus the issue's cases by name, and the report labelling rows from
``applied``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import get_class, instantiate

from gancollapse.paths import CONF_DIR
from gancollapse.report import write_report
from gancollapse.runio import RunError
from gancollapse.runner import validate
from gancollapse.train import run
from tests.conftest import TINY, aae_overrides, compose_cfg

QUIET = ["evaluator=none", "max_g_steps=2", "callbacks.progress_bar=null"]
MODELS = {
    "gan": [*TINY, *QUIET],
    "distgan": ["method=distgan_mnist", "dataset=digits", "dataset.img_size=28", "model.generator.dim=4",
                "model.generator.bridge=crop", "model.discriminator.dim=4", "dataset.batch_size=16", "optim=distgan",
                "prior=uniform", "z_dim=2", "model.module.schedule_steps=8", *QUIET],
    "mbrce": "mbrce_aae_digits",
    "alae": "alae_digits",
}
# options whose run needs one more setting on every model (the option's own documented requirement)
NEEDS = {("optim", "nudged_adam"): ["optim.generator.every_n_steps=1", "optim.generator.k=2",
                                    "optim.generator.iterations=3"],
         ("regularizer", "pack"): [], ("regularizer", "unrolled"): ["regularizer.unrolled.k=1"]}


def _options(group: str) -> list[str]:
    root = Path(CONF_DIR) / group
    return sorted(p.stem for p in root.glob("*.yaml"))


CASES = [(m, g, o) for m in MODELS for g in ("loss", "regularizer", "prior", "sampler", "optim") for o in _options(g)]
CASES += [(m, "n_critic", "2") for m in MODELS] + [(m, "g_reuse_z", "false") for m in MODELS]


def _base(model: str, digits16: Path, tmp: Path) -> list[str]:
    spec = MODELS[model]
    if isinstance(spec, list):
        return list(spec)
    keep = [o for o in aae_overrides(digits16, tmp / "cache", spec) if not o.startswith("evaluator.")]
    return [*keep, *QUIET]


def _expected(cfg, group: str) -> object:  # noqa: ANN001
    """What ``applied`` must say for the choice, computed from the config by building the choice's object."""
    if group == "prior":
        return instantiate(cfg.prior).describe()
    if group == "regularizer":  # MBRCE-AAE/ALAE: R1 is also the module's own (model=alae: r1_gamma 10)
        own_r1 = float(cfg.model.get("module", {}).get("r1_gamma", 0) or 0) > 0
        return set((cfg.regularizer or {}).keys()) | ({"r1"} if own_r1 else set())
    if group == "optim":
        return {k: get_class(v._target_).__name__ for k, v in (cfg.optim or {}).items() if k != "scheduler" and v}
    if group == "loss":
        return instantiate(cfg.loss).describe() if cfg.loss else None
    return None


@pytest.mark.parametrize("model,group,option", CASES, ids=[f"{m}-{g}={o}" for m, g, o in CASES])
def test_every_choice_is_applied_or_refused(model, group, option, digits16, tmp_path):
    overrides = [*_base(model, digits16, tmp_path), f"{group}={option}", *NEEDS.get((group, option), [])]
    cfg = compose_cfg(overrides, tiny=False)
    run_dir = tmp_path / "run"
    try:
        validate(cfg)
    except (RunError, ValueError) as err:
        line = str(err)
        assert "\n" not in line and (group in line or option in line), line  # one line naming the key
        with pytest.raises((RunError, ValueError)):
            run(cfg, run_dir)
        assert not run_dir.exists()  # refused before any file was written
        return
    summary = run(cfg, run_dir)
    applied = json.loads((run_dir / "summary.json").read_text())["applied"]
    assert summary["status"] == "finished" and summary["g_steps"] == 2
    expected = _expected(cfg, group)
    if group == "loss":
        assert applied["loss"] == expected or (expected is None and applied["loss"].startswith(("mbrce", "alae")))
    elif group == "regularizer":
        assert set(applied["regularizers"]) == expected
    elif group == "prior":
        assert applied["prior"] == expected
    elif group == "optim":
        assert {k: v["type"] for k, v in applied["optimizers"].items() if k in expected} == expected
    elif group == "n_critic":
        assert applied["n_critic"] == 2
    elif group == "g_reuse_z":
        assert applied["g_reuse_z"] is False
    elif group == "sampler":
        assert option == "prior"  # any other sampler in training is refused without evaluator.samplers


def _refusal(overrides: list[str]) -> str:
    with pytest.raises(RunError) as caught:
        validate(compose_cfg(overrides, tiny=False))
    return str(caught.value)


def test_the_issues_cases_are_refused_naming_the_key(digits16, tmp_path):
    assert _refusal(["experiment=benchmark/distgan", "loss=hinge"]).startswith(
        "loss=HingeLoss: Dist-GAN uses its own loss — choose loss=distgan")
    line = _refusal([*TINY, "sampler=mhgan"])
    assert line.startswith("sampler=MHGANSampler: training draws z from the prior") and "evaluator.samplers" in line
    assert _refusal(["experiment=mbrce_aae_digits", "regularizer=spectral_norm"]).startswith(
        "regularizer.spectral_norm (SpectralNorm) needs the apply_to_nets hook")
    assert _refusal([*TINY, "optim.generator.lr=-1"]).startswith("optim.generator.lr=-1: Invalid learning rate")
    assert _refusal(["experiment=mbrce_aae_digits", "n_critic=3"]).startswith("n_critic=3: the MBRCE-AAE/ALAE step")
    assert _refusal([*TINY, "+max_g_step=10"]).startswith("max_g_step=10: not a key of the run config (did you "
                                                          "mean max_g_steps?)")
    assert "has no encoder optimizer" in _refusal([*TINY, "optim=distgan"])


def test_r1_on_mbrce_is_its_encoder_step_r1(digits16, tmp_path):
    """regularizer=r1 with MBRCE-AAE is applied as model.module.r1_gamma: train/r1 is logged non-zero."""
    base = _base("mbrce", digits16, tmp_path)
    cfg = compose_cfg([*base, "model.module.r1_gamma=0", "regularizer=r1", "regularizer.r1.gamma=5",
                       "log_every_n_steps=1"], tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert summary["applied"]["regularizers"] == {"r1": {"type": "R1", "gamma": 5.0}}
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    r1 = [float(r.split(",")[header.index("train/r1")]) for r in rows[1:] if r.split(",")[header.index("train/r1")]]
    assert r1 and all(v > 0 for v in r1)
    # the experiment's own R1 (γ = 10, as ALAE) and another γ from regularizer=r1: ambiguous, refused
    assert "both set R1's weight" in _refusal([*base, "regularizer=r1", "regularizer.r1.gamma=3"])


def test_report_labels_rows_from_what_was_applied(tmp_path):
    """The leaderboard's loss/regularizer labels come from summary.json's applied record, not the config: a
    config.yaml edited to claim another loss does not change the row."""
    run_dir = tmp_path / "r0"
    run(compose_cfg([*QUIET, "loss=hinge", "regularizer=r1"]), run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["loss"], summary["regularizers"]) == ("hinge", "r1")
    assert summary["applied"]["regularizers"]["r1"] == {"type": "R1", "gamma": 10.0, "every": 1}
    cfg = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(cfg.replace("loss: hinge", "loss: standard").replace("HingeLoss", "StandardLoss"))
    md = write_report(tmp_path).read_text()
    assert "| hinge | r1 |" in md and "standard" not in md.split("\n", 3)[-1]


def test_every_model_offers_the_contract_and_its_capabilities(digits16, tmp_path):
    """gancollapse.models.contract: every model is Generative; the rest are capabilities callbacks may require."""
    from gancollapse.build import build_module
    from gancollapse.models.contract import Adversarial, Autoencoding, Generative, HessianProbe, Progressive

    offers = {"gan": {Adversarial}, "distgan": {Adversarial, HessianProbe}, "mbrce": {Autoencoding, Progressive},
              "alae": {Autoencoding, Progressive}}
    for model, expected in offers.items():
        module = build_module(compose_cfg(_base(model, digits16, tmp_path), tiny=False))
        assert isinstance(module, Generative), model
        got = {c for c in (Adversarial, Autoencoding, HessianProbe, Progressive) if isinstance(module, c)}
        assert got == expected, model


def test_a_callback_needing_what_the_model_lacks_is_refused_at_start_up(digits16, tmp_path):
    cfg = compose_cfg([*_base("mbrce", digits16, tmp_path), "+callbacks=observatory"], tiny=False)
    with pytest.raises(RunError, match=r"^callbacks.observatory: needs a model with Adversarial \(a generator and a "
                                       r"per-sample discriminator.*MBRCE-AAE/ALAE has none"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_closing_printout_shows_the_main_metrics_of_image_runs():
    from gancollapse.progress import closing_lines

    summary = {"status": "finished", "g_steps": 12, "nonfinite_skips": 0, "fid": 3.25, "kid": 0.0123, "modes": 417.0,
               "kl_uniform": 1.5, "best/fid": 3.0, "eval/seconds": 9.5, "eval/g_step": 12.0, "fid@mhgan": 3.5}
    shown = closing_lines(Path("run"), summary)[-2]
    for key in ("fid=3.25", "kid=0.0123", "modes=417", "kl_uniform=1.5", "best/fid=3", "fid@mhgan=3.5"):
        assert key in shown, (key, shown)
    assert "eval/seconds" not in shown and "eval/g_step" not in shown


def test_a_run_saved_before_the_prior_group_still_loads_with_its_prior(tmp_path):
    """Runs saved before the prior group kept the prior's keys in their sampler node (which training used only to
    draw z): such a config.yaml loads, with that prior, and samples."""
    import yaml

    import gancollapse

    run_dir = tmp_path / "old"
    run(compose_cfg([*QUIET, "prior=uniform"]), run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    del saved["prior"]
    saved["sampler"] = {"_target_": "gancollapse.samplers.mhgan.MHGANSampler", "distribution": "uniform",
                        "low": -1.0, "high": 1.0, "chain_length": 640}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    handle = gancollapse.load(run_dir, which="last")
    assert handle.module.prior.describe() == "uniform[-1,1]"
    z = handle.sample_z(64, seed=0)
    assert z.min() >= -1 and z.max() <= 1 and z.abs().max() > 0.5  # uniform draws, not normal ones
    assert handle.make_sampler("mhgan", fit=False).distribution == "uniform"
