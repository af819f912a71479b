"""Shared test helpers: compose the real Hydra config tree with small, fast overrides; tiny data, stand-in
generators and losses, and checks of what a command printed or wrote."""

from __future__ import annotations

import csv
import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from gancollapse.data.digits import DigitsDataModule
from gancollapse.data.tfrecord_writer import split_indices, write_tfrecords
from gancollapse.losses import NonSaturatingLoss
from gancollapse.paths import CONF_DIR

torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
# Small nets so a few hundred steps take seconds on one core.
TINY = [
    "model.generator.hidden=64",
    "model.discriminator.hidden=64",
    "dataset.n_samples=2000",
    "dataset.batch_size=200",
    "callbacks.progress_bar=null",
    "log_every_n_steps=10",
]

# A tiny DCGAN-32 with the hinge loss (add the dataset, z_dim and the budget).
TINY_DCGAN = ["model=dcgan32", "loss=hinge", "optim=adam", "model.generator.base=4", "model.discriminator.base=4",
              "callbacks.progress_bar=null"]


def compose_cfg(overrides: list[str] | None = None, tiny: bool = True):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=(TINY if tiny else []) + list(overrides or []))


def run_cli(args: list[str], cwd: Path, timeout: int = 300, module: str = "gancollapse.train") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _one_line_errors_whatever_the_shell_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests of the one-line error path must not depend on the caller's HYDRA_FULL_ERROR (.ci/run
    exports it so CI logs keep full tracebacks): a test that wants tracebacks sets it itself."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as module ``name`` (registered in ``sys.modules``: dataclasses look their
    module up there)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def metrics_csv(run_dir: Path, key: str | None = None) -> list[dict[str, str]]:
    """The rows of a run's ``metrics.csv``; with ``key``, only the rows that hold a value of it."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if key is None or row.get(key)]


def metric_values(run_dir: Path, key: str) -> list[float]:
    """The values of ``key`` a run logged to its ``metrics.csv``, in order."""
    return [float(row[key]) for row in metrics_csv(run_dir, key)]


def error_line(out: str, with_fix: bool = True) -> str:
    """The last line of a command's output, which must be its only ``error:`` line, with no traceback before it;
    ``with_fix``: in the form ``error: <what> — <fix>``."""
    lines = [line for line in out.splitlines() if line.strip()]
    assert "Traceback" not in out, out[-3000:]
    assert lines and lines[-1].startswith("error: ") and (" — " in lines[-1] or not with_fix), out[-3000:]
    assert sum(line.startswith("error:") for line in lines) == 1, out[-3000:]
    return lines[-1]


def is_png(path: Path) -> bool:
    """``path`` holds an intact PNG image of non-zero width."""
    with Image.open(path) as im:
        im.verify()
        return im.format == "PNG" and im.size[0] > 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a DDP rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """n uniformly random uint8 images (n, channels, size, size), drawn from ``seed``."""
    return torch.randint(0, 256, (n, channels, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def nan_loss(nan_at: Callable[[int], bool], generator_too: bool = False) -> type[NonSaturatingLoss]:
    """A non-saturating loss whose D loss is NaN at the D steps n (1, 2, … in this process) where ``nan_at(n)``
    holds, and with ``generator_too`` G's loss from then on as well; bind it to a module-level name and pass it
    as ``loss._target_=<module>.<name>``."""

    class NaNLoss(NonSaturatingLoss):
        calls = 0

        def d_loss(self, real, fake):
            type(self).calls += 1
            loss = super().d_loss(real, fake)
            return loss * float("nan") if nan_at(type(self).calls) else loss

        def g_loss(self, fake):
            loss = super().g_loss(fake)
            return loss * float("nan") if generator_too and nan_at(type(self).calls) else loss

    return NaNLoss


class StandInGenerator(torch.nn.Module):
    """What the image evaluators need of a trained module, on the CPU: ``device``, ``latest_eval`` (subclasses
    add ``generate(n, z)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.latest_eval: dict[str, float] = {}

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


class PriorStandIn(StandInGenerator):
    """A stand-in that also draws its latents as a trained module does: N(0, I) of size ``z_dim`` through the
    platform's prior (subclasses set ``z_dim`` and ``generate(n, z)``)."""

    z_dim = 0

    def __init__(self) -> None:
        super().__init__()
        from gancollapse.samplers.prior import PriorSampler

        self.sampler = PriorSampler()

    def sample_z(self, n: int, device, generator=None) -> torch.Tensor:  # noqa: ANN001
        return self.sampler.prior(n, self.z_dim, device, generator)


# ---------------------------------------------------------------------------- MBRCE-AAE / ALAE on tiny TFRecords
N_IMAGES, N_TEST, BATCH = 160, 32, 32  # 128 training images: 4 batches per epoch


@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    """160 scikit-learn digits at 16 px (lods 0–2) in the progressive TFRecord layout, 32 held out."""
    out = tmp_path_factory.mktemp("tfr")
    data = DigitsDataModule(img_size=16, channels=1).load()
    images, labels = data.images[:N_IMAGES], data.labels[:N_IMAGES]
    write_tfrecords([(images, labels)], out, "tiny", min_resolution=4, parts=1,
                    test_indices=split_indices(N_IMAGES, N_TEST, 0), split_seed=0, extra_meta={"num_classes": 10})
    return out


def aae_overrides(data, cache, experiment: str = "mbrce_aae_digits", epochs=(1, 1, 2)) -> list[str]:
    """A tiny MBRCE-AAE / ALAE run on :func:`digits16` (16 px, lods 0–2, 4 batches per epoch)."""
    return [
        f"experiment={experiment}", f"dataset.path={data}", "dataset.tfrecord_name=tiny", "dataset.prepare=null",
        "z_dim=8", "model.module.mapping_layers=2", "model.module.channels=[16,8,8]",
        f"model.module.epochs_per_lod=[{','.join(map(str, epochs))}]", f"model.module.batch_sizes={BATCH}",
        f"trainer.max_epochs={sum(epochs)}", "callbacks.progress_bar=null", "log_every_n_steps=2",
        "ckpt_every_n_steps=1000", f"evaluator.cache_dir={cache}", "evaluator.n_samples=64", "evaluator.n_real=128",
        "evaluator.metrics.prdc.n=64", "evaluator.metrics.kid.subset_size=32", "evaluator.metrics.kid.subsets=5", "evaluator.batch_size=64",
        "evaluator.grid_size=16", "evaluator.classifier_epochs=1",
    ]
