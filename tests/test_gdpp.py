"""GDPP (gancollapse.regularizers.gdpp): the loss on hand-computed kernels, its invariances, a finite gradient at
repeated eigenvalues, D's features from the forward the loss already does, and a short ring run."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from gancollapse.losses import NonSaturatingLoss
from gancollapse.models.gan import GANModule
from gancollapse.models.phased import PhaseBatch
from gancollapse.nets.dcgan import DCGANDiscriminator
from gancollapse.nets.mlp import MLP
from gancollapse.regularizers.gdpp import GDPP, dpp_kernel, gdpp_from_eig, gdpp_loss, safe_eigh
from gancollapse.regularizers.pack import Pack
from gancollapse.regularizers.unrolled import Unrolled
from gancollapse.train import run
from tests.conftest import compose_cfg, metric_values

# Real: rows (1,0), (1,0), (0,1): L = [[1,1,0],[1,1,0],[0,0,1]], eigenvalues 0, 1, 2 with eigenvectors
# (1,−1,0)/√2, (0,0,1), (1,1,0)/√2. Fake: rows (1,0,0), (0,2,0), (0,0,√2): L = diag(1, 4, 2), eigenvalues
# 1, 2, 4 with eigenvectors e1, e3, e2.
REAL = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
FAKE = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, math.sqrt(2.0)]], dtype=torch.float64)


def test_loss_on_a_hand_computed_pair_of_kernels():
    # L_m = mean((0−1)², (1−2)², (2−4)²) = 2. λ̂_real = (0, ½, 1); |cos| of the matched pairs: 1/√2, 1, 1/√2,
    # so L_s = 0·(1 − 1/√2) + ½·(1 − 1) + 1·(1 − 1/√2).
    expected = 2.0 + (1 - 1 / math.sqrt(2))
    loss = gdpp_loss(REAL, FAKE, magnitude_weight=1.0, normalize=False)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # the authors' 1e-4 on the magnitude term
    assert gdpp_loss(REAL, FAKE, normalize=False).item() == pytest.approx(2e-4 + 1 - 1 / math.sqrt(2), rel=1e-12)
    # real and fake swapped: L_m is symmetric, λ̂ now comes from (1, 2, 4) = (0, ⅓, 1): ⅓·(1 − 1) + 1·(1 − 1/√2)
    assert gdpp_loss(FAKE, REAL, magnitude_weight=1.0, normalize=False).item() == pytest.approx(expected, rel=1e-12)


def test_features_are_l2_normalised_per_sample():
    scaled = REAL * torch.tensor([[3.0], [0.5], [2.0]], dtype=torch.float64)
    assert torch.allclose(dpp_kernel(scaled), dpp_kernel(REAL))
    assert gdpp_loss(scaled, FAKE).item() == pytest.approx(gdpp_loss(REAL, FAKE).item(), rel=1e-12)
    assert not torch.allclose(dpp_kernel(scaled, normalize=False), dpp_kernel(REAL, normalize=False))


@pytest.mark.parametrize("sign_invariant", [True, False])
def test_zero_when_fake_features_equal_real_features(sign_invariant):
    torch.manual_seed(0)
    feats = torch.randn(16, 8)  # B > d: eight zero eigenvalues
    assert gdpp_loss(feats, feats.clone(), sign_invariant=sign_invariant).item() == pytest.approx(0.0, abs=1e-5)
    assert gdpp_loss(feats, torch.randn(16, 8), sign_invariant=sign_invariant).item() > 0.1


def test_invariant_to_eigenvector_sign_flips_unless_signed():
    torch.manual_seed(0)
    lam_r, vec_r = torch.linalg.eigh(dpp_kernel(torch.randn(6, 4, dtype=torch.float64)))
    lam_f, vec_f = torch.linalg.eigh(dpp_kernel(torch.randn(6, 4, dtype=torch.float64)))
    flip = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    base = gdpp_from_eig(lam_r, vec_r, lam_f, vec_f)
    for a, b in ((vec_r * flip, vec_f), (vec_r, vec_f * flip), (vec_r * flip, vec_f * flip.flip(0))):
        assert gdpp_from_eig(lam_r, a, lam_f, b).item() == pytest.approx(base.item(), rel=1e-12)
    signed = gdpp_from_eig(lam_r, vec_r, lam_f, vec_f, sign_invariant=False)
    assert gdpp_from_eig(lam_r, vec_r * flip, lam_f, vec_f, sign_invariant=False).item() != pytest.approx(signed.item())


def test_eigenpairs_are_matched_by_rank():
    """Both spectra ascending, pair i with pair i. Matching the fake's in descending order instead would give
    L_m = mean(16, 1, 1) and the pairs ((1,−1,0)/√2, e2), ((0,0,1), e3), ((1,1,0)/√2, e1)."""
    lam_r, vec_r = torch.linalg.eigh(dpp_kernel(REAL, normalize=False))
    lam_f, vec_f = torch.linalg.eigh(dpp_kernel(FAKE, normalize=False))
    assert lam_r.tolist() == pytest.approx([0.0, 1.0, 2.0], abs=1e-12)
    assert lam_f.tolist() == pytest.approx([1.0, 2.0, 4.0], abs=1e-12)
    ranked = gdpp_from_eig(lam_r, vec_r, lam_f, vec_f, magnitude_weight=1.0)
    reversed_ = gdpp_from_eig(lam_r, vec_r, lam_f.flip(0), vec_f.flip(1), magnitude_weight=1.0)
    assert ranked.item() == pytest.approx(2.0 + 1 - 1 / math.sqrt(2), rel=1e-12)
    assert reversed_.item() == pytest.approx(6.0 + 1 - 1 / math.sqrt(2), rel=1e-12)


def test_safe_eigh_gradient_is_eighs_where_eigenvalues_are_apart():
    torch.manual_seed(0)
    x = torch.randn(6, 6, dtype=torch.float64)
    weights = torch.randn(6, 6, dtype=torch.float64)

    def objective(eig, x):
        lam, vec = eig((x + x.mT) / 2)
        return (lam * torch.arange(6.0, dtype=torch.float64)).sum() + (weights * vec * vec).sum()

    grads = []
    for eig in (torch.linalg.eigh, safe_eigh):
        xx = x.clone().requires_grad_(True)
        objective(eig, xx).backward()
        grads.append(xx.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-8, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x: objective(safe_eigh, x), (x.clone().requires_grad_(True),))


@pytest.mark.parametrize("fake", [torch.eye(4), torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])],
                         ids=["all_equal", "two_repeated_pairs"])
def test_gradient_is_finite_at_repeated_eigenvalues(fake):
    """Kernels with exactly repeated eigenvalues (1,1,1,1 and 0,0,2,2): eigh's own backward gives NaN."""
    torch.manual_seed(0)
    real = torch.randn(*fake.shape)
    x = fake.clone().requires_grad_(True)
    gdpp_loss(real, x).backward()
    assert torch.isfinite(x.grad).all()

    y = fake.clone().requires_grad_(True)
    lam_r, vec_r = torch.linalg.eigh(dpp_kernel(real))
    lam_f, vec_f = torch.linalg.eigh(dpp_kernel(y))
    gdpp_from_eig(lam_r, vec_r, lam_f, vec_f).backward()
    assert not torch.isfinite(y.grad).all()


