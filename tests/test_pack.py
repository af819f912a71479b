"""PacGAN packing: shapes, m = 1 is the unpacked model, the batch-size check, tiny runs with two losses."""

from __future__ import annotations

import pytest
import torch

from gancollapse.nets.dcgan import DCGAN32Discriminator
from gancollapse.regularizers.pack import Pack, pack, unpack_scores
from gancollapse.train import run
from tests.conftest import compose_cfg


def _d(seed: int = 0, **kw) -> DCGAN32Discriminator:
    torch.manual_seed(seed)
    return DCGAN32Discriminator(channels=3, img_size=28, base=2, **kw)


def test_pack_concatenates_consecutive_samples_along_channels():
    x = torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).reshape(4, 3, 2, 2)
    p = pack(x, 2)
    assert p.shape == (2, 6, 2, 2)
    assert torch.equal(p[1, :3], x[2]) and torch.equal(p[1, 3:], x[3])
    assert torch.equal(unpack_scores(torch.tensor([[1.0], [2.0]]), 2), torch.tensor([[1.0], [1.0], [2.0], [2.0]]))


def test_packed_discriminator_sees_m_samples_per_score():
    d = _d()
    Pack(3).apply_to_nets(None, d)
    assert d.features[0].in_channels == 9
    x = torch.randn(6, 3, 28, 28)
    out = d(x)
    assert out.shape == (6, 1)  # one row per image: each pack's score repeated for its 3 members
    assert torch.equal(out[0], out[2]) and not torch.equal(out[2], out[3])
    x2 = x.clone()
    x2[1] = torch.randn(3, 28, 28)  # changing a member changes its whole pack's score, not the other pack's
    out2 = d(x2)
    assert not torch.allclose(out2[:3], out[:3]) and torch.equal(out2[3:], out[3:])


def test_pack_keeps_spectral_norm_on_the_widened_layer():
    d = _d(spectral_norm=True)
    Pack(2).apply_to_nets(None, d)
    assert "weight" in d.features[0].parametrizations and d.features[0].in_channels == 6


def test_m1_is_exactly_the_unpacked_model():
    plain, packed = _d(), _d()
    Pack(1).apply_to_nets(None, packed)
    x = torch.randn(5, 3, 28, 28)  # any batch size
    assert torch.equal(plain(x), packed(x))
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), packed.state_dict().values(), strict=True))


def test_batch_not_divisible_by_m_is_refused():
    d = _d()
    Pack(2).apply_to_nets(None, d)
    with pytest.raises(ValueError, match=r"regularizer.pack.m=2.*dataset.batch_size"):
        d(torch.randn(5, 3, 28, 28))
    with pytest.raises(ValueError, match="regularizer.pack.m must be >= 1"):
        Pack(0)


@pytest.mark.parametrize("loss", ["non_saturating", "hinge"])
def test_packed_gan_trains(tmp_path, loss):
    cfg = compose_cfg(["dataset=stacked_digits", "dataset.img_size=28", "dataset.n_samples=512",
                       "dataset.batch_size=16", f"loss={loss}", "regularizer=pack", "z_dim=8",
                       "model.generator.base=2", "model.discriminator.base=2", "max_g_steps=6", "evaluator=none",
                       "callbacks.progress_bar=null", "log_every_n_steps=2"], tiny=False)
    summary = run(cfg, tmp_path / "run")
    assert summary["g_steps"] == 6 and summary["nonfinite_skips"] == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    first = state["state_dict"]["discriminator.features.0.weight"]
    assert first.shape[1] == 6  # D's first conv saw pairs of RGB images
