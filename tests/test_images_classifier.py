"""The platform classifier: trains on digits offline and classifies held-out digits; the image evaluator finds
it and reports IS / I-Variance / Stacked-MNIST modes computed from its predictions on the generated images."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

import gancollapse
import gancollapse.data.stacked as stacked_mod
from gancollapse.classifier import default_classifier_path, load_classifier, main, predict_proba
from gancollapse.data.convert import to_float
from gancollapse.data.digits import DigitsDataModule
from gancollapse.data.stacked import StackedMNISTDataModule
from gancollapse.metrics.features import build_feature_extractor
from gancollapse.metrics.fid import FID
from gancollapse.metrics.i_variance import IVariance, i_variance
from gancollapse.metrics.image_callback import ImageEvaluator
from gancollapse.metrics.inception_score import InceptionScore, inception_score
from gancollapse.metrics.mode_count import StackedModes, mode_stats, stacked_modes
from gancollapse.train import run
from tests.conftest import TINY_DCGAN, StandInGenerator, compose_cfg

TINY_IMG = [*TINY_DCGAN, "logger=none"]


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory) -> Path:
    """One classifier for the module (32 px, 1 channel), trained through the CLI entry point."""
    out = tmp_path_factory.mktemp("cls") / "digits.pt"
    path = main(["dataset=digits", "epochs=2", "batch_size=32", "lr=0.002", "device=cpu", f"out={out}"])
    assert path == out
    return out


def _held_out_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 10 % of digits ``train_classifier`` holds out (its split: randperm from seed 0)."""
    data = DigitsDataModule(img_size=32).load()
    n = len(data.labels)
    val = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: round(n * 0.1)]
    return to_float(data.images[val]), data.labels[val]


def test_classifier_cli_trains_on_digits_and_classifies_held_out_digits(digits_classifier):
    out = digits_classifier
    model = load_classifier(out)
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["dataset"] == "digits-32px-1ch"
    x, y = _held_out_digits()
    acc = float((predict_proba(model, x).argmax(1) == y).float().mean())
    assert acc > 0.85 and acc == pytest.approx(meta["val_accuracy"])  # the recorded accuracy is held-out accuracy
    assert inception_score(predict_proba(model, x), splits=1)[0] > 5  # confident and diverse on real digits
    assert build_feature_extractor("classifier", classifier=str(out))(x[:3]).shape == (3, 128)


class _Replay(StandInGenerator):
    """A stand-in generator: "G(z)" is ``pool[z[:, 0]]``, so the evaluator scores images we chose."""

    def __init__(self, pool: torch.Tensor) -> None:
        super().__init__()
        self.pool = pool

    def generate(self, n: int, z: torch.Tensor, batch_size: int = 10_000) -> torch.Tensor:
        return self.pool[z[:, 0].long()]


def _evaluator(dm, cls, tmp_path, n: int, splits: int = 10, modes: bool = False) -> ImageEvaluator:
    metrics = {"fid": FID(), "is": InceptionScore(splits), "i_variance": IVariance(splits)}
    if modes:
        metrics["modes"] = StackedModes()
    ev = ImageEvaluator(n_samples=n, n_real=n, feature="tiny", classifier=str(cls), grid_size=0, batch_size=64,
                        cache_dir=str(tmp_path), metrics=metrics)
    ev.datamodule = dm
    ev.eval_z = torch.arange(n, dtype=torch.float32)[:, None]  # "latents" that index the replayed pool
    return ev


def test_evaluator_is_is_the_classifiers_on_the_generated_images(tmp_path, digits_classifier):
    """Diverse real digits → IS of the classifier's p(y|x) on them (> 5); one digit repeated → IS 1, I-Var 0."""
    x, _ = _held_out_digits()
    x = x[:160]
    ev = _evaluator(DigitsDataModule(img_size=32), digits_classifier, tmp_path, len(x), splits=4)
    diverse = ev.compute(_Replay(x))
    probs = predict_proba(load_classifier(digits_classifier), x)
    assert diverse["is"] == pytest.approx(inception_score(probs, 4)[0], rel=1e-5) and diverse["is"] > 5
    assert diverse["i_variance"] == pytest.approx(i_variance(probs, 4)[0], rel=1e-5)
    collapsed = ev.compute(_Replay(x[:1].expand(len(x), -1, -1, -1)))
    assert collapsed["is"] == pytest.approx(1.0, abs=1e-6) and collapsed["i_variance"] == pytest.approx(0.0, abs=1e-7)
    assert collapsed["fid"] > diverse["fid"]


