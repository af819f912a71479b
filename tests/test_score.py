"""``python -m gancollapse.score``: other programs' samples on this platform's metric code, under a paper's
protocol (2D points) or against a dataset's real statistics (images)."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from gancollapse.data.digits import DigitsDataModule
from gancollapse.runio import RunError
from gancollapse.score import cli, main, protocols, score_file

RING = np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], 1)  # PacGAN's 8 means


def test_every_repro_file_is_a_protocol():
    assert {"gdpp_ring", "gdpp_grid", "veegan_ring", "veegan_grid", "pacgan_ring", "pacgan_grid"} <= set(protocols())


def test_points_at_the_eight_ring_means_score_eight_modes_all_hq_kl_zero(tmp_path):
    path = tmp_path / "means.npy"
    counts = [313] * 7 + [309]
    np.save(path, np.concatenate([np.repeat(RING, counts, axis=0), RING[:3]]))  # 2,503: the first 2,500 count
    r = score_file(path, protocol="pacgan_ring")
    assert (r["toy/modes"], r["toy/n_modes"], r["toy/hq_fraction"], r["toy/n_scored"]) == (8, 8, 1.0, 2500)
    p = np.asarray(counts) / 2500
    assert r["toy/reverse_kl"] == pytest.approx(math.log(8) + float((p * np.log(p)).sum()), abs=1e-12)
    assert "PacGAN" in r["paper"] and "Table 1" in r["table"]
    even = tmp_path / "even.npy"
    np.save(even, RING)
    assert score_file(even, protocol="pacgan_ring", n=8)["toy/reverse_kl"] == pytest.approx(0.0, abs=1e-12)


def test_all_points_at_one_mean_is_one_mode_and_kl_log_k(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, samples=np.tile([[2.0, -4.0]], (2500, 1)))
    r = score_file(path, protocol="pacgan_grid")
    assert (r["toy/modes"], r["toy/hq_fraction"]) == (1, 1.0)
    assert r["toy/reverse_kl"] == pytest.approx(math.log(25))


def test_the_protocol_decides_layout_and_rules(tmp_path):
    """The same points under three protocols: one stray sample is a mode under the papers' rule (PacGAN) but not
    under the platform's 0.8% (dataset=ring); GDPP's means sit at other angles (from (0, 1), every 2π/7), so
    points on PacGAN's means are not high quality there."""
    path = tmp_path / "pac.npy"
    np.save(path, np.concatenate([np.repeat(RING[:1], 2499, 0), RING[1:2]]))
    assert score_file(path, protocol="pacgan_ring")["toy/modes"] == 2
    assert score_file(path, dataset="ring", n=2500)["toy/modes"] == 1
    gdpp = score_file(path, protocol="gdpp_ring")
    assert (gdpp["toy/modes"], gdpp["toy/hq_fraction"]) == (0, 0.0) and math.isnan(gdpp["toy/reverse_kl"])


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.npy").write_text("not an array")
    with pytest.raises(RunError, match="could not be read"):
        score_file(tmp_path / "bad.npy", protocol="veegan_ring")
    with pytest.raises(RunError, match="no such protocol"):
        score_file(tmp_path / "bad.npy", protocol="nope")
    np.save(tmp_path / "few.npy", RING)
    with pytest.raises(RunError, match="pass --n 8"):
        score_file(tmp_path / "few.npy", protocol="gdpp_ring")
    np.savez(tmp_path / "two.npz", a=RING, b=RING)
    with pytest.raises(RunError, match="choose one with --key"):
        score_file(tmp_path / "two.npz", protocol="gdpp_ring", n=8)
    assert score_file(tmp_path / "two.npz", protocol="gdpp_ring", n=8, key="b")["toy/n_scored"] == 8
    np.save(tmp_path / "nan.npy", np.full((2500, 2), np.nan))
    with pytest.raises(RunError, match="NaN"):
        score_file(tmp_path / "nan.npy", protocol="gdpp_ring")
    np.save(tmp_path / "cube.npy", np.zeros((4, 5, 5, 5)))
    with pytest.raises(RunError, match="neither"):
        score_file(tmp_path / "cube.npy", dataset="digits")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["gancollapse.score", str(tmp_path / "bad.npy"), "--protocol", "veegan_ring"])
    with pytest.raises(SystemExit) as stop:
        cli()
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1


def test_cli_writes_json_and_reads_sample_pt(tmp_path):
    torch.save({"x": torch.from_numpy(RING).float(), "z": torch.zeros(8, 2)}, tmp_path / "samples.pt")
    out = tmp_path / "m.json"
    main([str(tmp_path / "samples.pt"), "--protocol", "veegan_ring", "--n", "8", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["toy/modes"] == 8 and saved["protocol"] == "veegan_ring"


def _digits(n: int, seed: int) -> np.ndarray:
    dm = DigitsDataModule(img_size=32, channels=1, seed=0)
    dm.setup("fit")
    images, _ = dm.sample_uint8(n, seed=seed)
    return images.permute(0, 2, 3, 1).numpy()  # NHWC, as image files store them


def test_images_fid_of_real_digits_is_far_below_noise(tmp_path):
    over = [f"evaluator.cache_dir={tmp_path / 'cache'}", "evaluator.metrics.kid.subsets=10", "evaluator.metrics.kid.subset_size=100"]
    np.savez(tmp_path / "real.npz", x=_digits(400, seed=7))
    noise = np.random.default_rng(0).integers(0, 256, size=(400, 32, 32, 1), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", x=noise)
    real = score_file(tmp_path / "real.npz", dataset="digits", overrides=over, device="cpu")
    bad = score_file(tmp_path / "noise.npz", dataset="digits", overrides=over, device="cpu")
    assert real["eval/n_scored"] == 400 and {"eval/fid", "eval/kid", "eval/precision"} <= set(real)
    assert real["eval/fid"] < 0.1 * bad["eval/fid"] and real["eval/kid"] < bad["eval/kid"]
    with pytest.raises(RunError, match=r"dataset.img_size=16"):
        np.save(tmp_path / "small.npy", np.zeros((10, 16, 16), dtype=np.uint8))
        score_file(tmp_path / "small.npy", dataset="digits", overrides=over, device="cpu")


def test_images_from_a_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(_digits(12, seed=3)):
        Image.fromarray(img[..., 0]).save(folder / f"{i:03d}.png")
    r = score_file(folder, dataset="digits", overrides=[f"evaluator.cache_dir={tmp_path / 'cache'}",
                                                      "evaluator.metrics.kid.subset_size=10", "evaluator.metrics.kid.subsets=5"],
                   device="cpu")
    assert r["eval/n_scored"] == 12 and math.isfinite(r["eval/fid"])


def test_stacked_images_get_modes_one_repeated_image_is_one_mode(tmp_path):
    from gancollapse.data.stacked import StackedDigitsDataModule

    dm = StackedDigitsDataModule(img_size=16, n_samples=200)
    dm.setup()
    images, _ = dm.sample_uint8(1, seed=0)
    np.save(tmp_path / "same.npy", images.expand(300, -1, -1, -1).numpy())  # NCHW uint8
    over = ["dataset.img_size=16", "dataset.n_samples=2000", f"evaluator.cache_dir={tmp_path / 'cache'}",
            "evaluator.n_real=500", "evaluator.classifier_epochs=5"]
    r = score_file(tmp_path / "same.npy", dataset="stacked_digits", overrides=over, device="cpu")
    assert r["eval/modes"] == 1 and r["eval/kl_uniform"] == pytest.approx(math.log(1000))
    assert r["eval/n_scored"] == 300 and math.isfinite(r["eval/fid"])
