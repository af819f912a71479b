"""Figures of an MBRCE-AAE / ALAE run: samples, reconstructions, latent interpolations, style mixing.

The four figures of the MBRCE-AAE README (``generate_mbrceaee_samples.py``, ``…_reconstructions.py``,
``…_interp_samples.py``, ``…_stylemix_samples.py``), one PNG each under ``<run>/figures/``, written with
torchvision's ``make_grid``/``save_image``:

- ``samples.png``: G(F(z)) with the EMA nets and ALAE's truncation (ψ = ``model.module.truncation_psi``);
- ``recon.png``: held-out images and their reconstructions G(E(x)), side by side (real | recon pairs);
- ``interp.png``: codes of four held-out images at the corners, bilinear interpolation of w in between;
- ``stylemix.png``: sources on the top row, targets in the left column; each cell takes the coarse styles
  (the first ``cutoff`` style layers: the low resolutions) of its source and the rest of its target.

All at the module's current lod (the top lod after a full run); real images are the held-out split at that lod.
CLI: ``python -m gancollapse.figures_aae <run dir> [--what samples|recon|interp|stylemix|all] [--which last]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gancollapse.aae.alae import mix_styles
from gancollapse.aae.lod import blend_real_images
from gancollapse.data.convert import to_float
from gancollapse.data.progressive import ProgressiveTFRecordDataModule
from gancollapse.models.mbrce_aae import MBRCEAAEModule

log = logging.getLogger("gancollapse")

FIGURES = ("samples", "recon", "interp", "stylemix")


# ---------------------------------------------------------------------------- pure layout helpers
def interleave(a: Tensor, b: Tensor) -> Tensor:
    """[a0, b0, a1, b1, …] from two equally long image batches (real | reconstruction pairs)."""
    if a.shape != b.shape:
        raise ValueError(f"interleave needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return torch.stack([a, b], dim=1).flatten(0, 1)


def bilinear_grid(corners: Tensor, steps: int) -> Tensor:
    """(steps², D) codes bilinearly interpolated between 4 corner codes (top-left, top-right, bottom-left,
    bottom-right), row-major; the corners are reproduced exactly."""
    if corners.shape[0] != 4 or steps < 2:
        raise ValueError(f"bilinear_grid needs 4 corner codes and steps >= 2, got {corners.shape[0]} and {steps}")
    t = torch.linspace(0.0, 1.0, steps, dtype=corners.dtype, device=corners.device)
    top = torch.lerp(corners[0][None], corners[1][None], t[:, None])  # (steps, D)
    bottom = torch.lerp(corners[2][None], corners[3][None], t[:, None])
    return torch.lerp(top[None], bottom[None], t[:, None, None]).flatten(0, 1)


def _save(images: Tensor, path: Path, nrow: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images.float().cpu().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1),
                         padding=2), path)
    return path


# ---------------------------------------------------------------------------- the figures
def samples_figure(module: MBRCEAAEModule, n: int = 64, seed: int = 0,
                   truncation_psi: float | None = None) -> Tensor:
    """n EMA samples with truncation ψ (the module's ``truncation_psi`` by default)."""
    z = torch.randn(n, module.z_dim, generator=torch.Generator().manual_seed(seed))
    psi = module.truncation_psi if truncation_psi is None else truncation_psi
    return module.generate(n, z=z, truncation_psi=psi)


def recon_figure(module: MBRCEAAEModule, real: Tensor) -> Tensor:
    """Held-out images interleaved with their reconstructions (real | recon pairs)."""
    real = real.to(module.device)
    recon = module.reconstruct(real)
    return interleave(_at_lod(module, real), recon)


def interp_figure(module: MBRCEAAEModule, corners: Tensor, steps: int = 8) -> Tensor:
    """Decoded bilinear interpolation between the codes of 4 images (corners of a steps × steps grid)."""
    w = module.encode(corners[:4].to(module.device))
    return module.decode(bilinear_grid(w, steps), noise=False)


def stylemix_figure(module: MBRCEAAEModule, sources: Tensor, targets: Tensor,
                    cutoff: int | None = None) -> Tensor:
    """(T+1)×(S+1) grid: blank corner, sources on top, targets on the left, cell (t, s) = G(coarse styles of s,
    fine styles of t). ``cutoff`` style layers are coarse (default: half of the layers in use at this lod)."""
    layers = module.num_style_layers
    cutoff = module.lod + 1 if cutoff is None else int(cutoff)
    if not 0 < cutoff < layers:
        raise ValueError(f"stylemix cutoff must be in [1, {layers - 1}], got {cutoff}")
    src, tgt = sources.to(module.device), targets.to(module.device)
    w_src, w_tgt = module.encode(src), module.encode(tgt)
    n_s, n_t = w_src.shape[0], w_tgt.shape[0]
    coarse = w_src.repeat(n_t, 1)  # row t, column s → source s
    fine = w_tgt.repeat_interleave(n_s, dim=0)  # → target t
    mixed = module.decode(mix_styles(coarse, fine, cutoff, layers), noise=False)
    src_img, tgt_img = _at_lod(module, src), _at_lod(module, tgt)
    blank = torch.full_like(src_img[:1], -1.0)
    rows = [torch.cat([blank, src_img])]
    for t in range(n_t):
        rows.append(torch.cat([tgt_img[t:t + 1], mixed[t * n_s:(t + 1) * n_s]]))
    return torch.cat(rows)


def _at_lod(module: MBRCEAAEModule, x: Tensor) -> Tensor:
    """Real images as the networks see them at the module's lod/blend."""
    return blend_real_images(x.to(module.device), module.lod, module.blend)


def write_figures(module: MBRCEAAEModule, datamodule: ProgressiveTFRecordDataModule, out_dir: str | Path,
                  what: Sequence[str] = FIGURES, seed: int = 0, n_samples: int = 64, n_pairs: int = 16,
                  steps: int = 8, n_mix: int = 4) -> dict[str, Path]:
    """Render ``what`` (any of :data:`FIGURES`) into ``out_dir``; returns {name: path}."""
    unknown = set(what) - set(FIGURES)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)}: choose from {FIGURES} or all")
    out_dir = Path(out_dir)
    was_training = module.training
    module.eval()
    need_real = max(n_pairs if "recon" in what else 0, 4 if "interp" in what else 0,
                    2 * n_mix if "stylemix" in what else 0)
    real = None
    if need_real:
        images, _ = datamodule.held_out_uint8(need_real, lod=module.lod, seed=seed)
        real = to_float(images)
    paths: dict[str, Path] = {}
    if "samples" in what:
        paths["samples"] = _save(samples_figure(module, n_samples, seed), out_dir / "samples.png",
                                 nrow=max(1, int(round(n_samples ** 0.5))))
    if "recon" in what:
        pairs = min(n_pairs, real.shape[0])
        paths["recon"] = _save(recon_figure(module, real[:pairs]), out_dir / "recon.png",
                               nrow=8 if pairs >= 4 else 2)
    if "interp" in what:
        paths["interp"] = _save(interp_figure(module, real[:4], steps), out_dir / "interp.png", nrow=steps)
    if "stylemix" in what:
        k = min(n_mix, real.shape[0] // 2)
        paths["stylemix"] = _save(stylemix_figure(module, real[:k], real[k:2 * k]), out_dir / "stylemix.png",
                                  nrow=k + 1)
    module.train(was_training)
    for name, path in paths.items():
        log.info("%s: %s", name, path)
    return paths