def _module(d: nn.Module, regs: dict, x_dim: int = 2) -> GANModule:
    torch.manual_seed(0)
    m = GANModule(MLP(3, x_dim, hidden=8, depth=1), d, NonSaturatingLoss(), regs,
                  optim={"generator": partial(torch.optim.Adam, lr=1e-3),
                         "discriminator": partial(torch.optim.Adam, lr=1e-3)}, z_dim=3)
    m.use_optimizers(m.configure_optimizers())
    return m


def test_d_features_come_from_the_forward_each_step_already_does():
    """D step: one forward on cat(real, fake); G step: the forward on the fakes plus one no-grad forward on the
    real batch, and no other D call for the features."""
    d = MLP(2, 1, hidden=8, depth=2)
    m = _module(d, {"gdpp": GDPP()})
    calls: list[tuple[int, bool]] = []
    d.register_forward_hook(lambda mod, args, out: calls.append((args[0].shape[0], torch.is_grad_enabled())))
    pb = PhaseBatch(torch.randn(10, 2), torch.randn(10, 3))
    d_out = m.d_loss(pb)
    assert calls == [(20, True)]
    calls.clear()
    g_out = m.g_loss(pb)
    assert calls == [(10, True), (10, False)]
    assert torch.isfinite(g_out["gdpp"]) and g_out["gdpp"] > 0
    assert g_out["g_total"].item() == pytest.approx((g_out["g_loss"] + g_out["gdpp"]).item())
    assert "gdpp" not in d_out
    g_out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.generator.parameters())


def test_features_match_the_nets_output_path():
    torch.manual_seed(0)
    mlp = MLP(2, 1, hidden=8, depth=3)
    x = torch.randn(5, 2)
    out, feats = mlp(x, return_features=True)
    assert torch.equal(out, mlp(x)) and feats.shape == (5, 8) and torch.allclose(mlp.net[-1](feats), out)
    dcgan = DCGANDiscriminator(channels=1, base=2, img_size=28)
    img = torch.randn(3, 1, 28, 28)
    out, feats = dcgan(img, return_features=True)
    assert torch.equal(out, dcgan(img)) and feats.shape == (3, dcgan.flat_dim)


def test_gdpp_stacks_with_packing_and_the_unrolled_d():
    d = MLP(2, 1, hidden=8, depth=2)
    m = _module(d, {"gdpp": GDPP(), "pack": Pack(2), "unrolled": Unrolled(k=1)})
    pb = PhaseBatch(torch.randn(8, 2), torch.randn(8, 3))
    scores, feats = m.discriminator(pb.real, return_features=True)  # one row per sample, repeated per pack
    assert scores.shape == (8, 1) and feats.shape == (8, 8) and torch.equal(feats[0::2], feats[1::2])
    m._update(m.d_loss(pb)["loss"], "d")
    out = m.g_loss(pb)
    out["loss"].backward()
    assert torch.isfinite(out["gdpp"]) and all(torch.isfinite(p.grad).all() for p in m.generator.parameters())


def test_a_discriminator_without_features_is_refused_in_one_line():
    with pytest.raises(ValueError, match="regularizer=gdpp: the discriminator Sequential has no features") as err:
        _module(nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)), {"gdpp": GDPP()})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs,key", [({"weight": -1}, "regularizer.gdpp.weight=-1"),
                                        ({"magnitude_weight": -1}, "regularizer.gdpp.magnitude_weight=-1"),
                                        ({"eig_eps": 0}, "regularizer.gdpp.eig_eps=0")])
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        GDPP(**kwargs)


def test_ring_run_with_gdpp_and_spectral_norm(tmp_path):
    cfg = compose_cfg(["regularizer=[gdpp,spectral_norm]", "max_g_steps=20", "evaluator=none", "log_every_n_steps=2"])
    summary = run(cfg, tmp_path)
    assert summary["g_steps"] == 20 and summary["status"] == "finished"
    gdpp = metric_values(tmp_path, "train/gdpp")
    assert len(gdpp) >= 5
    assert all(math.isfinite(v) and v > 0 for v in gdpp)
    assert max(gdpp) - min(gdpp) > 1e-4
