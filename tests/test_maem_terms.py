"""MaEM-GAN terms on hand-built inputs: entropy vs brute force, FIFO, the seed's shrinking buffer, σ warm-up,
DLLE and DIsoMap on nets for which the answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gancollapse.regularizers.base import Step
from gancollapse.regularizers.disomap import DIsoMap, isometry_loss, mix
from gancollapse.regularizers.dlle import DLLE, augment
from gancollapse.regularizers.maem import (
    ManifoldEntropy,
    ReplayBuffer,
    SeedCompatBuffer,
    entropy_weight,
    manifold_entropy,
    nearest_neighbour,
)


def brute_entropy(codes: torch.Tensor, buffer: torch.Tensor, metric: str) -> torch.Tensor:
    """log mean_i min_k dist(c_i, b_k) over the full (S, B) table — the seed's broadcast form."""
    if metric == "l2":
        table = (buffer[:, None, :] - codes[None, :, :]).pow(2).mean(dim=2)  # (S, B)
        return torch.log(table.min(dim=0).values.mean())
    cos = torch.nn.functional.cosine_similarity(buffer[:, None, :], codes[None, :, :], dim=2)
    return torch.log((1 - cos.max(dim=0).values).mean())


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_entropy_equals_brute_force_value_and_gradient(metric: str) -> None:
    g = torch.Generator().manual_seed(0)
    buffer = torch.randn(257, 6, generator=g)
    codes = torch.randn(9, 6, generator=g, requires_grad=True)
    ours = manifold_entropy(codes, buffer, metric)
    (grad_ours,) = torch.autograd.grad(ours, codes)
    ref = brute_entropy(codes, buffer, metric)
    (grad_ref,) = torch.autograd.grad(ref, codes)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-4, atol=1e-6)


