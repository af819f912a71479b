import math

import pytest
import torch

from gancollapse.data.toy import grid_centers, ring_centers, sample_mixture
from gancollapse.metrics.toy import mode_stats, reverse_kl_to_uniform


def test_ring_and_grid_geometry():
    ring = ring_centers()
    assert ring.shape == (8, 2)
    assert torch.allclose(ring.norm(dim=1), torch.ones(8), atol=1e-6)
    grid = grid_centers()
    assert grid.shape == (25, 2)
    assert sorted(set(grid[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]


def test_all_modes_from_the_true_distribution():
    centers = ring_centers()
    x, _ = sample_mixture(centers, 0.05, 10_000, torch.Generator().manual_seed(0))
    s = mode_stats(x, centers, 0.05)
    assert s.modes == 8
    # within 3σ of the centre in 2-D: P(chi2_2 <= 9) = 1 - exp(-4.5)
    assert s.hq_fraction == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert s.reverse_kl < 0.01


def test_single_mode_collapse():
    centers = grid_centers()
    x = centers[7] + 0.01 * torch.randn(1000, 2)
    s = mode_stats(x, centers, 0.05)
    assert (s.modes, s.hq_fraction) == (1, 1.0)
    assert s.reverse_kl == pytest.approx(math.log(25))


def test_off_manifold_points_are_not_high_quality():
    centers = ring_centers()
    x = torch.cat([centers[:4].repeat_interleave(100, 0), torch.zeros(600, 2)])  # 60% at the origin
    s = mode_stats(x, centers, 0.05)
    assert s.modes == 4
    assert s.hq_fraction == pytest.approx(0.4)
    assert s.reverse_kl == pytest.approx(math.log(8) - math.log(4))


def test_capture_threshold_is_share_of_all_scored_samples():
    centers = ring_centers()
    # mode 0: 7 of 1000 samples (< 0.8%) is not captured; mode 1: 8 of 1000 is
    x = torch.cat([centers[0].repeat(7, 1), centers[1].repeat(8, 1), torch.full((985, 2), 5.0)])
    assert mode_stats(x, centers, 0.05).modes == 1


def test_reverse_kl_nan_without_hq_samples():
    assert math.isnan(reverse_kl_to_uniform(torch.zeros(8, dtype=torch.long)))
