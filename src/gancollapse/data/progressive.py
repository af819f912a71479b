"""Progressive-resolution TFRecord data for ALAE-style training (ALAE, MBRCE-AAE).

ALAE (Pidhorskyi, Adjeroh & Doretto, "Adversarial Latent Autoencoders", CVPR 2020, github.com/podgorskiy/ALAE)
grows its networks one level of detail (lod) at a time and reads, at lod l, the 2^(l+2)-pixel level of a
TFRecord set with one file set per resolution (the layout of :mod:`gancollapse.data.tfrecord_meta`, written by
``scripts/prepare_tfrecords.py``). :class:`ProgressiveTFRecordDataModule` does the same:

* Channels, resolutions and split sizes come from ``<name>-meta.json``, not from the config. The run's levels
  are 4 px up to ``max_resolution`` (default: the top level written), i.e. lods 0 … ``max_lod``.
* ``setup`` checks every part of every level the run will read, training and held-out sets alike, before
  DareBlopy opens any of them (DareBlopy aborts the process on a bad record): a missing level or part, a
  truncated or corrupt file, a record count that disagrees with the metadata or a level holding another
  resolution each raise :class:`~gancollapse.data.tfrecord_format.TFRecordError` naming the file and the fix.
* Batches are uint8 on the wire and become floats in [-1, 1] in ``on_after_batch_transfer`` (on the device).
  ``flip`` flips images left-right with a draw seeded by (seed, epoch, batch), so a resumed run flips alike.
* The order of an epoch is a function of (seed, epoch) only (DareBlopy's seeded reader). The position —
  (epoch, batches already yielded in it, lod, batch size) — is the datamodule's ``state_dict``, which
  Lightning stores in every checkpoint; a run resumed mid-epoch skips the batches it already trained on and
  yields the rest in the same order. Under a trainer, the trainer's epoch decides which epoch is served (a
  checkpoint saved after ``max_steps`` stopped ``fit`` resumes at the next epoch in Lightning, and so here).
* DDP: rank r of w reads parts r, r+w, … when the part count is a multiple of w (its own files, as in ALAE,
  which gives each rank a contiguous block of parts); each rank's epoch is cut to the smallest rank's so all
  ranks step together. Otherwise every rank reads the one shared shuffled stream and keeps records r, r+w, …
  (disjoint too, but each rank reads all files: write ``--parts`` a multiple of the world size for large sets).

Switching lod. ``set_lod(lod, batch_size)`` takes effect at the next ``train_dataloader()``; with
``Trainer(reload_dataloaders_every_n_epochs=1)`` Lightning rebuilds the loader at every epoch, *before*
``on_train_epoch_start``. So either

* set ``dm.lod_schedule = fn`` once (e.g. in the LightningModule's ``setup``), ``fn(epoch) -> (lod,
  batch_size)``: ``train_dataloader`` asks it for the epoch it is about to serve — the simplest, and right
  on resume too; or
* call ``dm.set_lod(lod, batch)`` for the *next* epoch in ``on_train_epoch_end`` (and for epoch 0 before
  ``fit``). A checkpoint's lod wins over a ``set_lod`` made before it is restored; changing lod in the middle
  of a resumed epoch is refused.

``batch_size`` is per process (Lightning's convention): divide ALAE's global ``LOD_2_BATCH`` by the world size.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from gancollapse.data.convert import to_float
from gancollapse.data.digits import DigitsDataModule
from gancollapse.data.order import rank_and_world
from gancollapse.data.tfrecord_format import TFRecordError
from gancollapse.data.tfrecord_meta import level_path, meta_path, read_meta, split_counts, split_name
from gancollapse.data.tfrecord_reader import next_records, parsed_yielder
from gancollapse.data.tfrecord_validate import check_meta, validate_split
from gancollapse.data.tfrecord_writer import split_indices, write_tfrecords
from gancollapse.runio import file_lock

log = logging.getLogger(__name__)

VERIFY_MODES = ("full", "framing", "none")
DIGITS_SOURCE = "sklearn-digits"
_SKIP_CHUNK = 4096  # records read and dropped at a time when resuming mid-epoch
_BUFFER_BYTES = 1 << 30  # ALAE's shuffle buffer: 1 GiB of records


# ---------------------------------------------------------------------------- pure helpers
def lod_resolution(lod: int) -> int:
    """Side length at level of detail ``lod``: 2^(lod+2) (ALAE's ``layer_to_resolution``)."""
    return 1 << (int(lod) + 2)


def shard_plan(part_counts: list[int], rank: int, world: int) -> tuple[list[int], int, int]:
    """(parts rank ``rank`` of ``world`` reads, records it yields per epoch, stride).

    Stride 1: the parts ≡ rank (mod world), the epoch cut to the smallest rank's record count (all ranks must
    run the same number of steps). Stride w (part count not a multiple of the world size): all parts, and
    the rank keeps records rank, rank+w, … of the shared shuffled stream. Either way ranks are disjoint."""
    parts = len(part_counts)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got rank={rank} world={world}")
    if parts % world == 0:
        per_rank = min(sum(part_counts[r::world]) for r in range(world))
        return list(range(rank, parts, world)), per_rank, 1
    return list(range(parts)), sum(part_counts) // world, world


def auto_buffer(records: int, channels: int, resolution: int) -> int:
    """ALAE's shuffle buffer: as many records as fit in 1 GiB, at most all of them."""
    return max(1, min(records, _BUFFER_BYTES // (channels * resolution * resolution)))


def _flip_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    return (((int(seed) * 1_000_003 + int(epoch)) * 1_000_003 + int(batch)) * 1009 + int(rank)) % (1 << 63)


def flip_batch(images: Tensor, seed: int) -> Tensor:
    """Flip each image left-right with probability ½, drawn from ``seed`` (ALAE flips per image)."""
    flip = torch.rand(images.shape[0], generator=torch.Generator().manual_seed(seed)) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)



# ---------------------------------------------------------------------------- the embedded digits set
def write_digits_tfrecords(out_dir: str | Path, size: int = 32, test_count: int = 200, seed: int = 0,
                           name: str = "digits", parts: int = 1) -> dict:
    """scikit-learn's 1,797 digits, resized to ``size``² (as ``dataset=digits``), written to ``out_dir`` in the
    progressive TFRecord layout at every level from ``size`` down to 4 px, with ``test_count`` images held
    out by a permutation seeded with ``seed``. Idempotent: returns the existing metadata without writing when
    the set is already there, was written with the same arguments and validates. Offline; about a second."""
    if size < 4 or size & (size - 1):
        raise ValueError(f"size must be a power of two >= 4, got {size}")
    out_dir = Path(out_dir)
    source = {"dataset": DIGITS_SOURCE, "size": int(size), "test_count": int(test_count), "split_seed": int(seed)}
    with file_lock(out_dir / f".{name}.lock"):
        if meta_path(out_dir, name).is_file():
            try:
                meta = read_meta(out_dir, name)
                if meta.get("source") == source and meta.get("parts") == parts:
                    check_meta(meta, meta_path(out_dir, name))
                    for split in ("train", "test"):
                        validate_split(out_dir, name, meta, split, meta["resolutions"], full=True)
                    return meta
            except (ValueError, KeyError) as err:  # TFRecordError is a ValueError
                log.warning("rewriting %s: %s", meta_path(out_dir, name), err)
        data = DigitsDataModule(img_size=size, channels=1).load()
        held_out = split_indices(len(data), test_count, seed)
        return write_tfrecords([(data.images, data.labels)], out_dir, name, min_resolution=4, parts=parts,
                               test_indices=held_out, split_seed=seed,
                               extra_meta={"source": source, "num_classes": DigitsDataModule.num_classes})


# ---------------------------------------------------------------------------- batches
class ProgressiveBatches:
    """One rank's epochs at one lod. ``len`` is the whole epoch; iteration starts at the datamodule's
    position (skipping batches a resumed run already used) and advances it before each yield, so the
    position Lightning checkpoints after a training step counts that step's batch. (Lightning does not
    prefetch from a loader with a length, so yielded = consumed.)"""

    def __init__(self, dm: ProgressiveTFRecordDataModule, files: list[str], n_batches: int, rank: int,
                 stride: int, buffer_size: int) -> None:
        self.dm, self.files, self.n_batches, self.rank, self.stride = dm, files, n_batches, rank, stride
        self.offset = rank if stride > 1 else 0  # stride 1: the rank's own files, every record is its
        self.lod, self.batch_size, self.buffer_size = dm.lod, dm.batch_size, buffer_size
        self.resolution, self.channels = lod_resolution(dm.lod), dm.channels

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        dm = self.dm
        if (dm.lod, dm.batch_size) != (self.lod, self.batch_size):
            raise RuntimeError(f"set_lod({dm.lod}, {dm.batch_size}) was called after this loader was built for "
                               f"lod {self.lod}, batch {self.batch_size}: build a new one (train_dataloader(), i.e. "
                               "Trainer(reload_dataloaders_every_n_epochs=1))")
        dm._begin_epoch()
        return self._epoch(dm.epoch, dm.batches)

    def _epoch(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        dm, per_batch = self.dm, self.batch_size * self.stride
        reader = parsed_yielder(self.files, self.channels, self.resolution, self.buffer_size, dm.seed, epoch, True)
        skip = start * per_batch
        while skip:
            n = min(skip, max(_SKIP_CHUNK, per_batch))
            next_records(reader, n)
            skip -= n
        for b in range(start, self.n_batches):
            if (dm.epoch, dm.batches, dm.lod, dm.batch_size) != (epoch, b, self.lod, self.batch_size):
                raise RuntimeError(f"the datamodule's position moved to (epoch {dm.epoch}, batch {dm.batches}, lod "
                                   f"{dm.lod}) while this loader was at (epoch {epoch}, batch {b}, lod {self.lod}): "
                                   "one loader at a time, and set_lod only between epochs")
            images, labels = next_records(reader, per_batch)
            images = torch.from_numpy(images[self.offset::self.stride])
            labels = torch.from_numpy(labels[self.offset::self.stride]).long().flatten()
            if dm.flip:
                images = flip_batch(images, _flip_seed(dm.seed, epoch, b, self.rank))
            dm._advance(b + 1, self.n_batches)
            yield images, labels

    # Lightning's resumable-loader protocol: the datamodule holds the position, so it holds the state.
    def state_dict(self) -> dict[str, int]:
        return self.dm.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.dm.load_state_dict(state)


# ---------------------------------------------------------------------------- datamodule
class ProgressiveTFRecordDataModule(L.LightningDataModule):
    """Level lod+2 (2^(lod+2) px) of a TFRecord set written by ``scripts/prepare_tfrecords.py``; see the module
    docstring for validation, ordering, resuming, sharding and how to switch lod.

    Args:
        path: folder of the TFRecords.
        tfrecord_name: the set's file prefix (``<name>-r05.tfrecords.000``, ``<name>-meta.json`` …).
        lod: the starting level of detail (0: 4 px).
        batch_size: images per batch and process at the starting lod (``set_lod`` changes it).
        max_resolution: the run's top level (a power of two written in the set); null: the top level written.
        flip: random horizontal flips, seeded by (seed, epoch, batch).
        buffer_size: DareBlopy's shuffle buffer in records; null: ALAE's 1 GiB worth, at most the whole set.
        verify: ``full`` (framing, counts, first record's shape and every data CRC), ``framing`` (all but the
            data CRCs: for sets of many GB) or ``none``.
        prepare: null, or ``{dataset: digits, size: 32, test_count: 200, seed: 0}`` to write the embedded
            digits set into ``path`` when it is not there (:func:`write_digits_tfrecords`).
        seed: the data order (and flips) of every epoch, with the epoch number.
    """

    name = "progressive"

    def __init__(self, path: str = "data/tfrecords/digits32", tfrecord_name: str = "digits", lod: int = 0,
                 batch_size: int = 64, max_resolution: int | None = None, flip: bool = False,
                 buffer_size: int | None = None, verify: str | bool = "full", prepare: dict | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        if isinstance(verify, bool):  # TFRecordDataModule's boolean spelling
            verify = "full" if verify else "none"
        if verify not in VERIFY_MODES:
            raise ValueError(f"dataset.verify must be one of {VERIFY_MODES}, got {verify!r}")
        if int(batch_size) < 1:
            raise ValueError(f"dataset.batch_size must be >= 1, got {batch_size}")
        if int(lod) < 0:
            raise ValueError(f"dataset.lod must be >= 0, got {lod}")
        if max_resolution is not None and (int(max_resolution) < 4 or int(max_resolution) & (int(max_resolution) - 1)):
            raise ValueError(f"dataset.max_resolution must be a power of two >= 4 (or null), got {max_resolution}")
        if buffer_size is not None and int(buffer_size) < 1:
            raise ValueError(f"dataset.buffer_size must be >= 1 (or null), got {buffer_size}")
        self.prepare = dict(prepare) if prepare else None
        if self.prepare is not None:
            if self.prepare.get("dataset", "digits") != "digits":
                raise ValueError(f"dataset.prepare.dataset: only 'digits' is built in, got {self.prepare.get('dataset')!r}; "
                                 "write other sets with scripts/prepare_tfrecords.py and set dataset.prepare=null")
            unknown = set(self.prepare) - {"dataset", "size", "test_count", "seed"}
            if unknown:
                raise ValueError(f"dataset.prepare: unknown keys {sorted(unknown)} (allowed: dataset, size, test_count, seed)")
        self.path, self.tfrecord_name = Path(path), str(tfrecord_name)
        self.lod, self.batch_size = int(lod), int(batch_size)
        self.max_resolution = None if max_resolution is None else int(max_resolution)
        self.flip, self.buffer_size, self.verify, self.seed = bool(flip), buffer_size, verify, int(seed)
        self.epoch, self.batches = 0, 0
        self.lod_schedule: Callable[[int], tuple[int, int]] | None = None
        self._resume_pending = False
        self._meta: dict | None = None
        self._validated = False

    # ------------------------------------------------------------------ metadata
    @property
    def meta(self) -> dict:
        """The set's metadata (written first when ``prepare`` is set and the set is missing)."""
        if self._meta is None:
            if self.prepare is not None and not meta_path(self.path, self.tfrecord_name).is_file():
                self.prepare_data()
            meta = read_meta(self.path, self.tfrecord_name)
            check_meta(meta, meta_path(self.path, self.tfrecord_name))
            self._meta = meta
        return self._meta

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def img_size(self) -> int:
        """The run's top resolution (the last lod; evaluation reads this level)."""
        top = self.max_resolution or max(self.meta["resolutions"])
        if top < 4:
            raise TFRecordError(f"{meta_path(self.path, self.tfrecord_name)}: top level {top}px is below 4 px; "
                                "rerun scripts/prepare_tfrecords.py with a larger --size")
        return top

    @property
    def max_lod(self) -> int:
        return int(math.log2(self.img_size)) - 2

    @property
    def resolutions(self) -> list[int]:
        """The run's levels, lod 0 first: 4, 8, …, ``img_size``."""
        return [lod_resolution(lod) for lod in range(self.max_lod + 1)]

    @property
    def resolution(self) -> int:
        """The current lod's side length."""
        return lod_resolution(self.lod)

    @property
    def num_classes(self) -> int:
        return int(self.meta.get("num_classes", 0))

    @property
    def has_test_split(self) -> bool:
        return split_counts(self.meta, "test")[0] > 0

    def __len__(self) -> int:
        """Training images (all ranks together)."""
        return split_counts(self.meta, "train")[0]

    def describe(self) -> str:
        """Identity of the evaluation images (top level; the same as ``TFRecordDataModule`` reading it)."""
        return f"tfrecord-{self.path.name}-{self.tfrecord_name}-{self.img_size}px-{self.channels}ch"

    def _files(self, split: str, resolution: int, parts: list[int] | None = None) -> list[str]:
        n_parts = len(split_counts(self.meta, split)[1])
        prefix = split_name(self.tfrecord_name, split)
        return [str(level_path(self.path, prefix, resolution, p)) for p in (range(n_parts) if parts is None else parts)]

    # ------------------------------------------------------------------ Lightning
    def prepare_data(self) -> None:
        if self.prepare is not None:
            p = self.prepare
            write_digits_tfrecords(self.path, size=int(p.get("size", 32)), test_count=int(p.get("test_count", 200)),
                                   seed=int(p.get("seed", 0)), name=self.tfrecord_name)
            self._meta = None

    def setup(self, stage: str | None = None) -> None:
        """Validate every level and part the run reads (once per process)."""
        if self._validated:
            return
        meta = self.meta
        if self.lod > self.max_lod:
            raise ValueError(f"dataset.lod={self.lod} is beyond the top lod {self.max_lod} ({self.img_size}px)")
        if self.verify != "none":
            for split in ("train", "test"):
                validate_split(self.path, self.tfrecord_name, meta, split, self.resolutions, full=self.verify == "full")
        self._validated = True

    def set_lod(self, lod: int, batch_size: int | None = None) -> None:
        """Read level ``lod`` (2^(lod+2) px) in batches of ``batch_size`` (per process; default: unchanged)
        from the next ``train_dataloader()`` on. Call it between epochs (see the module docstring)."""
        lod, batch = int(lod), self.batch_size if batch_size is None else int(batch_size)
        if not 0 <= lod <= self.max_lod:
            raise ValueError(f"lod must be in [0, {self.max_lod}] (levels {self.resolutions} px), got {lod}")
        if batch < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch}")
        if (lod, batch) == (self.lod, self.batch_size):
            return
        if self.batches:
            if self._resume_pending:
                raise ValueError(f"the restored checkpoint is {self.batches} batches into epoch {self.epoch} at lod "
                                 f"{self.lod}, batch {self.batch_size}; set_lod({lod}, {batch}) would break its data "
                                 "order: change lod only between epochs (e.g. from on_train_epoch_end, or dm.lod_schedule)")
            self._next_epoch()  # the previous pass stopped early (limit_train_batches, max_steps): it is over
        self.lod, self.batch_size = lod, batch

    def train_dataloader(self) -> ProgressiveBatches:
        self.setup()
        self._start_pass()
        if self.lod_schedule is not None:
            self.set_lod(*self.lod_schedule(self.epoch))
        return self.loader(*rank_and_world(getattr(self, "trainer", None)))

    def loader(self, rank: int = 0, world_size: int = 1) -> ProgressiveBatches:
        """The training batches of rank ``rank`` of ``world_size`` at the current lod (``train_dataloader``
        takes both from the trainer)."""
        self.setup()
        if self.lod > self.max_lod:
            raise ValueError(f"lod {self.lod} is beyond the top lod {self.max_lod} ({self.img_size}px)")
        parts, per_rank, stride = shard_plan(split_counts(self.meta, "train")[1], rank, world_size)
        n_batches = per_rank // self.batch_size
        if n_batches < 1:
            raise ValueError(f"batch size {self.batch_size} (dataset.batch_size or set_lod) exceeds the {per_rank} "
                             f"training images of rank {rank} of {world_size}")
        buffer = int(self.buffer_size) if self.buffer_size else auto_buffer(per_rank * stride, self.channels, self.resolution)
        return ProgressiveBatches(self, self._files("train", self.resolution, parts), n_batches, rank, stride, buffer)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        return (to_float(images) if images.dtype == torch.uint8 else images), labels

    # ------------------------------------------------------------------ position (checkpointed by Lightning)
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches, "lod": self.lod, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        missing = {"epoch", "batches", "lod", "batch_size"} - set(state)
        if missing:
            raise ValueError(f"datamodule state lacks {sorted(missing)}: not a ProgressiveTFRecordDataModule state")
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self.lod, self.batch_size = int(state["lod"]), int(state["batch_size"])
        self._resume_pending = True

    def _next_epoch(self) -> None:
        self.epoch, self.batches = self.epoch + 1, 0

    def _start_pass(self) -> None:
        """Where the next pass starts. Under a trainer its epoch is authoritative: a saved mid-epoch position
        resumes only the epoch the trainer resumes (Lightning starts a new epoch after a checkpoint taken when
        ``max_steps`` stopped it, for instance). Without one, a new pass starts a new epoch unless it resumes
        a restored position."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            if trainer.current_epoch != self.epoch:
                self.epoch, self.batches, self._resume_pending = int(trainer.current_epoch), 0, False
        elif self.batches and not self._resume_pending:
            self._next_epoch()

    def _begin_epoch(self) -> None:
        self._start_pass()
        self._resume_pending = False

    def _advance(self, batches: int, n_batches: int) -> None:
        if batches >= n_batches:
            self._next_epoch()
        else:
            self.batches = batches

    # ------------------------------------------------------------------ evaluation helpers
    def _read(self, split: str, n: int | None, resolution: int, seed: int) -> tuple[Tensor, Tensor]:
        self.setup()
        count = split_counts(self.meta, split)[0]
        if count == 0:
            raise ValueError(f"{meta_path(self.path, self.tfrecord_name)} has no held-out set: rerun "
                             "scripts/prepare_tfrecords.py with --test-count N")
        if resolution not in self.resolutions:
            raise ValueError(f"resolution {resolution} is not one of the run's levels {self.resolutions}")
        n = count if n is None else min(int(n), count)
        reader = parsed_yielder(self._files(split, resolution), self.channels, resolution,
                                auto_buffer(count, self.channels, resolution), seed, 0, True)
        images, labels = next_records(reader, n)
        return torch.from_numpy(images), torch.from_numpy(labels).long().flatten()

    def sample_uint8(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """n training images at the top level (a seeded shuffled subset; all when n ≥ the set)."""
        return self._read("train", n, self.img_size, seed + 1)

    def sample(self, n: int, seed: int = 0, with_labels: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        images, labels = self.sample_uint8(n, seed)
        return (to_float(images), labels) if with_labels else to_float(images)

    def held_out_uint8(self, n: int | None = None, lod: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Held-out images (all when n is None) at level ``lod`` (default: the top), uint8, with labels."""
        resolution = self.img_size if lod is None else lod_resolution(lod)
        return self._read("test", n, resolution, seed)

    def cache_key(self, n: int, seed: int) -> str:
        """File-name-safe key of a real-image subset (as :meth:`ImageDataModule.cache_key`)."""
        digest = hashlib.sha1(f"{self.describe()}|{n}|{seed}".encode()).hexdigest()[:10]
        return f"{self.describe()}-n{n}-s{seed}-{digest}"
