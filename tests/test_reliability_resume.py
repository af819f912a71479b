"""Exact resume: runs killed with kill -9 at random points, or stopped by SIGTERM / Ctrl-C, and rerun end
bit-identical to an uninterrupted run of the same length (weights, optimizer states, MaEM buffers, RNG states,
loop counters, metrics.csv), for the toy and the digits, with and without MaEM."""

from __future__ import annotations

import json
import random
import shutil
import signal
import time

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from gancollapse.data.order import SeededBatchSampler, seeded_loader
from gancollapse.runio import AtomicCheckpointIO, rng_state, set_rng_state
from gancollapse.train import run

from .conftest import compose_cfg
from .reliability_helpers import (
    DIGITS,
    TOY,
    TOY_QUIET,
    Job,
    checkpoint,
    cli,
    differences,
    metric_rows,
    mtime,
    wait_until,
)

# ckpt_every_n_steps counts D and G steps (2 per batch): saves every 7 toy batches (mid-epoch and, every 10th,
# deferred to an epoch end) and every 3 digits batches. metrics.csv is flushed at every log call, so rows logged
# after the last save are on disk when the kill comes (as after a long interval between saves).
FLUSH = "+logger.csv.flush_every_s=0"
CONFIGS = {
    "toy": [*TOY, FLUSH, "max_g_steps=200", "ckpt_every_n_steps=14"],
    "toy-maem": [*TOY, FLUSH, "regularizer=maem", "max_g_steps=200", "ckpt_every_n_steps=14"],
    "digits": [*DIGITS, FLUSH, "max_g_steps=32", "ckpt_every_n_steps=6"],
    "digits-maem": [*DIGITS, FLUSH, "regularizer=maem", "max_g_steps=32", "ckpt_every_n_steps=6"],
}
LENGTH = {"toy": 200, "toy-maem": 200, "digits": 32, "digits-maem": 32}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of each config (made once per module)."""
    runs = {}

    def get(name: str):
        if name not in runs:
            run_dir = tmp_path_factory.mktemp(f"reference-{name}")
            code, out = cli([*CONFIGS[name], f"hydra.run.dir={run_dir}"], run_dir.parent / f"{run_dir.name}.log")
            assert code == 0, out[-3000:]
            runs[name] = run_dir
        return runs[name]

    return get


def _assert_same_run(run_dir, ref_dir):
    assert differences(checkpoint(ref_dir), checkpoint(run_dir)) == []
    rows = metric_rows(run_dir)
    assert rows == metric_rows(ref_dir)
    logged = [(r["step"], r.get("train/d_loss")) for r in rows if r.get("train/d_loss")]
    assert len(logged) == len({s for s, _ in logged})  # no step logged twice


@pytest.mark.parametrize("name", list(CONFIGS))
def test_kill_9_at_random_points_then_rerun_is_bit_identical(name, reference, tmp_path):
    rng = random.Random(f"kill -9 {name}")
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = [*CONFIGS[name], f"hydra.run.dir={run_dir}"]
    for attempt in range(2):
        before = mtime(last)
        job = Job(args, tmp_path / f"attempt{attempt}.log")
        wait_until(lambda b=before: mtime(last) != b, job=job)  # trained and saved beyond the restored state
        time.sleep(rng.uniform(0.0, 0.3))  # anywhere: in a step, in a save, in a log flush
        job.send(signal.SIGKILL)
        assert job.wait() == -signal.SIGKILL
        assert checkpoint(run_dir)["gancollapse"]["g_steps"] < LENGTH[name]  # killed before the end
    code, out = cli(args, tmp_path / "final.log")
    assert code == 0, out[-3000:]
    assert "Resuming from" in out
    _assert_same_run(run_dir, reference(name))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stop_signal_stops_at_a_step_boundary_saves_and_rerun_is_bit_identical(sig, reference, tmp_path):
    rng = random.Random(f"stop {sig}")
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = [*CONFIGS["toy"], f"hydra.run.dir={run_dir}"]
    job = Job(args, tmp_path / "stopped.log")
    wait_until(lambda: last.is_file(), job=job)
    time.sleep(rng.uniform(0.0, 0.3))
    job.send(sig)
    assert job.wait() == 128 + sig, job.output()[-3000:]
    out = job.output()
    assert f"Rerun with hydra.run.dir={run_dir} to resume" in out and "nonfinite_skips=0" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == f"interrupted: {signal.Signals(sig).name}"
    steps = checkpoint(run_dir)["gancollapse"]["steps"]
    # n_critic=1: every batch updates D then G; a stop inside a batch would leave d = g + 1
    assert steps["d"] == steps["g"] == summary["g_steps"] < LENGTH["toy"]
    code, out = cli(args, tmp_path / "final.log")
    assert code == 0, out[-3000:]
    _assert_same_run(run_dir, reference("toy"))


def test_periodic_and_time_based_saves_keep_two_generations(tmp_path):
    run_dir = tmp_path / "run"
    # no step-based save within the run; a save every 50 ms of training instead
    code, out = cli([*TOY_QUIET, "max_g_steps=60", "ckpt_every_n_steps=100000",
                     "ckpt_every_minutes=0.0008", f"hydra.run.dir={run_dir}"], tmp_path / "run.log")
    assert code == 0, out[-3000:]
    last, prev = checkpoint(run_dir), checkpoint(run_dir, "last-prev.ckpt")
    assert last["gancollapse"]["g_steps"] == 60
    assert 0 < prev["gancollapse"]["g_steps"] < 60  # the time-based save before the final one
    assert not list((run_dir / "checkpoints").glob(".*"))  # no temporaries left


def test_batch_order_is_a_function_of_seed_and_epoch_and_resumes_mid_epoch():
    data = TensorDataset(torch.arange(100))

    def epoch(loader, e):
        loader.sampler.set_epoch(e)
        return [b[0].tolist() for b in loader]

    a, b = seeded_loader(data, 10, seed=3), seeded_loader(data, 10, seed=3)
    torch.manual_seed(0)
    first = epoch(a, 0)
    torch.manual_seed(1)  # the global RNG does not matter
    assert epoch(b, 0) == first and epoch(a, 1) != first
    assert sorted(sum(first, [])) == list(range(100))
    # a loader restored 4 batches into epoch 1 yields the rest of that epoch
    full = epoch(a, 1)
    resumed = seeded_loader(data, 10, seed=3)
    resumed.load_state_dict({"epoch": 1, "batches": 4})
    resumed.sampler.set_epoch(1)  # Lightning's call at the epoch start keeps the restored position
    assert [x[0].tolist() for x in resumed] == full[4:]
    it = iter(resumed)
    next(it), next(it)
    assert resumed.state_dict() == {"epoch": 1, "batches": 2}
    # ranks take disjoint slices of the same permutation
    ranks = [SeededBatchSampler(100, 10, seed=3, rank=r, world_size=2) for r in (0, 1)]
    seen = [i for s in ranks for batch in s for i in batch]
    assert sorted(seen) == list(range(100)) and len(ranks[0]) == 5


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    torch.save({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(7), np.random.rand(7), random.random()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and (expected[1] == again[1]).all() and expected[2] == again[2]


@pytest.mark.slow  # 25 in-process resumes
def test_resuming_from_every_checkpoint_is_exact(tmp_path, monkeypatch):
    """A save at every batch (mid-epoch, at epoch ends, at the last step), MaEM buffers and a per-epoch LR
    scheduler: resuming from any one of them gives the uninterrupted run's final checkpoint and metrics."""
    over = [*TOY_QUIET, "regularizer=maem", "max_g_steps=25", "ckpt_every_n_steps=2",
            "+optim.scheduler._target_=torch.optim.lr_scheduler.StepLR", "+optim.scheduler._partial_=true",
            "+optim.scheduler.step_size=1", "+optim.scheduler.gamma=0.5"]
    saves = []
    original = AtomicCheckpointIO.save_checkpoint

    def keep(self, checkpoint, path, storage_options=None):
        original(self, checkpoint, path, storage_options)
        saves.append(shutil.copy(path, tmp_path / f"save{len(saves):03d}.ckpt"))

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", keep)
    ref = tmp_path / "reference"
    run(compose_cfg(over, tiny=False), ref)
    monkeypatch.undo()
    assert len(saves) == 25 and checkpoint(ref)["lr_schedulers"][0]["last_epoch"] == 3
    for save in saves[:-1]:  # the last one is the final save itself
        run_dir = tmp_path / f"from-{len(list(tmp_path.glob('from-*'))):03d}"
        (run_dir / "checkpoints").mkdir(parents=True)
        shutil.copy(save, run_dir / "checkpoints" / "last.ckpt")
        for name in ("config.yaml", "metrics.csv"):
            shutil.copy(ref / name, run_dir / name)
        run(compose_cfg(over, tiny=False), run_dir)
        assert differences(checkpoint(ref), checkpoint(run_dir)) == [], save
        assert metric_rows(run_dir) == metric_rows(ref), save