def test_evaluator_run_reports_the_is_of_its_final_generator(tmp_path, digits_classifier):
    cls = digits_classifier
    cfg = compose_cfg(["dataset=digits", *TINY_IMG, "z_dim=16", "max_g_steps=4", "evaluator.every_n_steps=4",
                       "evaluator.n_samples=100", "evaluator.metrics.kid=null", "evaluator.metrics.prdc=null",
                       f"evaluator.classifier={cls}", f"evaluator.cache_dir={tmp_path}", "evaluator.grid_size=0"],
                      tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert summary["eval/g_step"] == 4 and "fid" in summary
    # Recompute from the saved generator: the evaluator's latents are the prior's first 100 draws from seed 1234.
    module = gancollapse.load(tmp_path / "run", which="last").module
    z = module.sample_z(100, "cpu", torch.Generator().manual_seed(1234))
    probs = predict_proba(load_classifier(cls), module.generate(100, z=z))
    assert summary["is"] == pytest.approx(inception_score(probs, 10)[0], rel=1e-4)
    assert summary["i_variance"] == pytest.approx(i_variance(probs, 10)[0], rel=1e-4)


@pytest.fixture
def stacked_digits(tmp_path, monkeypatch, digits_classifier):
    """Stacked 'MNIST' built from sklearn digits (no download), with the digits classifier at the default path
    for mnist-32px-1ch, where ``classifier: auto`` looks."""

    def fake_mnist(root, download, train=True, key="mnist"):
        data = DigitsDataModule(img_size=32, channels=1).load()
        return data.images, data.labels

    monkeypatch.setattr(stacked_mod, "load_mnist", fake_mnist)
    monkeypatch.setenv("GANCOLLAPSE_CACHE", str(tmp_path))
    target = default_classifier_path("mnist-32px-1ch")
    target.parent.mkdir(parents=True)
    shutil.copy(digits_classifier, target)
    return target


def test_stacked_mnist_modes_known_answers(tmp_path, stacked_digits):
    """Held-out digit triples → about as many modes as distinct true triples; one image → 1 mode, KL = ln 1000."""
    dm = StackedMNISTDataModule(n_samples=300)
    dm.setup()
    x, y = _held_out_digits()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(y), (300, 3), generator=g)
    stacked = torch.cat([x[idx[:, c]] for c in range(3)], dim=1)
    truth = y[idx[:, 0]] * 100 + y[idx[:, 1]] * 10 + y[idx[:, 2]]
    ev = _evaluator(dm, "auto", tmp_path, 300, modes=True)
    m = ev.compute(_Replay(stacked))
    distinct = len(set(truth.tolist()))
    assert abs(m["modes"] - distinct) <= 0.1 * distinct
    assert m["kl_uniform"] == pytest.approx(mode_stats(truth, 1000)["kl_uniform"], abs=0.15)
    collapsed = ev.compute(_Replay(stacked[:1].expand(300, -1, -1, -1)))
    assert collapsed["modes"] == 1 and collapsed["kl_uniform"] == pytest.approx(math.log(1000))


def test_stacked_mnist_run_reports_the_modes_of_its_final_generator(tmp_path, stacked_digits):
    cfg = compose_cfg(["dataset=stacked_mnist", "dataset.n_samples=500", *TINY_IMG, "z_dim=8", "max_g_steps=3",
                       "evaluator.feature=tiny", "evaluator.every_n_steps=3", "evaluator.n_samples=300",
                       "evaluator.n_real=300", "evaluator.metrics.kid=null"], tiny=False)
    summary = run(cfg, tmp_path / "run")
    module = gancollapse.load(tmp_path / "run", which="last").module
    z = module.sample_z(300, "cpu", torch.Generator().manual_seed(1234))
    expected = mode_stats(stacked_modes(module.generate(300, z=z), load_classifier(stacked_digits)), 1000)
    assert summary["modes"] == expected["modes"] and summary["kl_uniform"] == pytest.approx(expected["kl_uniform"])


def test_missing_auto_classifier_for_classifier_features_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCOLLAPSE_CACHE", str(tmp_path))
    cfg = compose_cfg(["dataset=digits", *TINY_IMG, "z_dim=8", "max_g_steps=2", "evaluator.every_n_steps=2",
                       "evaluator.feature=classifier", "evaluator.classifier=auto"], tiny=False)
    with pytest.raises(FileNotFoundError, match="python -m gancollapse.classifier dataset=digits"):
        run(cfg, tmp_path / "run")
