"""No save can destroy a good checkpoint, nothing loaded can run code, one run per directory, and a resume
with a changed config is refused: failed restarts, corrupt files, pickle payloads, a second run, config drift."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml

import gancollapse
from gancollapse.losses import NonSaturatingLoss
from gancollapse.runio import CheckpointError, RunError, atomic_write

from .conftest import error_line
from .reliability_helpers import DIGITS, TOY_QUIET, Job, checkpoint, cli, wait_until

BASE = [*TOY_QUIET, "ckpt_every_n_steps=14"]
MARKER = "PAYLOAD_RAN"


class Payload:
    """Unpickling this runs ``os.system``: what a checkpoint from a stranger could hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RenamedLoss(NonSaturatingLoss):
    """A loss outside the allowed packages (a run with custom code)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 20-G-step toy run (saves at batches 7 and 14, then the final one: last and last-prev)."""
    run_dir = tmp_path_factory.mktemp("trained")
    code, out = cli([*BASE, "max_g_steps=20", f"hydra.run.dir={run_dir}"], run_dir.parent / "trained.log")
    assert code == 0, out[-3000:]
    return run_dir


def _copy(trained: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    return run_dir


def _files(run_dir: Path) -> dict[str, bytes | None]:
    """Every file of the run (checkpoints, summary, config, .hydra/, train.log, metrics) with its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("failure", ["corrupt last.ckpt", "net size changed", "dataset missing"])
def test_a_failed_restart_leaves_the_trained_run_intact(trained, tmp_path, failure):
    base = BASE
    if failure == "dataset missing":  # a digits run (to swap in an image set the same net fits)
        base = [*DIGITS, "ckpt_every_n_steps=6"]
        trained = tmp_path / "digits"
        code, out = cli([*base, "max_g_steps=4", f"hydra.run.dir={trained}"], tmp_path / "digits.log")
        assert code == 0, out[-3000:]
    run_dir = _copy(trained, tmp_path)
    args = [*base, "max_g_steps=30", f"hydra.run.dir={run_dir}"]
    last = run_dir / "checkpoints" / "last.ckpt"
    trained_steps = checkpoint(run_dir)["gancollapse"]["g_steps"]
    if failure == "corrupt last.ckpt":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a torn copy
        bad = args
    elif failure == "net size changed":
        bad = [*args, "model.generator.hidden=32", "resume=force"]  # fails while Lightning restores the weights
    else:
        bad = [*args, "dataset=mnist", f"dataset.root={tmp_path / 'nowhere'}", "resume=force"]
    def record() -> dict[str, bytes | None]:  # a failed attempt may add to the log and take the lock
        return {n: b for n, b in _files(run_dir).items() if n not in ("train.log", ".lock")}

    before = record()
    code, out = cli(bad, tmp_path / "failed.log")
    assert code != 0
    # no exception checkpoint, no summary, config or .hydra/ record of the failed attempt
    assert record() == before and any(n.startswith(".hydra/") for n in before)
    error = error_line(out)
    if failure == "corrupt last.ckpt":
        assert str(last) in error and "last-prev.ckpt" in error and "resume=false" in error
        return
    code, out = cli(args, tmp_path / "rerun.log")  # the trained run goes on from where it was
    assert code == 0, out[-3000:]
    assert f"Resuming from {last} (G step {trained_steps})" in out
    assert json.loads((run_dir / "summary.json").read_text())["g_steps"] == 30


def test_stale_temporaries_are_removed_and_saves_rotate_generations(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    stale = [run_dir / "checkpoints" / ".last.ckpt.tmp-99999-dead", run_dir / ".summary.json.tmp-99999-dead"]
    for path in stale:
        path.write_bytes(b"half a file")
    previous = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    code, out = cli([*BASE, "max_g_steps=21", f"hydra.run.dir={run_dir}"], tmp_path / "run.log")
    assert code == 0, out[-3000:]
    assert not any(p.exists() for p in stale)
    assert not [p for p in run_dir.rglob(".*tmp-*")]
    # the final save kept the checkpoint it replaced (the last save of the previous attempt) as last-prev
    assert (run_dir / "checkpoints" / "last-prev.ckpt").read_bytes() == previous
    assert checkpoint(run_dir)["gancollapse"]["g_steps"] == 21


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def half_then_crash(f):
        f.write(b"new, but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_second_run_on_a_directory_in_use_exits_at_once(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.stat().st_mtime_ns
    first = Job([*BASE, "max_g_steps=100000", f"hydra.run.dir={run_dir}"], tmp_path / "first.log")
    try:
        wait_until(lambda: last.stat().st_mtime_ns != before, job=first)  # training
        record = {n: b for n, b in _files(run_dir).items() if n.startswith(".hydra") or n == "train.log"}
        code, out = cli([*BASE, "max_g_steps=100000", f"hydra.run.dir={run_dir}"], tmp_path / "second.log", timeout=60)
        assert code != 0
        assert f"is in use by pid {first.pid}" in error_line(out)
        # the refused process rewrote none of the run's record (Hydra's .hydra/ files, the log)
        assert {n: b for n, b in _files(run_dir).items() if n in record} == record
    finally:
        first.send(signal.SIGTERM)
        assert first.wait() == 128 + signal.SIGTERM


def test_resuming_with_a_changed_config_is_refused_unless_forced(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    before = _files(run_dir)
    args = [*BASE, "max_g_steps=30", f"hydra.run.dir={run_dir}"]
    code, out = cli([*args, "loss=hinge", "n_critic=2"], tmp_path / "refused.log")
    assert code == 2
    error = error_line(out)
    assert "loss._target_" in error and "n_critic (1 → 2)" in error and "resume=force" in error
    assert _files(run_dir) == before and any(n.startswith(".hydra/") for n in before)  # .hydra/, train.log too
    # bookkeeping keys may change: the run length, the save interval, evaluation, logging
    code, out = cli([*args, "ckpt_every_n_steps=50", "log_every_n_steps=5"], tmp_path / "allowed.log")
    assert code == 0, out[-3000:]
    code, out = cli([*BASE, "max_g_steps=35", "loss=hinge", "resume=force", f"hydra.run.dir={run_dir}"],
                    tmp_path / "forced.log")
    assert code == 0, out[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["g_steps"] == 35


def test_a_pickle_payload_in_a_checkpoint_is_refused_and_never_runs(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    marker = tmp_path / MARKER
    state = checkpoint(run_dir)
    state["callbacks"]["extra"] = Payload(marker)
    torch.save(state, run_dir / "checkpoints" / "last.ckpt")
    torch.save(state, run_dir / "checkpoints" / "best.ckpt")
    code, out = cli([*BASE, "max_g_steps=30", f"hydra.run.dir={run_dir}"], tmp_path / "resume.log")
    assert code != 0 and "pickled Python object (posix.system)" in error_line(out)
    with pytest.raises(CheckpointError, match="posix.system"):
        gancollapse.load(run_dir)
    assert not marker.exists()


def test_loading_a_run_whose_config_names_other_code_needs_trust(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["loss"] = {"_target_": f"{__name__}.RenamedLoss"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(RunError, match=r"loss\._target_='tests\.test_reliability_files\.RenamedLoss'"):
        gancollapse.load(run_dir)
    assert isinstance(gancollapse.load(run_dir, trusted=True).module.objective, RenamedLoss)
    cfg["loss"] = {"_target_": "os.system", "_args_": [f"touch {tmp_path / MARKER}"]}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(RunError, match="os.system"):
        gancollapse.load(run_dir)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("size", [0, 100, 4096, 40_000])
def test_a_truncated_checkpoint_is_a_checkpoint_error_wherever_it_is_loaded(trained, tmp_path, size):
    """A checkpoint cut to a few KB (an interrupted copy) fails in torch's zip reader in several ways (a
    RuntimeError, or an OSError: EINVAL at some sizes); the sample CLI, a resume and gancollapse.load all give
    the one CheckpointError line that names the file."""
    run_dir = _copy(trained, tmp_path)
    for name in ("last.ckpt", "last-prev.ckpt"):
        path = run_dir / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:size])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        gancollapse.load(run_dir, which="last")
    if size != 4096:  # the command lines once, at one size: they print what load raises
        return
    last = run_dir / "checkpoints" / "last.ckpt"
    code, out = cli([str(run_dir), "sampler=prior", "n=10", "which=last"], tmp_path / "sample.log",
                    module="gancollapse.sample")
    assert code != 0 and str(last) in error_line(out)
    code, out = cli([*BASE, "max_g_steps=30", f"hydra.run.dir={run_dir}"], tmp_path / "resume.log")
    assert code != 0 and str(last) in error_line(out) and "resume=false" in error_line(out)


def _no_space_after(monkeypatch, saves: int) -> None:
    """torch.save fails as torch's zip writer does on a full device after ``saves`` good checkpoint saves."""
    import gancollapse.runio as runio

    real, calls = runio.torch.save, []

    def save(obj, f, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if isinstance(obj, dict) and "state_dict" in obj:
            calls.append(1)
            if len(calls) > saves:
                f.write(b"PK\x03\x04 a few bytes")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 73152 vs 73040")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(runio.torch, "save", save)


def test_disk_full_keeps_the_last_checkpoint_records_the_status_and_resumes(tmp_path, monkeypatch):
    from gancollapse.runio import DiskFullError
    from gancollapse.train import run

    from .conftest import compose_cfg

    run_dir = tmp_path / "run"
    cfg = compose_cfg(["evaluator=none", "max_g_steps=40", "ckpt_every_n_steps=20"])
    _no_space_after(monkeypatch, saves=2)  # saves at G steps 10 and 20 succeed; the one at 30 finds the disk full
    with pytest.raises(DiskFullError, match=r"no space left on the device of .*checkpoints while saving last.ckpt; "
                                            r"last.ckpt from G step 20 is kept") as caught:
        run(cfg, run_dir)
    assert str(caught.value.path.parent) in str(caught.value)
    assert checkpoint(run_dir)["gancollapse"]["g_steps"] == 20
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed: no space"
    assert not [p for p in run_dir.rglob(".*tmp-*")]
    monkeypatch.undo()  # space freed: the same command resumes from G step 20
    assert run(cfg, run_dir)["status"] == "finished"


def test_a_refused_fresh_start_leaves_no_directory(tmp_path):
    run_dir = tmp_path / "never"
    code, out = cli([*BASE, "max_g_steps=3", "regularizer=r1", "+regularizer.r1.gama=5", f"hydra.run.dir={run_dir}"],
                    tmp_path / "refused.log")
    assert code != 0 and "regularizer.r1.gama: R1 has no such key (did you mean gamma?)" in error_line(out)
    assert not run_dir.exists()


def test_disk_full_on_a_real_small_filesystem_is_one_line(tmp_path):
    """On a 600 KB tmpfs the third save of a tiny run does not fit (last, last-prev and the temporary)."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        run_dir = mnt / "run"
        code, out = cli([*BASE, "ckpt_every_n_steps=20", "max_g_steps=100", f"hydra.run.dir={run_dir}"],
                        tmp_path / "full.log", env={"HYDRA_FULL_ERROR": None})
        assert code != 0
        line = error_line(out)
        assert f"no space left on the device of {run_dir / 'checkpoints'}" in line and "is kept" in line
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed: no space"
        kept = checkpoint(run_dir)["gancollapse"]["g_steps"]
        assert f"G step {kept} is kept" in line
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
