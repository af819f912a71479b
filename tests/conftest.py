"""Shared test helpers: compose the real Hydra config tree with small, fast overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from gancollapse.data.images import DigitsDataModule
from gancollapse.data.tfrecord import split_indices, write_tfrecords
from gancollapse.train import CONF_DIR

torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
# Small nets so a few hundred steps take seconds on one core.
TINY = [
    "model.generator.hidden=64",
    "model.discriminator.hidden=64",
    "dataset.n_samples=2000",
    "dataset.batch_size=200",
    "callbacks.progress_bar=null",
    "log_every_n_steps=10",
]


def compose_cfg(overrides: list[str] | None = None, tiny: bool = True):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=(TINY if tiny else []) + list(overrides or []))


def run_cli(args: list[str], cwd: Path, timeout: int = 300, module: str = "gancollapse.train") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


# ---------------------------------------------------------------------------- MBRCE-AAE / ALAE on tiny TFRecords
N_IMAGES, N_TEST, BATCH = 160, 32, 32  # 128 training images: 4 batches per epoch


@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    """160 scikit-learn digits at 16 px (lods 0–2) in the progressive TFRecord layout, 32 held out."""
    out = tmp_path_factory.mktemp("tfr")
    data = DigitsDataModule(img_size=16, channels=1).load()
    images, labels = data.images[:N_IMAGES], data.labels[:N_IMAGES]
    write_tfrecords([(images, labels)], out, "tiny", min_resolution=4, parts=1,
                    test_indices=split_indices(N_IMAGES, N_TEST, 0), split_seed=0, extra_meta={"num_classes": 10})
    return out


def aae_overrides(data, cache, experiment: str = "mbrce_aae_digits", epochs=(1, 1, 2)) -> list[str]:
    """A tiny MBRCE-AAE / ALAE run on :func:`digits16` (16 px, lods 0–2, 4 batches per epoch)."""
    return [
        f"experiment={experiment}", f"dataset.path={data}", "dataset.tfrecord_name=tiny", "dataset.prepare=null",
        "z_dim=8", "model.module.mapping_layers=2", "model.module.channels=[16,8,8]",
        f"model.module.epochs_per_lod=[{','.join(map(str, epochs))}]", f"model.module.batch_sizes={BATCH}",
        f"trainer.max_epochs={sum(epochs)}", "callbacks.progress_bar=null", "log_every_n_steps=2",
        "ckpt_every_n_steps=1000", f"evaluator.cache_dir={cache}", "evaluator.n_samples=64", "evaluator.n_real=128",
        "evaluator.metrics.prdc.n=64", "evaluator.metrics.kid.subset_size=32", "evaluator.metrics.kid.subsets=5", "evaluator.batch_size=64",
        "evaluator.grid_size=16", "evaluator.classifier_epochs=1",
    ]
