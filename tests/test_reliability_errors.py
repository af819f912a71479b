"""Known failures end in one line, ``error: <what> — <fix>``, without a traceback (HYDRA_FULL_ERROR=1: with
one); a diverged run says so; the sweep report lists runs that were killed, failed or are still running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from gancollapse.report import write_report
from gancollapse.runio import RunLock

from .conftest import REPO, compose_cfg, error_line, nan_loss
from .reliability_helpers import TOY_QUIET, cli

QUICK = ["callbacks.progress_bar=null", "evaluator=none", "max_g_steps=2"]
NO_NETWORK = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def _bad_input(case: str, tmp: Path) -> tuple[list[str], str, dict]:
    """(command-line args, module, extra env) of a known failure."""
    run = f"hydra.run.dir={tmp / 'run'}"
    if case == "run dir under a file":
        (tmp / "a_file").write_text("")
        return [*QUICK, f"hydra.run.dir={tmp / 'a_file' / 'run'}"], "gancollapse.train", {}
    if case == "checkpoints dir is a file":
        (tmp / "run").mkdir()
        (tmp / "run" / "checkpoints").write_text("")
        return [*TOY_QUIET, "max_g_steps=2", run], "gancollapse.train", {}
    if case == "download without network":
        return [*QUICK, "dataset=mnist", "dataset.download=true", f"dataset.root={tmp / 'data'}", run], "gancollapse.train", NO_NETWORK
    if case == "missing dataset":
        return [*QUICK, "dataset=mnist", f"dataset.root={tmp / 'data'}", run], "gancollapse.train", {}
    if case == "image_folder defaults":
        (tmp / "images").mkdir()
        Image.new("RGB", (80, 80)).save(tmp / "images" / "a.png")
        return [*QUICK, "dataset=image_folder", f"dataset.path={tmp / 'images'}", run], "gancollapse.train", {}
    if case == "sampler without checkpoint":
        (tmp / "run").mkdir()
        OmegaConf.save(compose_cfg(["max_g_steps=2"]), tmp / "run" / "config.yaml", resolve=True)
        return [str(tmp / "run"), "sampler=prior", "n=10"], "gancollapse.sample", {}
    raise ValueError(case)


@pytest.mark.parametrize("case,expected", [
    ("run dir under a file", "cannot write to"),
    ("checkpoints dir is a file", "checkpoints (File exists)"),
    ("download without network", "put MNIST/raw/ (train-images-idx3-ubyte.gz"),
    ("missing dataset", "mnist not found under"),
    ("image_folder defaults", "dataset.img_size=64 but model=dcgan32"),
    ("sampler without checkpoint", "has no checkpoint to sample"),
])
def test_known_failures_print_one_line_without_a_traceback(tmp_path, case, expected):
    args, module, env = _bad_input(case, tmp_path)
    code, out = cli(args, tmp_path / "out.log", module=module, env=env)
    assert code != 0
    assert expected in error_line(out)


def test_hydra_full_error_shows_the_traceback(tmp_path):
    args, module, _ = _bad_input("missing dataset", tmp_path)
    code, out = cli(args, tmp_path / "out.log", env={"HYDRA_FULL_ERROR": "1"})
    assert code != 0 and "Traceback" in out and "mnist not found under" in out


@pytest.mark.slow  # one more interpreter start (~10-30 s of imports)
def test_the_installed_command_prints_the_one_line_form(tmp_path):
    """The real ``python -m gancollapse.train`` (not a forked copy): one line on stderr, exit status 1."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    res = subprocess.run([sys.executable, "-m", "gancollapse.train", *QUICK, "dataset=mnist",
                          f"dataset.root={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=REPO, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith("error: mnist not found under"), res.stderr[-3000:]
    assert "Traceback" not in res.stderr


# Finite for the first 7 D steps, then NaN for both nets (a run that blew up).
NaNAfter = nan_loss(lambda n: n > 7, generator_too=True)
# Every other D step is NaN: many skips, never two in a row.
NaNEveryOther = nan_loss(lambda n: n % 2 == 0)


def test_skips_that_are_not_consecutive_do_not_stop_the_run(tmp_path):
    code, out = cli([*TOY_QUIET, "max_g_steps=40", "log_every_n_steps=5", "max_consecutive_skips=2",
                     f"loss._target_={__name__}.NaNEveryOther", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path / "out.log")
    assert code == 0, out[-3000:]
    assert "finished: g_steps=40, nonfinite_skips=20" in out


def test_a_diverged_run_stops_says_so_and_records_it(tmp_path):
    run_dir = tmp_path / "run"
    code, out = cli([*TOY_QUIET, "max_g_steps=500", "log_every_n_steps=5", "max_consecutive_skips=20",
                     f"loss._target_={__name__}.NaNAfter", f"hydra.run.dir={run_dir}"], tmp_path / "out.log")
    assert code == 3
    error = error_line(out)
    assert "the run diverged: 23 consecutive optimizer steps of phase 'd'" in error
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    # NaN from batch 8 on; 20 in a row at batch 27; checked every 5 batches: stopped at batch 30
    assert summary["g_steps"] == 30 and summary["nonfinite_skips"] == 2 * (30 - 7)
    assert f"nonfinite_skips={summary['nonfinite_skips']}" in error
    assert f"diverged: g_steps=30, nonfinite_skips={summary['nonfinite_skips']}" in out
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())  # skipped steps left the last finite weights


def _fake_run(root: Path, name: str, n_critic: int, summary: dict | None = None, checkpoint: bool = False,
              hydra_only: bool = False) -> Path:
    run_dir = root / name
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = compose_cfg([f"n_critic={n_critic}"])
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    choices = {"dataset": "ring", "model": "default/ring", "loss": "non_saturating", "hydra/launcher": "basic"}
    OmegaConf.save({"hydra": {"runtime": {"choices": choices}}}, run_dir / ".hydra" / "hydra.yaml")
    if not hydra_only:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        (run_dir / "metrics.csv").write_text("step\n")
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_the_report_lists_killed_failed_and_running_runs_with_their_status(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_run(sweep, "0", 1, {"status": "finished", "g_steps": 100, "toy/modes": 8.0, "toy/hq_fraction": 0.9})
    _fake_run(sweep, "1", 2, checkpoint=True)  # kill -9: no summary, a checkpoint
    _fake_run(sweep, "2", 3, {"status": "failed: mnist not found under /x — download it"})
    _fake_run(sweep, "3", 4, hydra_only=True)  # died before train.run wrote anything
    _fake_run(sweep, "4", 5, {"status": "interrupted: SIGTERM", "g_steps": 40})
    running = _fake_run(sweep, "5", 6)
    with RunLock(running):
        md = write_report(sweep).read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "run |" not in line}
    assert sorted(rows) == ["0", "1", "2", "3", "4", "5"]
    assert "finished" in rows["0"] and "killed (no summary; rerun to resume)" in rows["1"]
    assert "failed: mnist not found" in rows["2"] and "failed (no summary, no checkpoint)" in rows["3"]
    assert "interrupted: SIGTERM" in rows["4"] and f"running (pid {os.getpid()})" in rows["5"]
    assert "non_saturating" in rows["3"]  # identity from Hydra's config when train.run wrote none
