"""Progressive lod schedule (ALAE LODDriver semantics, counters-only state) and the blended real batch."""

from __future__ import annotations

import math

import pytest
import torch

from gancollapse.aae.lod import (
    LodSchedule,
    blend_ramp,
    blend_real_images,
    cosine_ramp,
    downsample_to,
    linear_ramp,
    lod_of,
    resolution_of,
)

# 4 lods (4→32 px), 100 images per epoch; stage starts at epochs 0, 2, 6, 10.
CFG = dict(max_lod=3, dataset_size=100, epochs_per_lod=[2, 4, 4, 6], batch_sizes=[32, 16, 8, 4],
           learning_rates=[1e-3, 2e-3, 3e-3, 4e-3])


def test_lod_resolution_mapping_and_power_of_two_check():
    assert [resolution_of(k) for k in range(4)] == [4, 8, 16, 32]
    assert [lod_of(s) for s in (4, 8, 16, 32, 256)] == [0, 1, 2, 3, 6]
    for bad in (48, 2, 0, 100):
        with pytest.raises(ValueError, match="image_size must be a power of two"):
            lod_of(bad)


def test_lods_stages_batches_and_learning_rates_by_hand():
    s = LodSchedule(**CFG)
    assert s.stage_starts == (0, 2, 6, 10)
    assert [s.lod_at_epoch(e) for e in range(13)] == [0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert s.lod_at_epoch(500) == 3  # the last stage lasts until training stops
    assert s.total_epochs_to_top() == 10
    st = s.at(7, 40)
    assert (st.lod, st.resolution, st.batch_size, st.learning_rate) == (2, 16, 8, 3e-3)
    assert st.stage_images == 140
    assert [s.at(e).batch_size for e in (0, 2, 6, 10)] == [32, 16, 8, 4]


def test_transition_boundaries_and_cosine_blend_by_hand():
    s = LodSchedule(**CFG)  # transition = first half of the stage: 200 images at lod 1, 300 at lod 3
    assert s.transition_length(0) == 0 and s.transition_length(1) == 200 and s.transition_length(3) == 300
    lod0 = s.at(1, 50)
    assert not lod0.in_transition and lod0.blend == 1.0  # nothing to fade from at lod 0
    start = s.at(2, 0)
    assert start.in_transition and start.blend == 0.0
    mid = s.at(3, 0)  # 100 of 200 images
    assert mid.in_transition and mid.blend == pytest.approx(0.5, abs=1e-12)
    last = s.at(3, 99)
    assert last.in_transition and last.blend == pytest.approx(0.5 - 0.5 * math.cos(math.pi * 199 / 200))
    done = s.at(4, 0)
    assert not done.in_transition and done.blend == 1.0
    assert s.at(10, 75).blend == pytest.approx((1 - math.sqrt(0.5)) / 2)  # t = 75/300 = 1/4
    assert s.at(12, 0).blend == pytest.approx(0.75) and s.at(13, 0).blend == 1.0


def test_linear_ramp_fixed_transition_images_and_step_and_images_counters():
    s = LodSchedule(**CFG, blend="linear")
    assert s.at(10, 75).blend == pytest.approx(0.25)
    assert s.at_step(3, 5).blend == pytest.approx((100 + 5 * 16) / 200)  # batch 16 at lod 1
    assert s.at_images(350) == s.at(3, 50)
    f = LodSchedule(**CFG, transition_images=50)
    assert f.at(2, 25).blend == pytest.approx(0.5) and f.at(2, 50).blend == 1.0


def test_cosine_ramp_endpoints_midpoint_and_alae_formula():
    assert cosine_ramp(0.0) == 0.0 and cosine_ramp(1.0) == 1.0
    assert cosine_ramp(0.5) == pytest.approx(0.5, abs=1e-15)
    assert cosine_ramp(-3.0) == 0.0 and cosine_ramp(7.0) == 1.0
    for t in torch.linspace(0, 1, 11).tolist():  # ALAE lod_driver: sin(πt − π/2)·½ + ½
        assert cosine_ramp(t) == pytest.approx(math.sin(t * math.pi - 0.5 * math.pi) * 0.5 + 0.5, abs=1e-12)
    assert linear_ramp(0.3) == pytest.approx(0.3)
    assert blend_ramp(0.25, "cosine") < blend_ramp(0.25, "linear")  # cosine starts flat
    with pytest.raises(ValueError, match="blend must be one of"):
        blend_ramp(0.5, "sigmoid")


def _simulate(schedule: LodSchedule, first_epoch: int, last_epoch: int, first_step: int = 0):
    """A trainer loop: per epoch, per step; returns (states, lod-start events) from counters alone."""
    states, starts = [], []
    for epoch in range(first_epoch, last_epoch):
        steps = schedule.dataset_size // schedule.at(epoch).batch_size
        for step in range(first_step if epoch == first_epoch else 0, steps):
            images = step * schedule.at(epoch).batch_size
            if schedule.lod_just_started(epoch, images):
                starts.append((epoch, step))
            states.append(schedule.at_step(epoch, step))
    return states, starts


def test_lod_change_events_and_resume_from_counters():
    full, starts = _simulate(LodSchedule(**CFG), 0, 13)
    assert starts == [(2, 0), (6, 0), (10, 0)]  # not at epoch 0: a fresh optimiser has nothing to reset
    # Resume mid-stage, mid-epoch (epoch 7, batch 3) with a brand-new schedule object.
    resumed, resumed_starts = _simulate(LodSchedule(**CFG), 7, 13, first_step=3)
    assert resumed == full[-len(resumed):]
    assert resumed_starts == [(10, 0)]  # the restored optimiser state at lod 2 is kept
    # A resume exactly at a stage boundary behaves as the uninterrupted run did there.
    assert LodSchedule(**CFG).lod_just_started(6, 0)
    assert not LodSchedule(**CFG).lod_just_started(7, 0) and not LodSchedule(**CFG).lod_just_started(6, 8)


def test_short_lists_and_bad_values_raise_naming_the_key():
    for key in ("epochs_per_lod", "batch_sizes", "learning_rates"):
        with pytest.raises(ValueError, match=f"{key} has 3 entries but the schedule has 4 lods"):
            LodSchedule(**{**CFG, key: CFG[key][:3]})
    with pytest.raises(ValueError, match="batch_sizes must be > 0"):
        LodSchedule(**{**CFG, "batch_sizes": [32, 0, 8, 4]})
    with pytest.raises(ValueError, match="blend must be one of"):
        LodSchedule(**CFG, blend="cos")
    with pytest.raises(ValueError, match="transition"):
        LodSchedule(**CFG, transition=1.5)
    # ALAE-length lists (9 resolutions) and scalars are fine.
    long = LodSchedule(3, 100, 6, [128, 128, 128, 64, 32, 16, 16, 16, 16], 0.0015)
    assert long.batch_sizes == (128, 128, 128, 64) and long.learning_rates == (0.0015,) * 4


def test_blended_real_batch_hand_values_and_exact_endpoints():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    low = blend_real_images(x, lod=1, blend=0.0)  # each 2×2 block replaced by its mean
    assert low[0, 0, 0, 0] == low[0, 0, 1, 1] == 4.5 and low[0, 0, 7, 7] == 58.5
    assert torch.equal(blend_real_images(x, lod=1, blend=1.0), x)
    assert torch.allclose(blend_real_images(x, 1, 0.25), 0.75 * low + 0.25 * x)
    big = torch.randn(2, 3, 32, 32)
    at16 = downsample_to(big, 16)
    assert torch.allclose(at16[:, :, 0, 0], big[:, :, :2, :2].mean(dim=(2, 3)))
    assert torch.equal(blend_real_images(big, 2, 1.0), at16)
    mixed = blend_real_images(big, 2, 0.0)
    assert mixed.shape == (2, 3, 16, 16)
    assert torch.equal(mixed, torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(at16, 2),
                                                              scale_factor=2, mode="nearest"))
    assert torch.equal(blend_real_images(big, 0, 0.0), downsample_to(big, 4))  # lod 0: nothing to fade from
    with pytest.raises(ValueError, match="below"):
        blend_real_images(torch.randn(1, 3, 8, 8), lod=2, blend=1.0)
    with pytest.raises(ValueError, match="power of two"):
        blend_real_images(torch.randn(1, 3, 12, 12), lod=1, blend=1.0)
