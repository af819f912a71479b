"""Config consistency: every dataset's evaluator takes the common keys, the TFRecord datamodule reads its
channels and resolution from ``<name>-meta.json``, and the image evaluator's sizes are CPU-sane by default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from gancollapse.build import build_module
from gancollapse.data.tfrecord import TFRecordDataModule
from gancollapse.data.tfrecord_meta import meta_path, resolve_from_meta
from gancollapse.data.tfrecord_writer import write_tfrecords
from gancollapse.instantiate import build_datamodule
from gancollapse.metrics.evaluator import Evaluator
from gancollapse.metrics.image_callback import ImageEvaluator, eval_sizes_message, resolve_eval_sizes
from gancollapse.paths import CONF_DIR
from tests.conftest import compose_cfg, random_images

DATASETS = sorted(p.stem for p in (Path(CONF_DIR) / "dataset").glob("*.yaml"))
COMMON = ("every_n_steps", "every_n_epochs", "n_samples", "seed", "monitor", "monitor_mode")
OVERRIDES = {"every_n_steps": "7", "every_n_epochs": "3", "n_samples": "64", "seed": "5", "monitor": "null",
             "monitor_mode": "max"}


def _dataset_overrides(dataset: str) -> list[str]:
    """Datasets whose ``path`` is mandatory (???) get a dummy one; only the evaluator node is used."""
    return [f"dataset={dataset}"] + (["dataset.path=/nonexistent"] if dataset in ("tfrecord", "image_folder") else [])


def test_the_common_keys_are_the_base_evaluators():
    assert tuple(Evaluator.__init__.__code__.co_varnames[1:7]) == COMMON


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_evaluator_has_and_accepts_the_common_keys(dataset):
    """(evaluator=none composes to an empty node on purpose: train.py reads an empty node as "no evaluator".)"""
    cfg = compose_cfg(_dataset_overrides(dataset), tiny=False)
    missing = [k for k in COMMON if k not in cfg.evaluator]
    assert not missing, f"evaluator/default/{dataset}.yaml lacks {missing}"
    ev = instantiate(cfg.evaluator)  # needs no files for any dataset: data and extractors load at setup
    assert isinstance(ev, Evaluator)
    over = compose_cfg(_dataset_overrides(dataset) + [f"evaluator.{k}={v}" for k, v in OVERRIDES.items()], tiny=False)
    ev = instantiate(over.evaluator)
    assert (ev.every_n_steps, ev.every_n_epochs, ev.n_samples, ev.seed, ev.monitor, ev.monitor_mode) == (7, 3, 64, 5, None, "max")


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_dataset_target_names_the_module_that_defines_its_class(dataset):
    """``_target_`` points at the class's own module, not at a module that only re-exports it (the old
    ``gancollapse.data.images`` path): the config tree mirrors src/."""
    target = OmegaConf.load(Path(CONF_DIR) / "dataset" / f"{dataset}.yaml")["_target_"]
    module, name = target.rsplit(".", 1)
    assert get_class(target).__module__ == module, f"conf/dataset/{dataset}.yaml: {name} lives elsewhere"


@pytest.mark.parametrize("name", ["toy", "image", "aae", "aae_digits", "aae_celeba256"])
def test_every_named_evaluator_has_the_common_keys(name):
    cfg = compose_cfg(["dataset=digits", f"evaluator={name}", "evaluator.every_n_steps=7"], tiny=False)
    assert all(k in cfg.evaluator for k in COMMON)
    assert instantiate(cfg.evaluator).every_n_steps == 7


# ---------------------------------------------------------------------------- TFRecord metadata
def _write_grey_set(out: Path, sizes: tuple[int, int] = (32, 16), n: int = 24) -> dict:
    """A 1-channel set at two resolutions (largest first), written with the project's own writer."""
    images = random_images(n, 1, sizes[0])
    return write_tfrecords([(images, torch.arange(n) % 10)], out, "grey", min_resolution=sizes[1], parts=1)


def _tfrecord_cfg(path: Path, *extra: str):
    return compose_cfg(["dataset=tfrecord", f"dataset.path={path}", "dataset.tfrecord_name=grey", "dataset.batch_size=8",
                        "dataset.verify=false", "model.generator.base=4", "model.discriminator.base=4", "z_dim=8",
                        *extra], tiny=False)


def test_tfrecord_size_and_channels_come_from_the_metadata(tmp_path):
    meta = _write_grey_set(tmp_path)
    assert meta["resolutions"] == [32, 16] and meta["channels"] == 1
    cfg = _tfrecord_cfg(tmp_path)
    assert (cfg.dataset.img_size, cfg.dataset.channels) == (32, 1)  # the largest level, the set's channels
    dm = build_datamodule(cfg)
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 32, 32)
    module = build_module(cfg)  # DCGAN-32: its img_size and channels interpolate the dataset's
    assert module.generate(2).shape == (2, 1, 32, 32)
    # an explicit level is honoured, channels still from the metadata
    small = _tfrecord_cfg(tmp_path, "dataset.img_size=16")
    dm = build_datamodule(small)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))[0].shape == (8, 1, 16, 16)
    assert (small.model.generator.img_size, small.model.generator.channels) == (16, 1)


