"""``dataset=tfrecord``: images from a TFRecord set (ALAE's layout), read through DareBlopy.

The set is written by ``scripts/prepare_tfrecords.py`` (:func:`~.tfrecord_writer.write_tfrecords`); its image
size and channels come from its metadata (:mod:`~.tfrecord_meta`); files are checked before DareBlopy opens them
(:mod:`~.tfrecord_validate`) and read in a seeded shuffled order (:mod:`~.tfrecord_reader`); the record format is
:mod:`~.tfrecord_format`. :class:`TFRecordDataModule` reads one resolution level;
:class:`~gancollapse.data.progressive.ProgressiveTFRecordDataModule` all of them, one level of detail at a time.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from gancollapse.data.downloads import DEFAULT_ROOT
from gancollapse.data.image_datamodule import ImageDataModule
from gancollapse.data.in_memory import DeviceBatches, UInt8Images
from gancollapse.data.order import rank_and_world
from gancollapse.data.tfrecord_format import (
    TFRecordError,
    crc32c,
    decode_example,
    encode_example,
    frame_record,
    iter_records,
    masked_crc,
    verify_tfrecord,
)
from gancollapse.data.tfrecord_meta import (
    level_path,
    meta_path,
    meta_resolver,
    read_meta,
    resolve_from_meta,
    round_robin_counts,
    split_counts,
    split_name,
)
from gancollapse.data.tfrecord_reader import (
    TFRecordBatches,
    check_data_crcs,
    next_records,
    parsed_yielder,
    shard_files,
)
from gancollapse.data.tfrecord_validate import check_first_record, check_meta, validate_split
from gancollapse.data.tfrecord_writer import downsample_uint8, split_indices, write_tfrecords

# The names below were all defined in this module before it was split by job; they stay importable from here
# (re-exports) so that user code keeps working. New code imports them from their modules.
__all__ = [
    "TFRecordBatches", "TFRecordDataModule", "TFRecordError", "check_data_crcs", "check_first_record", "check_meta",
    "crc32c", "decode_example", "downsample_uint8", "encode_example", "frame_record", "iter_records", "level_path",
    "masked_crc", "meta_path", "meta_resolver", "next_records", "parsed_yielder", "read_meta", "resolve_from_meta",
    "round_robin_counts", "shard_files", "split_counts", "split_indices", "split_name", "validate_split",
    "verify_tfrecord", "write_tfrecords",
]


class TFRecordDataModule(ImageDataModule):
    """Images from TFRecords written by :func:`~.tfrecord_writer.write_tfrecords` (``scripts/prepare_tfrecords.py``).

    Args:
        path: folder of the TFRecords.
        tfrecord_name: the set's file prefix (``<name>-r05.tfrecords.000`` …).
        img_size: the resolution level to read (a power of two present in the metadata); None: the largest.
        channels: the set's channels (must match the metadata); None: the metadata's.
        buffer_size: DareBlopy shuffle buffer, in records.
        verify: walk every file's framing before the first read (cheap; catches truncation and bad headers).
    """

    name = "tfrecord"

    def __init__(self, path: str = "", tfrecord_name: str = "images", img_size: int | None = None,
                 channels: int | None = None, batch_size: int = 64, flip: bool = False, on_device: bool = False,
                 buffer_size: int = 10_000, verify: bool = True, drop_last: bool = True, root: str = DEFAULT_ROOT,
                 download: bool = False, seed: int = 0) -> None:
        if img_size is None or channels is None:  # explicit values are checked against the metadata at setup
            img_size, channels = resolve_from_meta(path, tfrecord_name, img_size, channels)
        super().__init__(img_size, channels, batch_size, flip, on_device, 0, drop_last, root, download, seed)
        self.path, self.tfrecord_name, self.buffer_size, self.verify = Path(path), tfrecord_name, int(buffer_size), bool(verify)
        self._files: list[str] | None = None
        self._meta: dict | None = None

    def describe(self) -> str:
        return f"tfrecord-{self.path.name}-{self.tfrecord_name}-{self.img_size}px-{self.channels}ch"

    def files(self) -> list[str]:
        if self._files is None:
            resolve_from_meta(self.path, self.tfrecord_name, self.img_size, self.channels)
            meta = read_meta(self.path, self.tfrecord_name)
            files = [level_path(self.path, self.tfrecord_name, self.img_size, p) for p in range(meta["parts"])]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"TFRecord parts missing: {missing}")
            if self.verify:
                total = sum(verify_tfrecord(f) for f in files)
                if total != meta["count"]:
                    raise TFRecordError(f"{self.path}/{self.tfrecord_name}-r{int(math.log2(self.img_size)):02d}.*: "
                                        f"{total} records, metadata says {meta['count']}")
            self._files, self._meta = [str(f) for f in files], meta
        return self._files

    def __len__(self) -> int:
        self.files()
        return int(self._meta["count"])

    def setup(self, stage: str | None = None) -> None:
        self.files()
        if len(self) < self.batch_size:
            raise ValueError(f"dataset.batch_size ({self.batch_size}) exceeds the dataset size ({len(self)})")

    def load(self):  # pragma: no cover - only reached through on_device
        images, labels = self.read_all()
        return UInt8Images(images, labels)

    def read_all(self, n: int | None = None, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """The first n records of a shuffled pass (all when n is None), as uint8 images and labels."""
        files = self.files()
        count = len(self) if n is None else min(n, len(self))
        y = parsed_yielder(files, self.channels, self.img_size, max(self.buffer_size, 1), self.seed if seed is None else seed, 0, True)
        images, labels = next_records(y, count)
        return torch.from_numpy(images), torch.from_numpy(labels).long().flatten()

    def train_dataloader(self):
        files = self.files()
        rank, world = rank_and_world(getattr(self, "trainer", None))
        if self.on_device:
            images, labels = self.read_all()
            return DeviceBatches(UInt8Images(images, labels).to(self._device()), self.batch_size, True,
                                 self.drop_last, rank, world, self.seed)
        files, count, seed = shard_files(files, len(self), rank, world, self.seed)
        return TFRecordBatches(files, count, self.channels, self.img_size, self.batch_size, self.buffer_size, seed)

    def sample_uint8(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        return self.read_all(n, seed=seed + 1)
