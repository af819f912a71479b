"""Matplotlib helpers shared by callbacks and the sweep report (headless, Agg backend)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402

#: characters per title line in :func:`image_grid` (3-inch panels at 7 pt)
TITLE_WIDTH = 42


def count_label(n: float | None, noun: str, plural: str | None = None) -> str:
    """``1 mode``, ``3 modes``, ``— modes`` (None/NaN): the noun agrees with the count."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return f"— {plural or noun + 's'}"
    return f"{n:.0f} {noun if round(n) == 1 else plural or noun + 's'}"


def _limits(real: Tensor, centers: Tensor | None) -> tuple[float, float]:
    ref = centers if centers is not None else real
    span = float(ref.abs().max()) if len(ref) else 1.0
    return -1.5 * max(span, 1.0), 1.5 * max(span, 1.0)


def scatter_frame(real: Tensor, fake: Tensor, path: Path, title: str = "", centers: Tensor | None = None) -> Path:
    """Real points (blue) and generated points (red) on fixed axes, saved as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lo, hi = fake_limits(fake, *_limits(real, centers))
    finite = torch.isfinite(fake).all(dim=1)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    ax.scatter(real[:, 0], real[:, 1], s=2, c="tab:blue", alpha=0.5, label="real")
    ax.scatter(fake[finite, 0], fake[finite, 1], s=2, c="tab:red", alpha=0.5, label="generated")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    n_bad = int((~finite).sum())
    if n_bad:  # a diverged G: say so instead of silently dropping the points
        ax.text(0.02, 0.02, f"{n_bad} non-finite points not shown", transform=ax.transAxes, fontsize=6, color="tab:red")
    ax.set_title(title, fontsize=8)
    ax.legend(loc="upper right", fontsize=6, markerscale=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def fake_limits(fake: Tensor, lo: float, hi: float) -> tuple[float, float]:
    """The data's axis limits, widened (symmetrically) to hold every finite generated point: a diverged run
    is drawn at its own scale instead of piling its points on the border."""
    finite = fake[torch.isfinite(fake).all(dim=1)] if len(fake) else fake
    if not len(finite):
        return lo, hi
    span = 1.05 * float(finite.abs().max())
    return (lo, hi) if span <= hi else (-span, span)


def wrap_title(title: str, width: int = TITLE_WIDTH) -> str:
    """Each line of ``title`` wrapped to ``width`` characters (long override lists would be clipped)."""
    return "\n".join(textwrap.fill(line, width, break_long_words=True) or line for line in title.split("\n"))


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
    titles = [wrap_title(t) for t in titles]
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, (3 + 0.14 * lines) * nrows), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p, t in zip(axes.flat, paths, titles, strict=False):
        ax.imshow(Image.open(p))
        ax.set_title(t, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.1)  # nothing clipped at the figure's edges
    plt.close(fig)
    return path