def test_tfrecord_values_contradicting_the_metadata_name_key_file_and_choices(tmp_path):
    _write_grey_set(tmp_path)
    where = str(meta_path(tmp_path, "grey"))
    with pytest.raises(ValueError, match="dataset.channels=3") as err:
        build_datamodule(_tfrecord_cfg(tmp_path, "dataset.channels=3")).setup("fit")
    assert where in str(err.value) and "1" in str(err.value).split(where)[-1]
    with pytest.raises(ValueError, match="dataset.img_size=64") as err:
        build_datamodule(_tfrecord_cfg(tmp_path, "dataset.img_size=64")).setup("fit")
    assert where in str(err.value) and "[32, 16]" in str(err.value)
    # the datamodule built directly: None reads the metadata, explicit values are checked the same way
    assert (TFRecordDataModule(path=str(tmp_path), tfrecord_name="grey").img_size, resolve_from_meta(tmp_path, "grey")) == (32, (32, 1))
    with pytest.raises(ValueError, match="dataset.channels=3"):
        resolve_from_meta(tmp_path, "grey", channels=3)


# ---------------------------------------------------------------------------- evaluator sizes
def test_auto_eval_sizes_follow_the_device_and_explicit_values_win():
    assert resolve_eval_sizes("auto", "auto", "cuda") == (10_000, 50_000)
    assert resolve_eval_sizes("auto", "auto", "cuda:1") == (10_000, 50_000)
    assert resolve_eval_sizes("auto", "auto", "cpu") == (2_000, 10_000)
    assert resolve_eval_sizes(64, "auto", "cpu") == (64, 10_000)
    assert resolve_eval_sizes(50_000, 50_000, "cpu") == (50_000, 50_000)
    assert resolve_eval_sizes("512", 1000, torch.device("cuda")) == (512, 1000)
    line = eval_sizes_message(2_000, 10_000, "cpu", ("n_samples", "n_real"))
    assert "2,000 samples vs 10,000 real" in line and "CPU" in line
    assert "GPU setting" in line and "evaluator.n_samples=50000 evaluator.n_real=50000" in line
    assert "\n" not in line


def test_image_yaml_defaults_to_auto_and_cpu_sized_datasets_keep_their_numbers():
    for dataset in ("cifar10", "celeba", "mnist", "tfrecord", "image_folder"):
        ev = compose_cfg(_dataset_overrides(dataset), tiny=False).evaluator
        assert (ev.n_samples, ev.n_real) == ("auto", "auto"), dataset
    digits = compose_cfg(["dataset=digits"], tiny=False).evaluator
    assert (digits.n_samples, digits.n_real) == (1000, 1797)
    stacked = compose_cfg(["dataset=stacked_digits"], tiny=False).evaluator
    assert (stacked.n_samples, stacked.n_real) == (10000, 10000)



def test_auto_sizes_are_decided_once_from_the_device_and_announced(caplog):
    ev = ImageEvaluator(n_samples="auto", n_real="auto")
    with caplog.at_level("INFO", logger="gancollapse"):
        ev._settle_sizes(torch.device("cpu"))
        ev._settle_sizes(torch.device("cuda"))  # decided at the first evaluation only
    assert (ev.n_samples, ev.n_real) == (2_000, 10_000)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evaluator: FID")]
    assert len(lines) == 1 and "GPU setting" in lines[0]
    fixed = ImageEvaluator(n_samples=300, n_real="auto")
    fixed._settle_sizes("cuda")
    assert (fixed.n_samples, fixed.n_real) == (300, 50_000)
    scored = ImageEvaluator(n_samples="auto", n_real=400)  # python -m gancollapse.sample sets its own count
    scored.n_samples = 123
    scored._settle_sizes("cpu")
    assert (scored.n_samples, scored.n_real) == (123, 400)
    with pytest.raises(ValueError, match="evaluator.n_real"):
        ImageEvaluator(n_real="many")


def test_auto_latents_are_redrawn_when_the_device_decides_other_sizes(monkeypatch):
    class _Stop(Exception):
        pass

    class _Module:
        z_dim, device = 4, torch.device("cpu")

        @staticmethod
        def sample_z(n, device, gen):  # noqa: ANN001, ANN205
            return torch.randn(n, 4, generator=gen)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # setup's guess: the CUDA sizes
    ev = ImageEvaluator(n_samples="auto", n_real="auto", grid_size=4)
    monkeypatch.undo()
    ev._draw_latents(_Module())
    assert len(ev.eval_z) == 10_000

    def stop(device):  # noqa: ANN001, ANN202
        raise _Stop

    ev._prepare = stop
    with pytest.raises(_Stop):
        ev.compute(_Module())  # the module is on the CPU: 2,000 latents, the same seeded draw as setup's would be
    assert (ev.n_samples, ev.n_real, len(ev.eval_z)) == (2_000, 10_000, 2_000)
    fresh = ImageEvaluator(n_samples=2_000, n_real=10_000, grid_size=4)
    fresh._draw_latents(_Module())
    assert torch.equal(fresh.eval_z, ev.eval_z) and torch.equal(fresh.grid_z, ev.grid_z)
