"""The Evaluator base (schedule in G steps, end-of-training evaluation, publishing, best tracking, resume) and
the ``evaluator`` config group that selects one per dataset."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from gancollapse.metrics.evaluator import Evaluator
from gancollapse.metrics.fid import FID
from gancollapse.metrics.image_callback import ImageEvaluator
from gancollapse.metrics.toy_callback import ToyEvaluator
from gancollapse.paths import CONF_DIR
from gancollapse.runner import build_callbacks
from tests.conftest import PriorStandIn

DATASETS = ["celeba", "cifar10", "digits", "grid", "image_folder", "mnist", "ring", "stacked_mnist", "tfrecord"]
TOYS = {"ring", "grid"}


class _Scripted(Evaluator):
    """compute() returns ``score`` looked up by G step."""

    def __init__(self, scores: dict[int, float], **kw) -> None:
        super().__init__(**kw)
        self.scores = scores
        self.after: list[int] = []
        self.finished = 0

    def compute(self, pl_module) -> dict[str, float]:  # noqa: ANN001
        return {"score": self.scores[pl_module.g_steps]}

    def after_evaluate(self, trainer, pl_module, metrics, step) -> None:  # noqa: ANN001
        self.after.append(step)

    def finish(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.finished += 1


class _Module:
    def __init__(self) -> None:
        self.g_steps = 0
        self.latest_eval: dict[str, float] = {}
        self.logged: list[dict[str, float]] = []

    def log_metrics(self, metrics) -> None:  # noqa: ANN001
        self.logged.append(dict(metrics))


class _Trainer:
    def __init__(self) -> None:
        self.callback_metrics: dict[str, torch.Tensor] = {}
        self.checkpoint_callbacks: list = []
        self.current_epoch = 0


def _train(ev: Evaluator, module: _Module, trainer: _Trainer, steps: range) -> None:
    for step in steps:
        module.g_steps = step
        ev.on_train_batch_end(trainer, module, None, None, 0)
    ev.on_train_end(trainer, module)


def test_schedule_in_g_steps_end_evaluation_and_publishing():
    ev = _Scripted({4: 3.0, 8: 1.0, 10: 2.0}, every_n_steps=4, monitor="score")
    module, trainer = _Module(), _Trainer()
    _train(ev, module, trainer, range(1, 11))
    assert [h["eval/g_step"] for h in ev.history] == [4.0, 8.0, 10.0]  # every 4 G steps, then the end
    assert ev.after == [4, 8, 10] and ev.finished == 1
    assert module.latest_eval["score"] == 2.0 and module.latest_eval["eval/g_step"] == 10.0
    assert [m["score"] for m in module.logged] == [3.0, 1.0, 2.0]
    assert float(trainer.callback_metrics["score"]) == 2.0
    assert module.latest_eval["best/score"] == 1.0 and module.latest_eval["best/score_step"] == 8.0


def test_monitor_mode_max_and_no_monitor():
    ev = _Scripted({2: 3.0, 4: 5.0, 6: 4.0}, every_n_steps=2, monitor="score", monitor_mode="max")
    module = _Module()
    _train(ev, module, _Trainer(), range(1, 7))
    assert ev.best == {"best/score": 5.0, "best/score_step": 4.0}
    plain = _Scripted({3: 1.0}, every_n_steps=0)  # 0: only at the end
    module = _Module()
    _train(plain, module, _Trainer(), range(1, 4))
    assert [h["eval/g_step"] for h in plain.history] == [3.0] and not any(k.startswith("best/") for k in module.latest_eval)


def test_resume_keeps_best_and_reports_at_the_end_even_without_new_steps():
    ev = _Scripted({5: 2.0}, every_n_steps=5, monitor="score")
    _train(ev, _Module(), _Trainer(), range(1, 6))
    resumed = _Scripted({5: 2.0}, every_n_steps=5, monitor="score")
    resumed.load_state_dict(ev.state_dict())
    module = _Module()  # latest_eval is not checkpointed
    module.g_steps = 5
    resumed.on_train_end(_Trainer(), module)
    assert module.latest_eval["score"] == 2.0 and module.latest_eval["best/score_step"] == 5.0


def test_common_keys_are_accepted_by_every_evaluator():
    common = [p for p in inspect.signature(Evaluator.__init__).parameters if p != "self"]
    assert common == ["every_n_steps", "every_n_epochs", "n_samples", "seed", "monitor", "monitor_mode", "samplers",
                      "n_calibration"]
    values = {"every_n_steps": 7, "every_n_epochs": None, "n_samples": 64, "seed": 3, "monitor": "x",
              "monitor_mode": "max"}
    for cls in (ToyEvaluator, ImageEvaluator):
        ev = cls(**values)
        assert (ev.every_n_steps, ev.n_samples, ev.seed, ev.monitor, ev.monitor_mode) == (7, 64, 3, "x", "max")
    with pytest.raises(ValueError, match="evaluator.monitor_mode"):
        ToyEvaluator(monitor_mode="best")
    with pytest.raises(ValueError, match="evaluator.every_n_steps"):
        ImageEvaluator(every_n_steps=-1)


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("dataset", DATASETS)
def test_each_dataset_selects_its_evaluator(dataset):
    cfg = _compose([f"dataset={dataset}"])
    assert "evaluator" not in cfg.dataset and "monitor" not in cfg.dataset
    ev = instantiate(cfg.evaluator)
    assert isinstance(ev, ToyEvaluator if dataset in TOYS else ImageEvaluator)
    assert ev.monitor == (None if dataset in TOYS else "fid")


def test_digits_evaluator_is_cpu_sized_and_unchanged():
    ev = _compose(["dataset=digits"]).evaluator
    assert (ev.every_n_steps, ev.n_samples, ev.n_real, ev.feature, ev.metrics.prdc.n, ev.classifier) == (500, 1000, 1797, "tiny", 1000, None)
    ring = _compose([]).evaluator
    assert (ring.every_n_steps, ring.n_samples, ring.threshold, ring.min_fraction) == (250, 10000, 3.0, 0.008)


def _kinds(cfg) -> list[str]:
    from gancollapse.build import build_module

    cbs = build_callbacks(cfg, Path("/nonexistent"), build_module(cfg))
    return [type(c).__name__ + (f"({c.monitor})" if isinstance(c, ModelCheckpoint) and c.monitor else "") for c in cbs]


def test_build_callbacks_reads_the_evaluator_group():
    assert "ImageEvaluator" in _kinds(_compose(["dataset=digits"]))
    assert "ModelCheckpoint(fid)" in _kinds(_compose(["dataset=digits"]))
    assert "ModelCheckpoint(fid)" not in _kinds(_compose(["dataset=digits", "evaluator.monitor=null"]))
    off = _kinds(_compose(["dataset=digits", "evaluator=none"]))
    assert not any("Evaluator" in k or "(fid)" in k for k in off)
    toy = _kinds(_compose([]))
    assert "ToyEvaluator" in toy and not any("ModelCheckpoint(" in k for k in toy)


def test_stale_dataset_evaluator_keys_fail_naming_the_new_group():
    cfg = _compose(["+dataset.evaluator.every_n_steps=10"])
    with pytest.raises(ValueError, match="evaluator.every_n_steps"):
        build_callbacks(cfg, Path("/nonexistent"), None)


def test_every_dataset_has_a_default_evaluator_choice():
    """``evaluator: default/${dataset}`` in train.yaml needs conf/evaluator/default/<dataset>.yaml."""
    names = {p.stem for p in (Path(CONF_DIR) / "dataset").glob("*.yaml")}
    missing = sorted(n for n in names if not (Path(CONF_DIR) / "evaluator" / "default" / f"{n}.yaml").is_file())
    assert not missing, f"add conf/evaluator/default/<name>.yaml for {missing}"


class _NoisyG(PriorStandIn):
    """A generator with stochastic inputs (as ALAE's noise): G(z) = tanh(pattern(z) + 0.3·ε), ε ~ N(0, I)
    from the global RNG."""

    z_dim = 4

    def generate(self, n: int, z: torch.Tensor, batch_size: int = 10_000) -> torch.Tensor:
        pattern = z.repeat_interleave(256, dim=1).reshape(n, 1, 32, 32)
        return torch.tanh(pattern + 0.3 * torch.randn(n, 1, 32, 32))


def test_image_evaluation_draws_the_same_noise_whatever_came_before(tmp_path):
    """The end of training and a later evaluation of its checkpoint must compute the same numbers: G's noise is
    drawn from the evaluator's seed after the extractor and real statistics are ready, not from wherever the
    global stream happens to be (building an extractor, a training step)."""
    from gancollapse.data.digits import DigitsDataModule

    g, dm = _NoisyG(), DigitsDataModule(img_size=32)

    def evaluator() -> ImageEvaluator:
        ev = ImageEvaluator(n_samples=64, n_real=64, feature="tiny", grid_size=0, batch_size=32,
                            cache_dir=str(tmp_path), metrics={"fid": FID()})
        ev.datamodule = dm
        ev._draw_latents(g)
        return ev

    torch.manual_seed(0)
    fresh = evaluator().compute(g)["fid"]  # builds the extractor and the real statistics first
    warm = evaluator()
    warm.compute(g)
    torch.manual_seed(1)
    again = warm.compute(g)["fid"]  # prepared already, another global stream
    assert fresh == again


def test_evaluation_leaves_the_training_rng_untouched():
    class _Draws(_Scripted):
        def compute(self, pl_module) -> dict[str, float]:  # noqa: ANN001
            return {"score": float(torch.rand(()))}

    ev, module, trainer = _Draws({}, every_n_steps=1), _Module(), _Trainer()
    module.g_steps = 1
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    ev.evaluate(trainer, module)
    assert torch.equal(torch.random.get_rng_state(), before)
