"""Collapse observatory: pure metrics on known inputs, the PNG dashboard on a toy run and on images with a
classifier, and that it leaves the training RNG and BatchNorm statistics untouched."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from gancollapse.classifier import SmallClassifier, save_classifier
from gancollapse.metrics.observatory import (
    CollapseObservatory,
    class_coverage,
    inception_score,
    mean_nn_distance,
)
from gancollapse.train import CONF_DIR, run


def test_mean_nn_distance_inception_score_and_coverage():
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    assert mean_nn_distance(pts) == pytest.approx((1 + math.sqrt(18) + 1) / 3, rel=1e-6)
    assert mean_nn_distance(torch.zeros(5, 1, 2, 2)) == 0.0  # collapsed samples
    onehot = torch.eye(10).repeat(3, 1)
    assert inception_score(onehot) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.full((20, 10), 0.1)) == pytest.approx(1.0, rel=1e-6)
    assert inception_score(torch.eye(4)[[0, 0, 1, 1]]) == pytest.approx(2.0, rel=1e-6)
    probs = torch.eye(10)[torch.tensor([0] * 90 + [1] * 9 + [2])]
    hist, covered, entropy = class_coverage(probs)
    assert hist[:3].tolist() == [90, 9, 1] and covered == 3  # 1 ≥ 0.1·100/10
    assert entropy == pytest.approx(-(0.9 * math.log(0.9) + 0.09 * math.log(0.09) + 0.01 * math.log(0.01)), rel=1e-6)
    with pytest.raises(ValueError, match="nets"):
        CollapseObservatory(nets=["e"])
    with pytest.raises(ValueError, match="every_n_steps"):
        CollapseObservatory(every_n_steps=0)


def _columns(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_observatory_toy_run_writes_dashboard_and_metrics(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[
            "max_g_steps=30", "callbacks.progress_bar=null", "+callbacks=observatory", "logger=csv",
            "callbacks.observatory.every_n_steps=10", "callbacks.observatory.k=3", "callbacks.observatory.iterations=8",
            "callbacks.observatory.toy_samples=500", "callbacks.observatory.n_spread=128",
            "model.generator.hidden=16", "model.discriminator.hidden=16", "dataset.n_samples=2000",
            "dataset.batch_size=100", "dataset.evaluator.every_n_steps=1000", "dataset.evaluator.n_samples=500"])
    summary = run(cfg, tmp_path)
    png = tmp_path / "plots" / "observatory.png"
    assert png.is_file() and png.stat().st_size > 10_000
    rows = [r for r in _columns(tmp_path / "metrics.csv") if r.get("observatory/g_eig0")]
    assert [float(r["observatory/g_step"]) for r in rows] == [10.0, 20.0, 30.0]
    for key in ("observatory/d_eig2", "observatory/spread_ratio", "observatory/toy_modes", "observatory/overhead"):
        assert all(r[key] != "" for r in rows), key
    assert 0 <= summary["observatory/toy_modes"] <= 8 and summary["observatory/toy_n_modes"] == 8
    assert summary["observatory/g_eig0"] >= summary["observatory/g_eig2"]


class _TinyDM:
    """Just enough of a datamodule for the callback: no centres, so the image path is taken."""


def _image_module():
    from gancollapse.models.distgan import DistGANModule
    from gancollapse.nets.mnist import MnistDiscriminator, MnistEncoder, MnistGenerator
    from gancollapse.samplers.prior import PriorSampler

    torch.manual_seed(0)
    return DistGANModule(MnistGenerator(z_dim=3, dim=4, bridge="crop"), MnistDiscriminator(dim=4),
                         MnistEncoder(z_dim=3, dim=4), sampler=PriorSampler("uniform"), z_dim=3, schedule_steps=10)


class _Trainer:
    def __init__(self, root):
        self.default_root_dir = str(root)
        self.datamodule = _TinyDM()
        self.callback_metrics = {}
        self.is_global_zero = True
        self.loggers = []


def test_observatory_images_with_classifier_and_no_side_effects(tmp_path):
    clf = tmp_path / "clf.pt"
    torch.manual_seed(1)
    save_classifier(SmallClassifier(channels=1, num_classes=10, img_size=32), clf, {"note": "untrained"})
    module = _image_module()
    trainer = _Trainer(tmp_path)
    module._trainer = None  # log_metrics is a no-op without a trainer
    obs = CollapseObservatory(every_n_steps=1, k=2, iterations=4, hessian_batch=8, n_spread=16, classifier=str(clf),
                              n_classify=50)
    obs.setup(trainer, module, "fit")
    obs._collect_real((torch.rand(16, 1, 28, 28) * 2 - 1, torch.zeros(16)))
    bn_before = {k: v.clone() for k, v in module.named_buffers()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    m = obs.evaluate(trainer, module)
    torch.testing.assert_close(torch.rand(3), expected_next)  # training RNG stream untouched
    for k, v in module.named_buffers():
        torch.testing.assert_close(v, bn_before[k])  # BatchNorm running stats restored
    assert 1.0 <= m["observatory/is"] <= 10.0
    assert 1 <= m["observatory/classes_covered"] <= 10
    assert m["observatory/g_eig0"] >= m["observatory/g_eig1"] and "observatory/d_eig1" in m
    assert module.latest_eval["observatory/is"] == m["observatory/is"]
    out = obs.dashboard(tmp_path / "plots" / "observatory.png")
    assert out.is_file() and out.stat().st_size > 10_000
    # Same seed, same state: the measurement is deterministic.
    again = obs.evaluate(trainer, module)
    assert again["observatory/g_eig0"] == pytest.approx(m["observatory/g_eig0"], rel=1e-5)
    assert again["observatory/is"] == m["observatory/is"]


def test_observatory_without_classifier_skips_with_reason(tmp_path, caplog):
    module = _image_module()
    obs = CollapseObservatory(every_n_steps=1, k=2, iterations=4, hessian_batch=8, n_spread=16, plot=False)
    with caplog.at_level("INFO", logger="gancollapse"):
        obs.setup(_Trainer(tmp_path), module, "fit")
    assert "classes" in obs.skipped and "no classifier configured" in caplog.text


def test_observatory_auto_classifier_missing_skips(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GANCOLLAPSE_CACHE", str(tmp_path / "cache"))

    class DM:
        name = "digits"

        def describe(self) -> str:
            return "digits-28px-1ch"

    trainer = _Trainer(tmp_path)
    trainer.datamodule = DM()
    obs = CollapseObservatory(classifier="auto", plot=False)
    with caplog.at_level("INFO", logger="gancollapse"):
        obs.setup(trainer, _image_module(), "fit")
    assert obs.classifier is None and "no classifier at" in obs.skipped["classes"]