def brute_neighbours(codes: torch.Tensor, buffer: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, per-code distance) of the nearest buffer rows, all in float64."""
    c, b = codes.double(), buffer.double()
    if metric == "l2":
        idx = torch.cdist(c, b).argmin(dim=1)
        return idx, (c - b[idx]).pow(2).mean(dim=1)
    cos = torch.nn.functional.normalize(c, dim=1) @ torch.nn.functional.normalize(b, dim=1).t()
    idx = cos.argmax(dim=1)
    return idx, 1.0 - cos.max(dim=1).values


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_nearest_neighbour_exact_for_codes_far_from_the_origin(metric: str, offset: float) -> None:
    """D's codes drift off the origin in long runs: at offset 30 with spread 0.01 the float32 expansion
    ‖c‖² − 2c·b + ‖b‖² got 64 of 64 neighbours wrong and the entropy term off by ~0.8."""
    g = torch.Generator().manual_seed(0)
    buffer = offset + 0.01 * torch.randn(1024, 16, generator=g)
    codes = offset + 0.01 * torch.randn(64, 16, generator=g)
    idx, dist = brute_neighbours(codes, buffer, metric)
    assert torch.equal(nearest_neighbour(codes, buffer, metric), buffer[idx])
    expected = torch.log(dist.mean() + 1e-12).item()
    assert manifold_entropy(codes, buffer, metric).item() == pytest.approx(expected, abs=1e-4)


def test_nearest_neighbour_exact_for_a_buffer_of_two_far_apart_clusters() -> None:
    """What centring on the buffer mean would not fix: tight clusters at 0 and 30 (mean 15)."""
    g = torch.Generator().manual_seed(1)
    buffer = 0.01 * torch.randn(1024, 16, generator=g)
    buffer[512:] += 30.0
    codes = 30.0 + 0.01 * torch.randn(64, 16, generator=g)
    idx, _ = brute_neighbours(codes, buffer, "l2")
    assert torch.equal(nearest_neighbour(codes, buffer), buffer[idx])


def test_entropy_hand_computed() -> None:
    buffer = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    codes = torch.tensor([[1.0, 0.0], [9.0, 2.0]])
    # NN distances (mean over d): (1²+0)/2 = 0.5 and (1²+2²)/2 = 2.5 → log(1.5)
    assert manifold_entropy(codes, buffer).item() == pytest.approx(torch.log(torch.tensor(1.5)).item(), abs=1e-6)


def test_replay_buffer_is_fifo() -> None:
    buf = ReplayBuffer(5, 1)
    buf.push(torch.tensor([[1.0], [2.0], [3.0]]))
    buf.push(torch.tensor([[4.0], [5.0], [6.0], [7.0]]))
    assert buf.ordered().flatten().tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    buf.push(torch.arange(10.0, 18.0)[:, None])  # more than the size: the newest 5 survive
    assert buf.ordered().flatten().tolist() == [13.0, 14.0, 15.0, 16.0, 17.0]


def _step(phase: str, codes: torch.Tensor, epoch: int = 200) -> Step:
    x = torch.zeros(codes.shape[0], 2)
    return Step(phase, x, x, x, codes if phase == "d" else None, codes, nn.Identity(), nn.Identity(), 0, epoch)


def test_entropy_reads_buffer_before_pushing() -> None:
    reg = ManifoldEntropy(sigma=2.0, code_dim=2, buffer_size=4, ramp_epochs=0)
    before = reg.real_buffer.data.clone()
    codes = torch.randn(3, 2)
    term = reg.d_terms(_step("d", codes))["maem_entropy_real"]
    assert term.item() == pytest.approx(-2.0 * manifold_entropy(codes, before).item(), rel=1e-5)
    torch.testing.assert_close(reg.real_buffer.ordered()[-3:], codes)
    # fake side uses its own buffer, in the G step
    reg.g_terms(_step("g", codes))
    torch.testing.assert_close(reg.fake_buffer.ordered()[-3:], codes)


def test_seed_compat_buffer_shrinks_like_the_seed() -> None:
    buf = SeedCompatBuffer(1024, 4)
    sizes, expected, k = [], [], 1024
    for _ in range(20):
        buf.entropy(torch.randn(64, 4))
        k = max(k - 64, 0) + 1  # cat(buf[64:], new[None])
        expected.append(k)
        sizes.append(buf.data.shape[0])
    assert sizes == expected
    assert sizes[:2] == [961, 898] and sizes[15] == 16 and sizes[16:] == [1, 1, 1, 1]
    # once collapsed, each code is compared with the same slot of the previous batch only
    prev = buf.data[0].clone()
    codes = torch.randn(64, 4)
    val = buf.entropy(codes)
    assert val.item() == pytest.approx(torch.log((codes - prev).pow(2).mean(dim=1).mean()).item(), rel=1e-5)


def test_seed_compat_starts_with_the_same_codes_in_every_slot() -> None:
    """The seed draws S codes once and stacks copies of them for every batch slot."""
    buf = SeedCompatBuffer(16, 3)
    buf.entropy(torch.randn(4, 3))
    init = buf.data[:-1]  # 16 − 4 initial rows survive the first push
    assert init.shape == (12, 4, 3)
    assert torch.equal(init, init[:, :1].expand_as(init))
    assert init.abs().max() <= 1.0 and init[:, 0].std() > 0.1


def test_fifo_horizon_vs_seed_compat_per_slot_neighbours() -> None:
    """FIFO (default): each code's neighbour is the nearest of the last S codes, any slot, any of the last
    S/B batches. seed_compat: once the buffer has shrunk, code i's only neighbour is code i of the previous
    batch. Batches of B = 4 two-dimensional codes; S = 8 holds the last two batches."""
    q = torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]])
    two_ago = q + torch.tensor([0.0, 0.05])                       # the close copies, two batches back
    previous = q.roll(1, dims=0) + torch.tensor([0.0, 0.1])       # slot i holds q[i−1] (+0.1): off by one slot
    history = [torch.randn(4, 2) * 100, two_ago, previous]

    def term(seed_compat: bool, size: int) -> float:
        reg = ManifoldEntropy(sigma=1.0, code_dim=2, buffer_size=size, ramp_epochs=0, seed_compat=seed_compat)
        for batch in history:
            reg.d_terms(_step("d", batch))
        return -reg.d_terms(_step("d", q))["maem_entropy_real"].item()

    # FIFO of 8 codes = the last two batches: each q[i] finds two_ago[i], 0.05² / 2 away
    assert term(False, 8) == pytest.approx(math.log(0.05**2 / 2), abs=1e-5)
    # FIFO of 4 codes = the previous batch only, but any slot: q[i] finds previous[i+1], 0.1² / 2 away
    assert term(False, 4) == pytest.approx(math.log(0.1**2 / 2), abs=1e-5)
    # seed_compat: the (8, 4, 2) buffer has shrunk to the previous batch (8 → 5 → 2 → 1) and q[i] is scored
    # against previous[i] only: 10² (or 30² for slot 0) plus 0.1², over d = 2
    per_slot = (q - previous).pow(2).mean(dim=1)
    assert per_slot.tolist() == pytest.approx([(900 + 0.01) / 2] + [(100 + 0.01) / 2] * 3)
    assert term(True, 8) == pytest.approx(math.log(per_slot.mean().item()), rel=1e-6)


def test_seed_compat_state_round_trip() -> None:
    reg = ManifoldEntropy(code_dim=3, buffer_size=64, seed_compat=True)
    for _ in range(10):  # 64 → 57 → … → 1 with batches of 8
        reg.d_terms(_step("d", torch.randn(8, 3)))
    state = reg.state_dict()
    assert state["real_buffer.data"].shape == (1, 8, 3)
    fresh = ManifoldEntropy(code_dim=3, buffer_size=64, seed_compat=True)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.real_buffer.data, reg.real_buffer.data)


def test_sigma_warmup_values() -> None:
    assert [entropy_weight(5e-4, e, 100) for e in (0, 1, 50, 99, 100, 500)] == pytest.approx(
        [0.0, 5e-6, 2.5e-4, 4.95e-4, 5e-4, 5e-4]
    )
    assert entropy_weight(5e-4, 0, 0) == 5e-4
    reg = ManifoldEntropy(sigma=1.0, code_dim=2, buffer_size=8, ramp_epochs=100)
    codes = torch.randn(4, 2)
    ent = manifold_entropy(codes, reg.real_buffer.data.clone())
    assert reg.d_terms(_step("d", codes, epoch=25))["maem_entropy_real"].item() == pytest.approx(-0.25 * ent.item(), rel=1e-5)


def test_bad_config_values_name_the_key() -> None:
    with pytest.raises(ValueError, match="regularizer.maem.metric"):
        ManifoldEntropy(metric="l1")
    with pytest.raises(ValueError, match="regularizer.maem.buffer_size"):
        ManifoldEntropy(buffer_size=0)
    reg = ManifoldEntropy(code_dim=4, buffer_size=8)
    with pytest.raises(ValueError, match="regularizer.maem.code_dim"):
        reg.d_terms(_step("d", torch.randn(2, 3)))
    with pytest.raises(ValueError, match="regularizer.disomap.alpha"):
        DIsoMap(alpha="beta")
    with pytest.raises(ValueError, match="regularizer.dlle.noise_std"):
        DLLE(noise_std=-1)


# ---------------------------------------------------------------------------------------------- DIsoMap
class Affine(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def _d_step(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> Step:
    return Step("d", real, fake, real, disc(real), disc(fake), nn.Identity(), disc, 0, 0)


@pytest.mark.parametrize("alpha", ["normal", "uniform"])
def test_disomap_zero_for_affine_d(alpha: str) -> None:
    torch.manual_seed(0)
    disc = Affine(3 * 4 * 4, 5).double()
    real, fake = torch.randn(16, 3, 4, 4, dtype=torch.float64), torch.randn(16, 3, 4, 4, dtype=torch.float64)
    term = DIsoMap(alpha=alpha, noise_std=0.0).d_terms(_d_step(disc, real, fake))["disomap"]
    assert term.item() == pytest.approx(0.0, abs=1e-20)


def test_disomap_expected_value_is_noise_variance_and_positive_for_nonlinear_d() -> None:
    torch.manual_seed(0)
    disc = Affine(2, 4)
    real, fake = torch.randn(20000, 2), torch.randn(20000, 2)
    term = DIsoMap(noise_std=0.05).d_terms(_d_step(disc, real, fake))["disomap"]
    assert term.item() == pytest.approx(0.05**2, rel=0.03)
    nonlinear = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4))
    assert DIsoMap(noise_std=0.0).d_terms(_d_step(nonlinear, real[:256], fake[:256]))["disomap"].item() > 1e-4


def test_disomap_gradient_only_through_the_mixed_branch() -> None:
    t = torch.randn(4, 3, requires_grad=True)
    f = torch.randn(4, 3, requires_grad=True)
    m = torch.randn(4, 3, requires_grad=True)
    alpha = torch.tensor([0.5, -1.0, 2.0, 0.0])
    isometry_loss(m, t, f, alpha, noise_std=0.0).backward()
    assert t.grad is None and f.grad is None and m.grad is not None
    torch.testing.assert_close(mix(torch.ones(4, 3), torch.zeros(4, 3), alpha), alpha[:, None].expand(4, 3))


# ---------------------------------------------------------------------------------------------- DLLE
class PooledLinear(nn.Module):
    """Linear in the per-channel spatial mean: exactly invariant to flips along H and W."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.mean(dim=(2, 3)))


