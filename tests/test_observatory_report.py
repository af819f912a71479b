"""The collapse-study sweep report on hand-made run directories with known numbers."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from gancollapse.metrics.collapse_report import aggregate, load_run, write_report


def _run(root, name, module, z, seed, is_, classes, eig, nudge=None):
    d = root / name
    d.mkdir(parents=True)
    cfg = {"z_dim": z, "seed": seed, "model": {"module": {"_target_": module, **({"nudge": nudge} if nudge else {})}}}
    OmegaConf.save(OmegaConf.create(cfg), d / "config.yaml")
    (d / "summary.json").write_text(json.dumps({"is": is_, "observatory/classes_covered": classes,
                                                "observatory/g_eig0": eig[-1]}))
    lines = ["step,observatory/g_eig0,observatory/g_step,train/g_loss"]
    for i, e in enumerate(eig):
        lines += [f"{10 * i + 5},,,0.5", f"{10 * i + 10},{e},{10 * i + 10},"]
    (d / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_collapse_report_groups_by_model_and_latent(tmp_path):
    gan, dist = "gancollapse.models.gan.GANModule", "gancollapse.models.distgan.DistGANModule"
    _run(tmp_path, "0", gan, 1, 0, 2.0, 3, [10.0, 100.0])
    _run(tmp_path, "1", gan, 1, 1, 4.0, 5, [10.0, 300.0])
    _run(tmp_path, "2", dist, 1, 0, 6.0, 9, [5.0, 6.0])
    _run(tmp_path, "3", dist, 1, 0, 7.0, 10, [5.0, 7.0], nudge={"k": 5})
    _run(tmp_path, "4", dist, 10, 0, 8.0, 10, [1.0, 2.0])
    row = load_run(tmp_path / "3")
    assert row["model"] == "nugan_distgan" and row["z_dim"] == 1
    assert row["curves"]["observatory/g_eig0"] == [(10.0, 5.0), (20.0, 7.0)]
    table = aggregate([load_run(tmp_path / str(i)) for i in range(5)])
    assert [(e["model"], e["z_dim"], e["seeds"]) for e in table] == [
        ("gan", 1, 2), ("distgan", 1, 1), ("nugan_distgan", 1, 1), ("distgan", 10, 1)]
    mean, std = table[0]["is"]
    assert mean == 3.0 and std == pytest.approx(2 ** 0.5)
    assert table[0]["observatory/g_eig0"][0] == 200.0
    md = write_report(tmp_path)
    text = md.read_text()
    assert "| gan | 1 | 2 | 3.00 ± 1.41 | 4.00 ± 1.41 |" in text
    assert (tmp_path / "collapse_eigenvalues.png").stat().st_size > 10_000
    assert (tmp_path / "collapse_report.csv").is_file()
