"""Progressive-growing schedule for ALAE-style training: level of detail (lod), fade-in blend, batch and lr.

Level of detail ``lod`` means images of side ``2 ** (lod + 2)``: lod 0 is 4×4, lod 3 is 32×32. Training starts at
lod 0 and moves up one lod per stage, as progressive growing (Karras et al., "Progressive Growing of GANs",
ICLR 2018) and ALAE's ``LODDriver`` (Pidhorskyi, Adjeroh & Doretto, "Adversarial Latent Autoencoders",
CVPR 2020; ``podgorskiy/ALAE:lod_driver.py``):

- stage ``k`` lasts ``epochs_per_lod[k]`` epochs; the last stage lasts until training stops;
- lods change only at epoch boundaries (so a dataloader built once per epoch has one resolution and batch);
- during the first ``transition`` fraction of every stage with lod > 0 the new top block fades in: a blend
  factor β rises from 0 to 1 with the images seen in the stage, and real images are shown as
  ``(1 − β)·up(down(x)) + β·x`` (:func:`blend_real_images`), matching G's and E's blended paths.

The ramp shape is ``cosine`` by default, β(t) = (1 − cos πt)/2. That is exactly ALAE's
``sin(πt − π/2)/2 + 1/2`` (``lod_driver.py:get_blend_factor``); ``linear`` (β = t) is ProGAN's fade-in.

What differs from ALAE, on purpose:

- every per-lod list must cover every lod (ALAE silently reuses the last entry for lods past the end of a list,
  which hides a too-short config);
- the state is a pure function of the counters ``(epoch, images seen in the epoch)``. ALAE's driver starts at
  ``lod = -1`` after a restart, so it sees a "lod change" on every resume and wipes the Adam moments;
  :meth:`LodSchedule.lod_just_started` is true only at the first batch of a stage, whether or not the run was
  resumed;
- the transition length can be a fraction of the stage (ALAE: the first ``EPOCHS_PER_LOD // 2`` epochs, i.e.
  0.5 for an even number of epochs) or a fixed number of images (ProGAN: 600k).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

BLEND_SHAPES = ("cosine", "linear")


def resolution_of(lod: int) -> int:
    """Image side at level of detail ``lod``: ``2 ** (lod + 2)`` (lod 0 is ALAE's 4×4 constant)."""
    if lod < 0:
        raise ValueError(f"lod must be >= 0, got {lod}")
    return 2 ** (int(lod) + 2)


def lod_of(image_size: int, key: str = "image_size") -> int:
    """Inverse of :func:`resolution_of`; ``image_size`` must be a power of two >= 4 (``key`` names it in errors)."""
    size = int(image_size)
    if size < 4 or size & (size - 1):
        raise ValueError(f"{key} must be a power of two >= 4 (4, 8, 16, 32, ...), got {image_size}")
    return size.bit_length() - 3


def cosine_ramp(t: float) -> float:
    """β(t) = (1 − cos πt)/2 on t ∈ [0, 1] (= ALAE's sin(πt − π/2)/2 + 1/2): 0 → 0, ½ → ½, 1 → 1, flat ends."""
    t = min(max(float(t), 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * t)


def linear_ramp(t: float) -> float:
    """β(t) = t clipped to [0, 1] (ProGAN's linear fade-in)."""
    return min(max(float(t), 0.0), 1.0)


def blend_ramp(t: float, shape: str = "cosine") -> float:
    """The fade-in factor for stage progress ``t`` (fraction of the transition done) and ramp ``shape``."""
    if shape == "cosine":
        return cosine_ramp(t)
    if shape == "linear":
        return linear_ramp(t)
    raise ValueError(f"blend must be one of {BLEND_SHAPES}, got {shape!r}")


def upsample2x(x: Tensor) -> Tensor:
    """Nearest-neighbour ×2 upsampling (ALAE's ``F.interpolate`` default in the blended G and real paths)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample2x(x: Tensor) -> Tensor:
    """2×2 box filter (``avg_pool2d``): how ALAE builds every lower level of its TFRecords and ``x_prev``."""
    return F.avg_pool2d(x, 2)


def downsample_to(x: Tensor, size: int) -> Tensor:
    """Box-filter square images ``x`` (N, C, S, S) down to side ``size``; S and size powers of two, S >= size."""
    s = int(x.shape[-1])
    if x.dim() != 4 or x.shape[-2] != s:
        raise ValueError(f"expected square images (N, C, S, S), got shape {tuple(x.shape)}")
    lod_of(s, key="image size")
    lod_of(size, key="target size")
    if s < size:
        raise ValueError(f"cannot downsample {s}px images to {size}px: the data resolution is below the lod's")
    return x if s == size else F.avg_pool2d(x, s // size)


def blend_real_images(x: Tensor, lod: int, blend: float) -> Tensor:
    """Real batch as the networks see it at ``lod`` with fade-in factor ``blend`` (β).

    ``x`` is first box-filtered to ``resolution_of(lod)``; then, during a transition (β < 1),
    ``(1 − β)·up(down(x)) + β·x`` (ALAE ``train_alae.py``; Karras et al. 2018 §2), computed with ``torch.lerp``
    so that β = 0 gives exactly ``up(down(x))`` and β = 1 exactly ``x``.
    """
    x = downsample_to(x, resolution_of(lod))
    if lod == 0 or blend >= 1.0:
        return x
    if blend < 0.0:
        raise ValueError(f"blend must be in [0, 1], got {blend}")
    return torch.lerp(upsample2x(downsample2x(x)), x, float(blend))


def _per_lod(value, num_lods: int, key: str, cast) -> tuple:
    """A scalar broadcast to every lod, or a list with at least one entry per lod (extra entries ignored)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        return tuple(cast(value) for _ in range(num_lods))
    if len(value) < num_lods:
        raise ValueError(
            f"{key} has {len(value)} entries but the schedule has {num_lods} lods (0..{num_lods - 1}): "
            f"give one entry per lod, or a single number for all")
    return tuple(cast(v) for v in value[:num_lods])


@dataclass(frozen=True)
class LodState:
    """Where the schedule stands: lod, fade-in factor and the stage's batch size and learning rate."""

    epoch: int
    images_in_epoch: int
    lod: int
    resolution: int
    blend: float
    in_transition: bool
    batch_size: int
    learning_rate: float
    stage_images: int  # images seen since the start of this lod's stage


class LodSchedule:
    """Pure progressive schedule: every query is a function of the counters it is given, nothing else.

    Args:
        max_lod: top level of detail (resolution ``2 ** (max_lod + 2)``); lods 0..max_lod are trained in turn.
        dataset_size: images in one epoch (sets the transition length in images).
        epochs_per_lod: epochs per stage, one per lod or a single number (ALAE ``EPOCHS_PER_LOD``).
        batch_sizes: batch per lod, or one number (ALAE ``LOD_2_BATCH_1GPU``; global, not per device).
        learning_rates: lr per lod, or one number (ALAE ``LEARNING_RATES``).
        transition: fraction of each stage (lod > 0) spent fading in; ALAE uses the first half (0.5).
        transition_images: fixed fade-in length in images instead of ``transition`` (ProGAN: 600_000).
        blend: ramp shape, ``cosine`` (ALAE's) or ``linear`` (ProGAN's).
    """

    def __init__(self, max_lod: int, dataset_size: int, epochs_per_lod: int | Sequence[int],
                 batch_sizes: int | Sequence[int], learning_rates: float | Sequence[float],
                 transition: float = 0.5, transition_images: int | None = None, blend: str = "cosine") -> None:
        if int(max_lod) < 0:
            raise ValueError(f"max_lod must be >= 0, got {max_lod}")
        if int(dataset_size) <= 0:
            raise ValueError(f"dataset_size must be > 0, got {dataset_size}")
        if blend not in BLEND_SHAPES:
            raise ValueError(f"blend must be one of {BLEND_SHAPES}, got {blend!r}")
        if not 0.0 <= float(transition) <= 1.0:
            raise ValueError(f"transition is a fraction of a stage and must be in [0, 1], got {transition}")
        if transition_images is not None and int(transition_images) < 0:
            raise ValueError(f"transition_images must be >= 0 or null, got {transition_images}")
        self.max_lod = int(max_lod)
        self.num_lods = self.max_lod + 1
        self.dataset_size = int(dataset_size)
        self.epochs_per_lod = _per_lod(epochs_per_lod, self.num_lods, "epochs_per_lod", int)
        self.batch_sizes = _per_lod(batch_sizes, self.num_lods, "batch_sizes", int)
        self.learning_rates = _per_lod(learning_rates, self.num_lods, "learning_rates", float)
        for key, values in (("epochs_per_lod", self.epochs_per_lod), ("batch_sizes", self.batch_sizes),
                            ("learning_rates", self.learning_rates)):
            if any(v <= 0 for v in values):
                raise ValueError(f"every entry of {key} must be > 0, got {list(values)}")
        self.transition = float(transition)
        self.transition_images = None if transition_images is None else int(transition_images)
        self.blend_shape = blend
        # stage_starts[k]: first epoch at lod k
        starts = [0]
        for e in self.epochs_per_lod[:-1]:
            starts.append(starts[-1] + e)
        self.stage_starts = tuple(starts)

    def lod_at_epoch(self, epoch: int) -> int:
        """The lod trained during ``epoch`` (0-based); past the last stage start it stays at ``max_lod``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        lod = 0
        for k, start in enumerate(self.stage_starts):
            if epoch >= start:
                lod = k
        return lod

    def transition_length(self, lod: int) -> int:
        """Fade-in length of stage ``lod`` in images (0 at lod 0: nothing to fade from)."""
        if lod == 0:
            return 0
        if self.transition_images is not None:
            return self.transition_images
        return int(round(self.transition * self.epochs_per_lod[lod] * self.dataset_size))

    def at(self, epoch: int, images_in_epoch: int = 0) -> LodState:
        """State after ``images_in_epoch`` images of epoch ``epoch`` (both counters from the trainer)."""
        if images_in_epoch < 0:
            raise ValueError(f"images_in_epoch must be >= 0, got {images_in_epoch}")
        lod = self.lod_at_epoch(epoch)
        stage_images = (epoch - self.stage_starts[lod]) * self.dataset_size + int(images_in_epoch)
        length = self.transition_length(lod)
        in_transition = lod > 0 and stage_images < length
        blend = blend_ramp(stage_images / length, self.blend_shape) if in_transition else 1.0
        return LodState(epoch=int(epoch), images_in_epoch=int(images_in_epoch), lod=lod,
                        resolution=resolution_of(lod), blend=blend, in_transition=in_transition,
                        batch_size=self.batch_sizes[lod], learning_rate=self.learning_rates[lod],
                        stage_images=stage_images)

    def at_step(self, epoch: int, step_in_epoch: int) -> LodState:
        """State before batch ``step_in_epoch`` (0-based) of ``epoch``; the batch is fixed within an epoch."""
        return self.at(epoch, int(step_in_epoch) * self.batch_sizes[self.lod_at_epoch(epoch)])

    def at_images(self, images_seen: int) -> LodState:
        """State after ``images_seen`` images in total, taking every epoch to be ``dataset_size`` images."""
        epoch, rest = divmod(int(images_seen), self.dataset_size)
        return self.at(epoch, rest)

    def lod_just_started(self, epoch: int, images_in_epoch: int = 0) -> bool:
        """True only before the first batch of a stage with lod > 0: the moment to reset the optimisers.

        A run resumed mid-stage (any later epoch, or ``images_in_epoch > 0``) gets False, so its restored
        Adam moments survive; a run resumed exactly at a stage boundary gets True, as the uninterrupted run did.
        """
        lod = self.lod_at_epoch(epoch)
        return lod > 0 and epoch == self.stage_starts[lod] and images_in_epoch == 0

    def total_epochs_to_top(self) -> int:
        """First epoch at ``max_lod`` (ALAE celeba: 5 stages × 6 epochs = 30)."""
        return self.stage_starts[-1]
