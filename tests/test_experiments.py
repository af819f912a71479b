"""Every experiment in conf/experiment/ composes with ``evaluator=none`` and the observatory off, and trains 2 steps.

Experiments whose data need a download or a GPU-sized set (MNIST, CIFAR-10, CelebA, CelebA-HQ TFRecords) run on an
offline stand-in of the same shape (the embedded digits at the experiment's size and channels; the tiny progressive
TFRecords of tests/conftest.py), with the experiment's own model, loss, regularizers and optimizers pinned; the
point is that every key the experiment sets is taken by what it builds, and that switching evaluation off leaves
nothing behind (``experiment=latent_study_digits evaluator=none`` once crashed: its evaluator keys reached
Lightning as a callback)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from gancollapse.paths import CONF_DIR
from gancollapse.train import run
from tests.conftest import aae_overrides, compose_cfg

EXPERIMENTS = sorted(str(p.relative_to(Path(CONF_DIR) / "experiment"))[:-5]
                     for p in (Path(CONF_DIR) / "experiment").rglob("*.yaml"))
OFF = ["evaluator=none", "++callbacks.observatory=null", "callbacks.progress_bar=null", "max_g_steps=2",
       "trainer.accelerator=cpu"]
# offline stand-ins for data sets a test cannot download, shaped as the experiment uses them
STAND_IN = {
    "mnist": ["dataset=digits", "dataset.img_size=28", "dataset.channels=1"],
    "cifar10": ["dataset=digits", "dataset.img_size=32", "dataset.channels=3", "~dataset.train_test"],
    "celeba": ["dataset=digits", "dataset.img_size=64", "dataset.channels=3"],
}


def _choices(experiment: str) -> dict[str, str]:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    return dict(cfg.hydra.runtime.choices)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_two_steps_without_evaluation(experiment, digits16, tmp_path):
    choices = _choices(experiment)
    dataset = choices["dataset"]
    if dataset == "progressive":  # MBRCE-AAE / ALAE: tiny TFRecords, narrow nets
        overrides = [o for o in aae_overrides(digits16, tmp_path, experiment) if not o.startswith("evaluator.")]
        overrides += ["model.module.image_size=null", "model.module.image_channels=null",  # follow the stand-in
                      "dataset.max_resolution=null"]
    else:
        pinned = [f"{g}={choices[g]}" for g in ("model", "optim") if not str(choices[g]).startswith("default/")]
        model = choices["model"].removeprefix("default/")
        overrides = [f"experiment={experiment}", *STAND_IN.get(dataset, []), f"model={model}" if
                     choices["model"].startswith("default/") and dataset in STAND_IN else "", *pinned]
        if dataset in ("mnist", "digits", "mnist5k") and "mnist" in model:
            overrides += ["model.generator.bridge=crop"]  # the reference's 51M-weight FC bridge: a GPU setting
    cfg = compose_cfg([o for o in overrides if o] + OFF, tiny=False)
    assert cfg.get("evaluator") in (None, {}) or "_target_" not in cfg.evaluator
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "finished" and summary["g_steps"] == 2
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert not saved.get("evaluator") and not (saved.get("callbacks") or {}).get("observatory")  # nothing left over
