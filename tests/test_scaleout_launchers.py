"""Real toy sweeps through Hydra's launcher plugins: submitit's local executor (the SLURM launcher's code path
without a cluster) and joblib, the seed-aggregating report on what they leave behind, and logger=wandb grouping
a sweep whose jobs run in separate processes."""

import json
import math

from gancollapse.report import write_report

from .conftest import REPO, run_cli
from .test_scaleout_wandb import offline_run

# Tiny nets and a short run: each job is a few seconds, the process start-up dominates.
TINY_SWEEP = ["max_g_steps=20", "model.generator.hidden=16", "model.discriminator.hidden=16", "dataset.n_samples=500",
              "dataset.batch_size=100", "callbacks.progress_bar=null", "evaluator.n_samples=500"]


def _board(md_path):
    """leaderboard.md's table as dicts keyed by its header."""
    table = [line for line in md_path.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in table[2:]]


def _summaries(sweep, n):
    out = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in range(n)]
    assert all(s["status"] == "finished" and s["g_steps"] == 20 for s in out), out
    return out


def test_submitit_local_runs_a_two_job_sweep_and_the_report_averages_its_seeds(tmp_path, monkeypatch):
    for var in ("WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: an upload attempt would fail
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *TINY_SWEEP,
                   "logger=wandb", "seed=0,1", f"hydra.sweep.dir={sweep}"], REPO, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    # submitit ran each job in its own process: its folder holds one job dir per job with a result pickle
    jobs = [d for d in (sweep / ".submitit").iterdir() if d.is_dir() and d.name != "%j"]
    assert len(jobs) == 2 and all(list(d.glob("*_result.pkl")) for d in jobs)
    summaries = _summaries(sweep, 2)
    assert [s["seed"] for s in summaries] == [0, 1]
    board = _board(write_report(sweep))
    assert len(board) == 1  # two seeds of one configuration
    row = board[0]
    assert row["n"] == "2" and row["seed"] == "0,1"
    mean = (summaries[0]["wall_seconds"] + summaries[1]["wall_seconds"]) / 2
    std = abs(summaries[0]["wall_seconds"] - summaries[1]["wall_seconds"]) / math.sqrt(2)
    assert row["wall s"] == f"{mean:.1f} ± {std:.1f}"
    # W&B, offline: the two jobs (two processes) are two runs of one group, named by their overrides
    runs = [offline_run(sweep / str(i)) for i in range(2)]
    assert runs[0]["group"] == runs[1]["group"] == f"train/{sweep}"
    assert runs[0]["id"] != runs[1]["id"]
    assert [r["name"].split(",")[-1] for r in runs] == ["seed=0", "seed=1"]
    assert [r["config"]["seed"] for r in runs] == ["0", "1"] and runs[0]["config"]["max_g_steps"] == "20"
    assert all(any(m.endswith(".gif") for m in r["media"]) for r in runs)


def test_joblib_runs_a_two_by_two_sweep_in_parallel(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_SWEEP, "loss=standard,hinge",
                   "seed=0,1", f"hydra.sweep.dir={sweep}"], REPO, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in res.stderr + res.stdout
    summaries = _summaries(sweep, 4)
    assert sorted((s["loss"], s["seed"]) for s in summaries) == [("hinge", 0), ("hinge", 1), ("standard", 0),
                                                                 ("standard", 1)]
    board = _board(write_report(sweep))
    assert sorted((r["overrides"], r["n"], r["seed"]) for r in board) == [("loss=hinge", "2", "0,1"),
                                                                          ("loss=standard", "2", "0,1")]
    for r in board:
        g = [s for s in summaries if f"loss={s['loss']}" == r["overrides"]]
        assert r["G steps"] == "20"  # equal in every seed: shown as it is
        assert r["wall s"].startswith(f"{(g[0]['wall_seconds'] + g[1]['wall_seconds']) / 2:.1f} ± ")

