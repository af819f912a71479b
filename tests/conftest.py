"""Shared test helpers: compose the real Hydra config tree with small, fast overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

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
