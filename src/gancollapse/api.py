"""Public loading API: ``gancollapse.load(path) -> RunHandle``.

Tests, scripts and users load runs only through this: the run is rebuilt from its saved ``config.yaml``
with the same builders as training, then the checkpoint's weights are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from gancollapse.build import build_module, find_checkpoint, sampler_config, with_run_prior
from gancollapse.data import held_out_real
from gancollapse.instantiate import build_datamodule
from gancollapse.models.gan import GANModule
from gancollapse.runio import check_targets, load_checkpoint


@dataclass
class RunHandle:
    """A trained run: its config, module (nets + regularizer state) and checkpoint path."""

    cfg: DictConfig
    module: GANModule
    run_dir: Path
    checkpoint: Path | None

    @property
    def generator(self) -> nn.Module:
        return self.module.generator

    @property
    def discriminator(self) -> nn.Module:
        return self.module.discriminator

    @property
    def z_dim(self) -> int:
        return self.module.z_dim

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: torch.device | str) -> RunHandle:
        self.module.to(device)
        return self

    def datamodule(self):
        """The run's datamodule (toy data is regenerated from its seed; image sets read from disk)."""
        return build_datamodule(self.cfg)

    def make_sampler(self, sampler: DictConfig | dict | str | None = None, fit: bool = True,
                     n_calibration: int = 5000, seed: int = 0):  # noqa: ANN201
        """The run's training prior (``sampler=None``), or a sampler from a config node /
        ``conf/sampler/<name>.yaml`` with the run's prior (the chains must use the prior G was trained on),
        fitted (``fit``) as ``python -m gancollapse.sample`` fits it: D's calibrator on ``n_calibration``
        held-out real samples (:func:`held_out_real`) and as many generated ones."""
        if sampler is None:
            return self.module.prior
        node = sampler_config(sampler, self.cfg) if isinstance(sampler, str) else with_run_prior(OmegaConf.create(sampler), self.cfg)
        built = instantiate(node)
        if fit and hasattr(built, "fit"):
            real = held_out_real(self.datamodule(), int(n_calibration), seed=20_000 + int(seed))
            with torch.enable_grad():  # callers may hold no_grad; the calibrator's fit is an optimisation
                built.fit(self.generator, self.discriminator, real, self.z_dim, seed=int(seed))
        return built

    def sample_z(self, n: int, sampler=None, seed: int | None = None) -> Tensor:  # noqa: ANN001
        s = self.make_sampler(sampler, seed=seed or 0) if not hasattr(sampler, "sample") else sampler
        self.module.eval()
        return s.sample(self.generator, self.discriminator, n, self.z_dim, self.device, seed=seed)

    def sample(self, n: int, sampler=None, seed: int | None = None, batch_size: int = 10_000) -> Tensor:  # noqa: ANN001
        """n generated samples, G in eval mode; ``sampler`` (a name, config or built sampler) refines z (default:
        the prior); a name or config is built and fitted by :meth:`make_sampler`."""
        z = self.sample_z(n, sampler, seed)
        with torch.no_grad():
            return self.module.generate(n, z=z, batch_size=batch_size)


def load(path: str | Path, which: str = "best", map_location: str | torch.device = "cpu",
         trusted: bool = False) -> RunHandle:
    """Load a run from its directory (``best.ckpt``, else ``last.ckpt``) or from a ``.ckpt`` file in it.

    Safe for runs from elsewhere: unless ``trusted``, the run's ``_target_`` values must name gancollapse or the
    libraries it builds on (:func:`gancollapse.runio.check_targets`), and the checkpoint loads with
    ``weights_only=True`` (tensors and plain values; a pickled object is refused, never run).

    Raises FileNotFoundError naming what is missing when the path is not a run directory, RunError for a
    config naming other code, CheckpointError for a corrupt checkpoint or one holding pickled objects.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".ckpt":
        ckpt, run_dir = path, path.parent.parent
    else:
        run_dir, ckpt = path, find_checkpoint(path, which)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {run_dir} is not a gancollapse run directory "
                                "(expected config.yaml and checkpoints/ written by `python -m gancollapse.train`)")
    cfg = OmegaConf.load(cfg_path)
    if not trusted:
        check_targets(cfg, cfg_path)
    module = build_module(cfg)
    if ckpt is not None:
        state = load_checkpoint(ckpt, map_location=map_location)
        module.load_state_dict(state["state_dict"])
        module.on_load_checkpoint(state)
    module.to(map_location).eval()
    return RunHandle(cfg=cfg, module=module, run_dir=run_dir, checkpoint=ckpt)