def test_augment_flips_along_h_or_w_only() -> None:
    x = torch.randn(2, 3, 5, 6)
    seen = set()
    for _ in range(20):
        out = augment(x, noise_std=0.0)
        match = [d for d in (2, 3) if torch.equal(out, torch.flip(x, dims=(d,)))]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == {2, 3}
    pts = torch.randn(5, 2)
    assert torch.equal(augment(pts, noise_std=0.0), pts)  # 2D points: no flip


def test_dlle_zero_for_invariant_d() -> None:
    torch.manual_seed(0)
    disc = PooledLinear().double()
    real, fake = torch.randn(8, 3, 6, 6, dtype=torch.float64), torch.randn(8, 3, 6, 6, dtype=torch.float64)
    term = DLLE(noise_std=0.0).d_terms(_d_step(disc, real, fake))["dlle"]
    assert term.item() == pytest.approx(0.0, abs=1e-24)
    # a D that sees the orientation is penalised
    assert DLLE(noise_std=0.0).d_terms(_d_step(Affine(3 * 36, 4).double(), real, fake))["dlle"].item() > 1e-6


def test_dlle_noise_only_on_points_expected_value() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(20000, 2), torch.randn(20000, 2)
    term = DLLE(noise_std=0.1).d_terms(_d_step(nn.Identity(), real, fake))["dlle"]
    assert term.item() == pytest.approx(2 * 0.1**2, rel=0.03)  # real half + fake half


