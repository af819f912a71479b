"""The platform classifier: trains on digits offline, is found by the evaluator, gives IS and I-Variance."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from gancollapse.classifier import load_classifier, main, predict_proba
from gancollapse.data.images import DigitsDataModule
from gancollapse.metrics.fid import build_feature_extractor
from gancollapse.metrics.inception_score import inception_score
from gancollapse.train import run
from tests.conftest import compose_cfg


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory) -> Path:
    """One classifier for the module (32 px, 1 channel), trained through the CLI entry point."""
    out = tmp_path_factory.mktemp("cls") / "digits.pt"
    path = main(["dataset=digits", "epochs=2", "batch_size=32", "lr=0.002", "device=cpu", f"out={out}"])
    assert path == out
    return out


def test_classifier_cli_trains_on_digits_and_separates_classes(digits_classifier):
    out = digits_classifier
    model = load_classifier(out)
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["val_accuracy"] > 0.85 and meta["dataset"] == "digits-32px-1ch"
    real, labels = DigitsDataModule(img_size=32).sample(500, seed=1, with_labels=True)
    probs = predict_proba(model, real)
    assert (probs.argmax(1) == labels).float().mean() > 0.85
    assert inception_score(probs, splits=5)[0] > 5  # confident and diverse on real digits
    feats = build_feature_extractor("classifier", classifier=str(out))
    assert feats(real[:3]).shape == (3, 128)


def test_evaluator_reports_is_with_a_classifier(tmp_path, digits_classifier):
    cls = digits_classifier
    cfg = compose_cfg(["dataset=digits", "model=dcgan32", "loss=hinge", "optim=adam", "z_dim=16",
                       "model.generator.base=4", "model.discriminator.base=4", "callbacks.progress_bar=null",
                       "max_g_steps=4", "dataset.evaluator.every_n_steps=4", "dataset.evaluator.n_samples=100",
                       "dataset.evaluator.kid=false", "dataset.evaluator.prdc=false", f"dataset.evaluator.classifier={cls}",
                       f"dataset.evaluator.cache_dir={tmp_path}", "dataset.evaluator.grid_size=0", "logger=none"], tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert 1.0 <= summary["is"] <= 10.0 and summary["i_variance"] >= 0 and "fid" in summary


def test_stacked_mnist_run_counts_modes_with_the_auto_classifier(tmp_path, monkeypatch, digits_classifier):
    """Stacked 'MNIST' built from sklearn digits (no download): the evaluator finds the classifier saved at
    the default path for mnist-32px-1ch and reports modes and KL to uniform."""
    import gancollapse.data.images as images
    from gancollapse.classifier import default_classifier_path

    def fake_mnist(root, download, train=True, key="mnist"):
        dm = DigitsDataModule(img_size=28, channels=1)
        dm.setup()
        return dm.data.images, dm.data.labels

    monkeypatch.setattr(images, "_load_mnist", fake_mnist)
    monkeypatch.setenv("GANCOLLAPSE_CACHE", str(tmp_path))
    target = default_classifier_path("mnist-32px-1ch")
    target.parent.mkdir(parents=True)
    shutil.copy(digits_classifier, target)
    dm = images.StackedMNISTDataModule(n_samples=500)
    dm.setup()
    assert dm.data.images.shape == (500, 3, 32, 32) and int(dm.data.labels.max()) < 1000
    cfg = compose_cfg(["dataset=stacked_mnist", "dataset.n_samples=500", "model=dcgan32", "loss=hinge", "optim=adam",
                       "z_dim=8", "model.generator.base=4", "model.discriminator.base=4", "callbacks.progress_bar=null",
                       "max_g_steps=3", "dataset.evaluator.feature=tiny", "dataset.evaluator.every_n_steps=3",
                       "dataset.evaluator.n_samples=300", "dataset.evaluator.n_real=300", "dataset.evaluator.kid=false",
                       "logger=none"], tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert 1 <= summary["modes"] <= 300 and summary["kl_uniform"] > 0


def test_missing_auto_classifier_for_classifier_features_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCOLLAPSE_CACHE", str(tmp_path))
    cfg = compose_cfg(["dataset=digits", "model=dcgan32", "z_dim=8", "model.generator.base=4",
                       "model.discriminator.base=4", "callbacks.progress_bar=null", "max_g_steps=2",
                       "dataset.evaluator.every_n_steps=2", "dataset.evaluator.feature=classifier",
                       "dataset.evaluator.classifier=auto", "logger=none"], tiny=False)
    with pytest.raises(FileNotFoundError, match="python -m gancollapse.classifier dataset=digits"):
        run(cfg, tmp_path / "run")
