"""Matplotlib helpers shared by callbacks and the sweep report (headless, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402


def _limits(real: Tensor, centers: Tensor | None) -> tuple[float, float]:
    ref = centers if centers is not None else real
    span = float(ref.abs().max()) if len(ref) else 1.0
    return -1.5 * max(span, 1.0), 1.5 * max(span, 1.0)


def scatter_frame(real: Tensor, fake: Tensor, path: Path, title: str = "", centers: Tensor | None = None) -> Path:
    """Real points (blue) and generated points (red) on fixed axes, saved as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lo, hi = _limits(real, centers)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    ax.scatter(real[:, 0], real[:, 1], s=2, c="tab:blue", alpha=0.5, label="real")
    ax.scatter(fake[:, 0].clamp(lo, hi), fake[:, 1].clamp(lo, hi), s=2, c="tab:red", alpha=0.5, label="generated")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=8)
    ax.legend(loc="upper right", fontsize=6, markerscale=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_gif(frames: Sequence[Path], path: Path, duration_ms: int = 200) -> Path:
    """Assemble PNG frames into an animated GIF (the last frame is held longer)."""
    images = [Image.open(f).convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    durations = [duration_ms] * (len(images) - 1) + [duration_ms * 5]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def image_grid(paths: Sequence[Path], titles: Sequence[str], path: Path, ncols: int = 4) -> Path:
    """Tile existing PNGs with titles into one figure (sweep report)."""
    n = len(paths)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.2 * nrows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p, t in zip(axes.flat, paths, titles, strict=False):
        ax.imshow(Image.open(p))
        ax.set_title(t, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
