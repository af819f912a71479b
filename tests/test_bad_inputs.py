"""Bad input, tried as a new user would: each gets one line, ``error: <what> — <fix>``, that names the key (no
traceback; HYDRA_FULL_ERROR=1 shows it), and a refused start leaves no run directory behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from .conftest import compose_cfg, error_line
from .reliability_helpers import cli

QUICK = ["callbacks.progress_bar=null", "max_g_steps=2"]
TINY_TOY = ["model.generator.hidden=16", "model.discriminator.hidden=16", "dataset.n_samples=400",
            "dataset.batch_size=100", "evaluator=none"]

# (overrides of python -m gancollapse.train, what the error line must contain)
TRAIN = [
    (["n_critic=abc"], "n_critic=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["seed=abc"], "seed=abc: Value 'abc'"),
    (["n_critic=1.5"], "n_critic=1.5"),
    (["+max_g_step=10"], "max_g_step=10: not a key of the run config (did you mean max_g_steps?)"),
    (["max_g_step=10"], "max_g_step=10: the run config has no key max_g_step (did you mean max_g_steps?)"),
    (["optim.generator.lr=-1"], "optim.generator.lr=-1: Invalid learning rate"),
    (["optim=adam", "optim.generator.betas=[0.5,1.5]"], "optim.generator.betas=[0.5, 1.5]: Invalid beta"),
    (["loss=foo"], "loss=foo: no such option — choose one of distgan, hinge"),
    (["-m", "loss=hinge,foo"], "loss=foo: no such option"),
    (["regularizer=[r1,nope]"], "regularizer=nope: no such option"),
    (["experiment=nope"], "experiment=nope: no such option"),
    (["dataset.std=-1"], "dataset.std must be > 0"),
    (["dataset.batch_size=0"], "dataset.batch_size must be > 0"),
    (["n_critic=0"], "n_critic must be >= 1"),
    (["z_dim=0"], "z_dim must be >= 1"),
    (["log_every_n_steps=0"], "log_every_n_steps must be >= 1"),
    (["ckpt_every_minutes=-5"], "ckpt_every_minutes must be > 0 or null"),
    (["resume=maybe"], "resume must be true, false or force"),
    (["prior.distribution=cauchy"], "prior.distribution must be 'normal' or 'uniform'"),
    (["regularizer=topk", "regularizer.topk.nu=2"], "regularizer.topk.nu must be in (0, 1]"),
    (["regularizer=r1", "regularizer.r1.gamma=abc"], "regularizer.r1.gamma=abc: Value 'abc'"),
    (["regularizer=r1", "+regularizer.r1.gama=5"], "regularizer.r1.gama: R1 has no such key (did you mean gamma?)"),
    (["loss=least_squares", "loss.seed_compat=maybe"], "loss.seed_compat=maybe: Value 'maybe' is not a valid bool"),
    (["model.generator.hidden=abc"], "model.generator.hidden=abc"),
    (["+dataset.foo=1"], "dataset.foo: ToyDataModule has no such key"),
    (["evaluator=toy", "evaluator.every_n_steps=-1"], "evaluator.every_n_steps / every_n_epochs must be >= 0"),
    (["trainer=gpu"], "trainer=gpu asks for GPUs but this machine has none"),
    (["dataset=ring", "model=dcgan32"], "model.generator.channels: Interpolation key 'dataset.channels' not found"),
    (["sampler=mhgan"], "sampler=mhgan: training draws z from the prior"),
    (["evaluator=toy", "evaluator.samplers=[prior,nope]"], "evaluator.samplers=['prior', 'nope']: no sampler nope"),
    (["evaluator=toy", "+evaluator.metrics.mean={_target_:torchmetrics.MeanMetric}"],
     "evaluator.metrics.mean=MeanMetric: update() takes 'value', which this evaluator does not provide"),
    (["evaluator=toy", "+evaluator.metrics.modes.treshold=3"], "evaluator.metrics.modes.treshold: ToyModeStats has no such key"),
    (["experiment=benchmark/distgan", "loss=hinge"], "loss=hinge: Dist-GAN uses its own loss"),
    (["experiment=mbrce_aae_digits", "regularizer=spectral_norm"], "regularizer.spectral_norm (SpectralNorm) needs"),
    (["experiment=mbrce_aae_digits", "+optim.generator.lr=0.1"], "optim.generator.lr=0.1: MBRCE-AAE/ALAE sets the "
                                                                "learning rate per lod"),
    (["experiment=mbrce_aae_digits", "n_critic=2"], "n_critic=2: the MBRCE-AAE/ALAE step does not use n_critic"),
    (["accumulate_grad_batches=2", "optim=nudged_adam"], "accumulate_grad_batches=2: NudgedAdam's spectral check"),
    (["optim=distgan"], "optim.encoder: the GAN step has no encoder optimizer"),
]


def _one_error_line(out: str) -> str:
    """The output ends in its only ``error:`` line, with no traceback (``<what> — <fix>`` where the fix is more
    than "change the value": a component's own range check says only what is wrong)."""
    return error_line(out, with_fix=False)


@pytest.mark.parametrize("args,expected", TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_train_bad_input_is_one_line_naming_the_key_and_writes_nothing(args, expected, tmp_path):
    run_dir = tmp_path / "run"
    key = "hydra.sweep.dir" if "-m" in args else "hydra.run.dir"
    base = ["evaluator=none"] if any(a.startswith(("experiment=", "model=")) for a in args) else TINY_TOY
    code, out = cli([*base, *QUICK, *args, f"{key}={run_dir}"], tmp_path / "out.log")
    assert code != 0
    assert expected in _one_error_line(out)
    assert not run_dir.exists()  # a refused start leaves nothing behind


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from gancollapse.train import run

    out = tmp_path_factory.mktemp("trained") / "run"
    run(compose_cfg([*TINY_TOY, *QUICK]), out)
    return out


@pytest.mark.parametrize("args,expected", [
    (["n=abc"], "n"), (["sampler=nope"], "sampler='nope'"), (["nkey=1"], "unknown option(s) ['nkey']"),
    (["n=0"], "n must be >= 1"),
], ids=["n=abc", "sampler=nope", "nkey=1", "n=0"])
def test_sample_bad_input_is_one_line(run_dir, args, expected, tmp_path):
    code, out = cli([str(run_dir), *args], tmp_path / "out.log", module="gancollapse.sample")
    assert code != 0 and expected in _one_error_line(out)


def test_report_on_a_folder_that_is_not_a_sweep_is_one_line(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("not a run")
    code, out = cli([str(tmp_path)], tmp_path / "out.log", module="gancollapse.report")
    assert code != 0 and "this is not a sweep dir" in _one_error_line(out)


def test_every_table_case_composes_or_names_the_override():
    """The train table's cases are real user inputs: each either fails at composition or validation — none is
    silently accepted (a case that starts training would not be a bad input any more)."""
    assert len(TRAIN) + 6 >= 32
    cfg = compose_cfg([*TINY_TOY, *QUICK])
    assert OmegaConf.select(cfg, "max_g_steps") == 2
