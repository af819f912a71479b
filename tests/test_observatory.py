"""Collapse observatory: pure metrics on known inputs; Hessian spectra equal to the dense Hessian's; toy mode
coverage, class coverage and IS on generators with a known answer; the PNG dashboard on a toy run and on
images; and that it leaves the training RNG and BatchNorm statistics untouched."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from gancollapse.build import build_module
from gancollapse.classifier import SmallClassifier, predict_proba, save_classifier, train_classifier
from gancollapse.data.convert import to_float
from gancollapse.data.digits import DigitsDataModule
from gancollapse.instantiate import build_datamodule
from gancollapse.metrics.inception_score import inception_score
from gancollapse.metrics.observatory import (
    CollapseObservatory,
    class_coverage,
    mean_nn_distance,
    objective_losses,
)
from gancollapse.models.distgan import DistGANModule
from gancollapse.nets.mnist import MnistDiscriminator, MnistEncoder, MnistGenerator
from gancollapse.paths import CONF_DIR
from gancollapse.samplers.prior import PriorSampler
from gancollapse.train import run


def test_mean_nn_distance_inception_score_and_coverage():
    pts = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    assert mean_nn_distance(pts) == pytest.approx((1 + math.sqrt(18) + 1) / 3, rel=1e-6)
    assert mean_nn_distance(torch.zeros(5, 1, 2, 2)) == 0.0  # collapsed samples
    # the observatory's IS: one split over its sample
    onehot = torch.eye(10).repeat(3, 1)
    assert inception_score(onehot, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.full((20, 10), 0.1), splits=1)[0] == pytest.approx(1.0, rel=1e-6)
    assert inception_score(torch.eye(4)[[0, 0, 1, 1]], splits=1)[0] == pytest.approx(2.0, rel=1e-6)
    probs = torch.eye(10)[torch.tensor([0] * 90 + [1] * 9 + [2])]
    hist, covered, entropy = class_coverage(probs)
    assert hist[:3].tolist() == [90, 9, 1] and covered == 3  # 1 ≥ 0.1·100/10
    assert entropy == pytest.approx(-(0.9 * math.log(0.9) + 0.09 * math.log(0.09) + 0.01 * math.log(0.01)), rel=1e-6)
    with pytest.raises(ValueError, match="nets"):
        CollapseObservatory(nets=["e"])
    with pytest.raises(ValueError, match="every_n_steps"):
        CollapseObservatory(every_n_steps=0)


def _columns(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_observatory_toy_run_writes_dashboard_and_metrics(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[
            "max_g_steps=30", "callbacks.progress_bar=null", "+callbacks=observatory", "logger=csv",
            "callbacks.observatory.every_n_steps=10", "callbacks.observatory.k=3", "callbacks.observatory.iterations=8",
            "callbacks.observatory.toy_samples=500", "callbacks.observatory.n_spread=128",
            "model.generator.hidden=16", "model.discriminator.hidden=16", "dataset.n_samples=2000",
            "dataset.batch_size=100", "evaluator.every_n_steps=1000", "evaluator.n_samples=500"])
    summary = run(cfg, tmp_path)
    png = tmp_path / "plots" / "observatory.png"
    assert png.is_file() and png.stat().st_size > 10_000
    rows = [r for r in _columns(tmp_path / "metrics.csv") if r.get("observatory/g_eig0")]
    assert [float(r["observatory/g_step"]) for r in rows] == [10.0, 20.0, 30.0]
    for key in ("observatory/d_eig2", "observatory/spread_ratio", "observatory/toy_modes", "observatory/overhead"):
        assert all(r[key] != "" for r in rows), key
    # summary.json reports the last check (the values themselves: the known-answer tests below)
    for key in ("observatory/toy_modes", "observatory/g_eig0", "observatory/d_eig2", "observatory/spread_ratio"):
        assert summary[key] == pytest.approx(float(rows[-1][key]), rel=1e-5), key
    assert summary["observatory/toy_n_modes"] == 8


def _toy_module(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    dm = build_datamodule(cfg)
    torch.manual_seed(0)
    return build_module(cfg), dm


def _dense_hessian_top(loss_fn, params: list[torch.Tensor], k: int) -> torch.Tensor:
    """Top-k eigenvalues of the dense Hessian of ``loss_fn()`` w.r.t. ``params`` (one backward per row)."""
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    rows = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(flat[i], params, retain_graph=True)])
            for i in range(flat.numel())]
    return torch.linalg.eigvalsh(torch.stack(rows).double()).flip(0)[:k]


def test_observatory_eigenvalues_are_the_top_eigenvalues_of_the_loss_hessians(tmp_path):
    """Tiny MLPs and a full Krylov space (iterations = #parameters): Lanczos is exact, so the observatory's
    G and D numbers must equal the dense Hessians' top eigenvalues on its fixed batch (first z draw of its seed)."""
    module, dm = _toy_module(["z_dim=2", "model.generator.hidden=4", "model.generator.depth=2",
                              "model.discriminator.hidden=4", "model.discriminator.depth=2"])
    n_params = max(sum(p.numel() for p in net.parameters()) for net in (module.generator, module.discriminator))
    trainer = _Trainer(tmp_path)
    trainer.datamodule = dm
    module._trainer = trainer
    obs = CollapseObservatory(every_n_steps=1, k=3, iterations=n_params, hessian_batch=32, n_spread=32,
                              toy_samples=100, plot=False, seed=7)
    obs.setup(trainer, module, "fit")
    obs._collect_real(dm.sample(64, seed=0))
    m = obs.evaluate(trainer, module)
    real = obs._real_pool()[:32]
    z = module.sample_z(32, "cpu", torch.Generator().manual_seed(7))
    for name in ("g", "d"):
        params = objective_losses(module, real, z)[name][1]
        top = _dense_hessian_top(lambda name=name: objective_losses(module, real, z)[name][0], params, 3)
        got = torch.tensor([m[f"observatory/{name}_eig{i}"] for i in range(3)], dtype=torch.float64)
        torch.testing.assert_close(got, top, rtol=1e-4, atol=1e-6)


class _AtCentres(nn.Module):
    """A generator collapsed onto three of the ring's modes: G(z) = centre[#positive entries of z[:2]], i.e.
    modes with probabilities 1/4, 1/2, 1/4 under the normal prior."""

    def __init__(self, centres: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("centres", centres)
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.centres[(z[:, 0] > 0).long() + (z[:, 1] > 0).long()]


def test_observatory_toy_coverage_of_a_generator_collapsed_on_three_modes(tmp_path):
    module, dm = _toy_module(["model.generator.hidden=8", "model.discriminator.hidden=8"])
    module.generator = _AtCentres(dm.centers[[0, 3, 5]])
    trainer = _Trainer(tmp_path)
    trainer.datamodule = dm
    module._trainer = trainer
    obs = CollapseObservatory(every_n_steps=1, nets=[], n_spread=128, toy_samples=4000, plot=False)
    obs.setup(trainer, module, "fit")
    obs._collect_real(dm.sample(256, seed=0))
    m = obs.evaluate(trainer, module)
    assert m["observatory/toy_modes"] == 3 and m["observatory/toy_hq_fraction"] == 1.0
    # KL(p̂ ‖ U_8) = ln 8 − H(1/4, 1/2, 1/4) = 1.5 ln 2
    assert m["observatory/toy_reverse_kl"] == pytest.approx(1.5 * math.log(2), abs=0.02)
    assert m["observatory/spread"] == 0.0 and m["observatory/spread_ratio"] == 0.0  # samples coincide
    assert obs.last_hist[[0, 3, 5]].sum() == 4000 and obs.last_hist.sum() == 4000


class _TinyDM:
    """Just enough of a datamodule for the callback: no centres, so the image path is taken."""


def _image_module():
    torch.manual_seed(0)
    return DistGANModule(MnistGenerator(z_dim=3, dim=4, bridge="crop"), MnistDiscriminator(dim=4),
                         MnistEncoder(z_dim=3, dim=4), prior=PriorSampler("uniform"), z_dim=3, schedule_steps=10)


class _Trainer:
    def __init__(self, root):
        self.default_root_dir = str(root)
        self.datamodule = _TinyDM()
        self.callback_metrics = {}
        self.is_global_zero = True
        self.loggers = []


def test_observatory_images_with_classifier_and_no_side_effects(tmp_path):
    clf = tmp_path / "clf.pt"
    torch.manual_seed(1)
    save_classifier(SmallClassifier(channels=1, num_classes=10, img_size=32), clf, {"note": "untrained"})
    module = _image_module()
    trainer = _Trainer(tmp_path)
    module._trainer = None  # log_metrics is a no-op without a trainer
    obs = CollapseObservatory(every_n_steps=1, k=2, iterations=4, hessian_batch=8, n_spread=16, classifier=str(clf),
                              n_classify=50)
    obs.setup(trainer, module, "fit")
    obs._collect_real((torch.rand(16, 1, 28, 28) * 2 - 1, torch.zeros(16)))
    bn_before = {k: v.clone() for k, v in module.named_buffers()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    m = obs.evaluate(trainer, module)
    torch.testing.assert_close(torch.rand(3), expected_next)  # training RNG stream untouched
    for k, v in module.named_buffers():
        torch.testing.assert_close(v, bn_before[k])  # BatchNorm running stats restored
    # values: test_observatory_class_coverage_and_is_of_known_digits and the dense-Hessian test
    for key in ("observatory/is", "observatory/classes_covered", "observatory/g_eig1", "observatory/d_eig1"):
        assert math.isfinite(m[key]), key
    assert module.latest_eval["observatory/is"] == m["observatory/is"]
    out = obs.dashboard(tmp_path / "plots" / "observatory.png")
    assert out.is_file() and out.stat().st_size > 10_000
    # Same seed, same state: the measurement is deterministic.
    again = obs.evaluate(trainer, module)
    assert again["observatory/g_eig0"] == pytest.approx(m["observatory/g_eig0"], rel=1e-5)
    assert again["observatory/is"] == m["observatory/is"]


class _Tiled(nn.Module):
    """A generator that emits its pool of images in order, tiled to the batch size (whatever z is)."""

    def __init__(self, pool: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("pool", pool)
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.pool[torch.arange(len(z)) % len(self.pool)]


def test_observatory_class_coverage_and_is_of_known_digits(tmp_path):
    """A generator of correctly classified 0s, 1s and 2s in equal numbers covers exactly classes 0-2 (histogram
    100/100/100) with the IS of the classifier's p(y|x) on them (≤ 3); one repeated image covers 1 class, IS 1."""
    data = DigitsDataModule(img_size=28).load()
    images, labels = data.images, data.labels
    clf, _ = train_classifier(images, labels, 10, epochs=1, batch_size=32, lr=2e-3)
    path = tmp_path / "clf.pt"
    save_classifier(clf, path, {"dataset": "digits-28px-1ch"})
    x = to_float(images)
    right = predict_proba(clf, x).argmax(1) == labels
    pool = torch.stack([x[right & (labels == c)][:30] for c in range(3)], dim=1).flatten(0, 1)  # 0,1,2,0,1,2,…
    expected_is = inception_score(predict_proba(clf, pool.repeat(4, 1, 1, 1)[:300]), splits=1)[0]
    assert 2.0 < expected_is <= 3.0 + 1e-9
    for gen, hist, is_ in ((_Tiled(pool), [100, 100, 100], expected_is), (_Tiled(pool[:1]), [300, 0, 0], 1.0)):
        module = _image_module()
        module.generator = gen
        module._trainer = None
        obs = CollapseObservatory(every_n_steps=1, nets=[], n_spread=16, classifier=str(path), n_classify=300, plot=False)
        obs.setup(_Trainer(tmp_path), module, "fit")
        obs._collect_real((torch.rand(16, 1, 28, 28) * 2 - 1, torch.zeros(16)))
        m = obs.evaluate(_Trainer(tmp_path), module)
        assert obs.last_hist.tolist() == hist + [0] * 7
        assert m["observatory/classes_covered"] == sum(h > 0 for h in hist)
        assert m["observatory/is"] == pytest.approx(is_, rel=1e-6)


def test_observatory_without_classifier_skips_with_reason(tmp_path, caplog):
    module = _image_module()
    obs = CollapseObservatory(every_n_steps=1, k=2, iterations=4, hessian_batch=8, n_spread=16, plot=False)
    with caplog.at_level("INFO", logger="gancollapse"):
        obs.setup(_Trainer(tmp_path), module, "fit")
    assert "classes" in obs.skipped and "no classifier configured" in caplog.text


def test_observatory_auto_classifier_missing_skips(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GANCOLLAPSE_CACHE", str(tmp_path / "cache"))

    class DM:
        name = "digits"

        def describe(self) -> str:
            return "digits-28px-1ch"

    trainer = _Trainer(tmp_path)
    trainer.datamodule = DM()
    obs = CollapseObservatory(classifier="auto", plot=False)
    with caplog.at_level("INFO", logger="gancollapse"):
        obs.setup(trainer, _image_module(), "fit")
    assert obs.classifier is None and "no classifier at" in obs.skipped["classes"]
