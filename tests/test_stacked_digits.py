"""Stacked Digits: the seeded 1,000-mode set, and the mode counter on data with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.datasets import load_digits

from gancollapse.benchmark import count_modes, ensure_digits_classifier, load_digits_classifier
from gancollapse.data.convert import to_float
from gancollapse.data.stacked import StackedDigitsDataModule
from gancollapse.metrics.mode_count import stacked_modes


@pytest.mark.parametrize("size", [16, 32])
def test_stacked_digits_shapes_labels_and_seed(size):
    dm = StackedDigitsDataModule(img_size=size, n_samples=3000, stack_seed=7)
    dm.setup()
    images, labels = dm.sample_uint8(500, seed=0)
    assert images.shape == (500, 3, size, size) and images.dtype == torch.uint8
    # label = 100 d1 + 10 d2 + d3 of the three digits stacked as R, G, B
    target = torch.as_tensor(load_digits().target)
    d = target[dm.data.triples]
    assert torch.equal(dm.data.labels, d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2])
    first = dm.data.gather(torch.tensor([0]))[0][0]
    single = dm.data.digits[dm.data.triples[0], 0]
    assert torch.equal(first, single) and not torch.equal(first[0], first[1])  # three different digits
    # seeded: the same stack_seed gives the same set, another gives another
    again = StackedDigitsDataModule(img_size=size, n_samples=3000, stack_seed=7)
    again.setup()
    other = StackedDigitsDataModule(img_size=size, n_samples=3000, stack_seed=8)
    other.setup()
    assert torch.equal(again.data.triples, dm.data.triples) and not torch.equal(other.data.triples, dm.data.triples)
    assert labels.max() < 1000 and len(torch.unique(dm.data.labels)) > 900  # ~all 1,000 triples present


def test_stacked_digits_rejects_other_channels():
    with pytest.raises(ValueError, match="dataset.channels must be 3"):
        StackedDigitsDataModule(channels=1)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    path = ensure_digits_classifier(16, cache, epochs=10)
    assert path.name == "digits-16px-1ch.pt" and ensure_digits_classifier(16, cache) == path  # cached
    return load_digits_classifier(16, cache)


def test_real_stacked_digits_cover_all_modes_with_small_kl(classifier):
    dm = StackedDigitsDataModule(img_size=16, n_samples=30_000)
    images, _ = dm.sample_uint8(30_000, seed=0)
    stats = count_modes(to_float(images), classifier)
    assert stats["modes"] >= 995
    # KL of a uniform sample's histogram: E ≈ (K-1)/(2N) = 0.017 at N = 30k; misclassified digits add a little
    assert stats["kl_uniform"] < 0.06


def test_one_fixed_triple_is_one_mode(classifier):
    dm = StackedDigitsDataModule(img_size=16, n_samples=100)
    dm.setup()
    images, labels = dm.data.gather(torch.arange(100))
    correct = (stacked_modes(to_float(images), classifier) == labels).nonzero().flatten()
    assert len(correct) > 60  # most triples read right (16 px, 10 epochs: ~92% per digit, so ~77% per triple)
    i = int(correct[0])
    stats = count_modes(to_float(images[i:i + 1].expand(200, -1, -1, -1)), classifier)
    assert stats["modes"] == 1 and stats["kl_uniform"] == pytest.approx(math.log(1000))
