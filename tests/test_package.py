"""The built wheel is the whole platform: it holds the config tree (conf/ ships inside the package), and
training from it works from any directory, away from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: the build backend is the venv's (no index needed); --no-deps: the platform only
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, timeout=600)
    (found,) = out.glob("gancollapse-*.whl")
    return found


def test_wheel_holds_the_config_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = REPO / "src" / "gancollapse" / "conf"
    assert "gancollapse/conf/train.yaml" in names
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir())
    assert {"dataset", "model", "loss", "regularizer", "prior", "sampler", "optim", "evaluator", "trainer",
            "experiment", "method"} <= set(groups)
    shipped = {str(p.relative_to(conf.parent.parent)) for p in conf.rglob("*.yaml")}
    assert shipped <= names, sorted(shipped - names)[:5]  # every yaml of every group, nested ones included


def test_unpacked_wheel_trains_from_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    where = subprocess.run([sys.executable, "-c", "import gancollapse.paths as p; print(p.CONF_DIR)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where) == site / "gancollapse" / "conf"  # the wheel's copy, not the checkout's
    done = subprocess.run([sys.executable, "-m", "gancollapse.train", "max_g_steps=5", "evaluator=none",
                           "callbacks.progress_bar=null", "model.generator.hidden=16", "model.discriminator.hidden=16",
                           "dataset.n_samples=400", "dataset.batch_size=100", "hydra.run.dir=run"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "run" / "summary.json").is_file() and "finished: g_steps=5" in done.stdout