def test_dlle_matches_hand_computation_with_detached_target() -> None:
    torch.manual_seed(0)
    disc = Affine(3 * 16, 4)
    real, fake = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    torch.manual_seed(1)
    term = DLLE(noise_std=0.5).d_terms(_d_step(disc, real, fake))["dlle"]
    (grad,) = torch.autograd.grad(term, disc.lin.weight)
    torch.manual_seed(1)  # same flips and noise, in the same order (real, then fake)
    a_real, a_fake = augment(real, 0.5), augment(fake, 0.5)
    mse = torch.nn.functional.mse_loss
    ref = mse(disc(real), disc(a_real).detach()) + mse(disc(fake), disc(a_fake).detach())
    (grad_ref,) = torch.autograd.grad(ref, disc.lin.weight)
    torch.testing.assert_close(term, ref)
    torch.testing.assert_close(grad, grad_ref)


def test_maf_objective_is_wasserstein_on_the_code_mean() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gancollapse.paths import CONF_DIR

    objective = instantiate(OmegaConf.load(f"{CONF_DIR}/loss/maf.yaml"))
    t, f = torch.randn(5, 16), torch.randn(5, 16)
    # seed: loss_D = -mean(t_z) + mean(f_z), loss_G = -mean(D(G(z))), means over batch and all 16 dims
    assert objective.d_loss(t, f).item() == pytest.approx((-t.mean() + f.mean()).item(), abs=1e-6)
    assert objective.g_loss(f).item() == pytest.approx(-f.mean().item(), abs=1e-6)
