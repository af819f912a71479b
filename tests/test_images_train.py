"""End-to-end image runs on the embedded digits set: FID in summary.json, best.ckpt on the best FID, load."""

from __future__ import annotations

import json
import math

import pytest
import torch

import gancollapse
from gancollapse.metrics.image_callback import ImageEvaluator
from gancollapse.train import run
from tests.conftest import TINY_DCGAN, compose_cfg, metric_values

IMG = ["dataset=digits", *TINY_DCGAN, "z_dim=16", "dataset.batch_size=32", "log_every_n_steps=5"]


def _cfg(tmp_path, extra):
    return compose_cfg(IMG + [f"evaluator.cache_dir={tmp_path / 'cache'}", "evaluator.n_samples=200",
                              "evaluator.metrics.kid.subset_size=100", "evaluator.metrics.prdc.n=200",
                              "evaluator.grid_size=16"] + extra, tiny=False)


def test_digits_dcgan_run_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    cfg = _cfg(tmp_path, ["max_g_steps=30", "evaluator.every_n_steps=15", "logger=csv"])
    summary = run(cfg, run_dir)
    assert summary["g_steps"] == 30
    for key in ("fid", "kid", "precision", "recall", "density", "coverage", "best/fid"):
        assert isinstance(summary.get(key), float) and math.isfinite(summary[key]), key
    assert summary["fid"] > 0 and summary["best/fid"] > 0 and summary["density"] >= 0
    for key in ("precision", "recall", "coverage"):
        assert 0.0 <= summary[key] <= 1.0, key
    # both evaluations (G steps 15 and 30) reach metrics.csv; best/fid is the lower one, at its step
    fids = metric_values(run_dir, "fid")
    assert len(fids) == 2 and summary["fid"] == pytest.approx(fids[-1])
    assert summary["best/fid"] == pytest.approx(min(fids))
    assert summary["best/fid_step"] == (15, 30)[fids.index(min(fids))]
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["best/fid"] == pytest.approx(summary["best/fid"])
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == ["final.png", "step_000015.png", "step_000030.png"]
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert not any("inception" in k or "convs" in k for k in ckpt["state_dict"])  # extractor not in checkpoints
    from gancollapse.report import write_report

    board = write_report(run_dir)
    table = [line for line in board.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    row = [c.strip() for c in table[2].strip("|").split("|")]
    assert len(table) == 3 and "FID" in header  # header, rule, this run
    assert row[header.index("FID")] == f"{summary['fid']:.2f}"
    assert row[header.index("best FID")] == f"{summary['best/fid']:.2f}"
    handle = gancollapse.load(run_dir)
    assert handle.checkpoint.name == "best.ckpt"
    x = handle.sample(6, seed=0)
    assert x.shape == (6, 1, 32, 32) and x.abs().max() <= 1


def test_best_fid_checkpoint_holds_the_best_step(tmp_path, monkeypatch):
    """Logged FIDs 5, 1, 3, 4 at G steps 4, 8, 12, 16 → best.ckpt is the step-8 state, summary says so."""
    scripted = {4: 5.0, 8: 1.0, 12: 3.0, 16: 4.0}
    monkeypatch.setattr(ImageEvaluator, "compute", lambda self, pl_module: {"fid": scripted[pl_module.g_steps]})
    run_dir = tmp_path / "run"
    # dataset.on_device also exercises the DeviceBatches path under the Lightning loop
    summary = run(_cfg(tmp_path, ["max_g_steps=16", "evaluator.every_n_steps=4", "logger=none",
                                  "dataset.on_device=true"]), run_dir)
    assert summary["fid"] == 4.0 and summary["best/fid"] == 1.0 and summary["best/fid_step"] == 8
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert best["gancollapse"]["g_steps"] == 8
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["gancollapse"]["g_steps"] == 16
    assert gancollapse.load(run_dir).module.g_steps == 8
