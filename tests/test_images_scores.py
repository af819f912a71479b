"""PRDC, IS, I-Variance and Stacked-MNIST mode counting on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gancollapse.metrics.i_variance import i_variance
from gancollapse.metrics.inception_score import inception_score
from gancollapse.metrics.mode_count import kl_to_uniform, mode_stats, stacked_modes
from gancollapse.metrics.prdc import density_coverage, knn_radii, prdc, precision_recall


def _prdc_numpy(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Brute-force transcription of the definitions (Kynkäänniemi 2019; Naeem 2020)."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)
    r_rad = np.sort(d_rr, axis=1)[:, k]
    f_rad = np.sort(d_ff, axis=1)[:, k]
    precision = (d_rf <= r_rad[:, None]).any(axis=0).mean()
    recall = (d_rf <= f_rad[None, :]).any(axis=1).mean()
    density = (d_rf < r_rad[:, None]).sum() / (k * fake.shape[0])
    coverage = (d_rf.min(axis=1) < r_rad).mean()
    return precision, recall, density, coverage


def test_prdc_matches_brute_force_definitions():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(120, 5)), rng.normal(0.5, 1.2, size=(90, 5))
    for k in (3, 5):
        p, r = precision_recall(torch.tensor(real), torch.tensor(fake), k)
        d, c = density_coverage(torch.tensor(real), torch.tensor(fake), k)
        ref = _prdc_numpy(real, fake, k)
        assert (p, r, d, c) == pytest.approx(ref, abs=1e-12)


def test_prdc_extremes():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 4, generator=g)
    same = prdc(real, real.clone())
    assert same["precision"] == 1 and same["recall"] == 1 and same["coverage"] == 1
    # each point lies in its own ball and in k−1 others (the k-th sits on the boundary); cdist rounding may tip a few
    assert same["density"] == pytest.approx(1.0, abs=0.02)
    far = prdc(real, real + 100)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_knn_radius_is_kth_neighbour_excluding_self():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_inception_score_known_values():
    k = 10
    onehot = torch.eye(k).repeat(5, 1)  # confident and uniform over classes → IS = K
    assert inception_score(onehot, splits=5)[0] == pytest.approx(k, rel=1e-6)
    assert inception_score(torch.full((50, k), 1 / k), splits=5) == pytest.approx((1.0, 0.0))
    collapsed = torch.zeros(50, k)
    collapsed[:, 3] = 1
    assert inception_score(collapsed, splits=5)[0] == pytest.approx(1.0)


def test_i_variance_known_value():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(10, 1)  # per-class std 0.5
    assert i_variance(p, splits=2) == pytest.approx((0.5, 0.0))
    assert i_variance(torch.full((20, 4), 0.25), splits=2)[0] == 0


def test_kl_to_uniform_hand_values():
    assert kl_to_uniform(torch.tensor([5, 5, 5, 5])) == pytest.approx(0.0)
    assert kl_to_uniform(torch.tensor([8, 0, 0, 0])) == pytest.approx(math.log(4))
    assert kl_to_uniform(torch.tensor([1, 1, 0, 0])) == pytest.approx(math.log(2))


class _BrightnessDigit(nn.Module):
    """A stand-in MNIST classifier: the digit is the image's mean brightness level (0..9)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        level = ((x.mean(dim=(1, 2, 3)) + 1) / 2 * 9).round().long()
        return nn.functional.one_hot(level, 10).float()


def test_stacked_mnist_mode_counting_on_a_hand_made_set():
    triples = [(1, 2, 3)] * 6 + [(9, 0, 9)] * 3 + [(4, 4, 4)]  # 3 modes, counts 6/3/1
    imgs = torch.stack([torch.stack([torch.full((8, 8), d / 9 * 2 - 1) for d in t]) for t in triples])
    modes = stacked_modes(imgs, _BrightnessDigit())
    assert sorted(set(modes.tolist())) == [123, 444, 909]
    stats = mode_stats(modes, 1000)
    p = np.array([6, 3, 1]) / 10
    assert stats["modes"] == 3
    assert stats["kl_uniform"] == pytest.approx(float((p * np.log(p * 1000)).sum()))
