"""TFRecord image sets: a writer (no TensorFlow needed) and a DareBlopy-backed datamodule.

Layout (ALAE's, reference/seeds-mbrce-wlgan.md §1.6): one file set per power-of-two resolution,
``<dir>/<name>-r<LL>.tfrecords.<PPP>`` with LL = log2(resolution) and PPP the part index, plus
``<dir>/<name>-meta.json`` (channels, resolutions, parts, record counts). Each record is a ``tf.train.Example``
with ``shape`` (int64 [C, H, W]), ``data`` (bytes: raw uint8, CHW order) and ``label`` (int64). Lower levels
are 2×2 box-filtered from the level above (ALAE), rounded to uint8 (ALAE truncates; rounding keeps the mean).

Framing per record: uint64 length, uint32 masked CRC32C of the length, data, uint32 masked CRC32C of the data
(TFRecord format). CRC32C uses ``google_crc32c`` when installed (``pip install google-crc32c``), else a
pure-Python table (about 10–20 MB/s).

Reading: DareBlopy's ``ParsedRecordYielderRandomized`` (shuffle buffer, per-epoch seed). A bad file makes the
DareBlopy C++ reader fail hard (ALAE issues #15, #34, #67, #75), so every file's framing is verified in Python
before it is handed over: a corrupt or truncated record raises :class:`TFRecordError` naming the file.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gancollapse.data.images import DEFAULT_ROOT, ImageDataModule


class TFRecordError(ValueError):
    """A TFRecord file is corrupt, truncated or does not match its metadata."""


# ---------------------------------------------------------------------------- CRC32C (Castagnoli)
def _make_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def _crc32c_python(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # optional C implementation
    import google_crc32c as _gcrc

    def crc32c(data: bytes) -> int:
        """CRC32C (Castagnoli) of ``data``."""
        return _gcrc.value(data)
except ImportError:  # pragma: no cover - depends on the environment
    crc32c = _crc32c_python


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8, mod 2³²."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------- tf.train.Example encoding
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int64_feature(values: Iterable[int]) -> bytes:
    packed = b"".join(_varint(v & 0xFFFFFFFFFFFFFFFF) for v in values)
    return _field(3, _field(1, packed))  # Feature.int64_list → Int64List.value (packed)


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))  # Feature.bytes_list → BytesList.value


def encode_example(image: Tensor, label: int = 0) -> bytes:
    """A serialised ``tf.train.Example`` with ``shape``, ``data`` (uint8 CHW) and ``label``."""
    if image.dtype != torch.uint8 or image.dim() != 3:
        raise ValueError(f"expected a uint8 (C, H, W) image, got {image.dtype} {tuple(image.shape)}")
    entries = {"shape": _int64_feature(image.shape), "data": _bytes_feature(image.contiguous().numpy().tobytes()),
               "label": _int64_feature([int(label)])}
    features = b"".join(_field(1, _field(1, k.encode()) + _field(2, v)) for k, v in entries.items())
    return _field(1, features)  # Example.features


def frame_record(payload: bytes) -> bytes:
    """TFRecord framing of one serialised record."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc(length)) + payload + struct.pack("<I", masked_crc(payload))


def verify_tfrecord(path: Path, check_data_crc: bool = False) -> int:
    """Walk a file's framing; returns its record count. Raises TFRecordError naming the file on a bad length
    CRC, a truncated record or (with ``check_data_crc``) a bad data CRC."""
    path = Path(path)
    size = path.stat().st_size
    count, pos = 0, 0
    with path.open("rb") as f:
        while pos < size:
            header = f.read(12)
            if len(header) < 12:
                raise TFRecordError(f"{path}: truncated record header at byte {pos} (record {count})")
            (length,) = struct.unpack("<Q", header[:8])
            (len_crc,) = struct.unpack("<I", header[8:])
            if masked_crc(header[:8]) != len_crc:
                raise TFRecordError(f"{path}: corrupt length CRC at byte {pos} (record {count})")
            if pos + 12 + length + 4 > size:
                raise TFRecordError(f"{path}: truncated record {count} at byte {pos} "
                                    f"(needs {length + 16} bytes, {size - pos} left)")
            if check_data_crc:
                data = f.read(length)
                (data_crc,) = struct.unpack("<I", f.read(4))
                if masked_crc(data) != data_crc:
                    raise TFRecordError(f"{path}: corrupt data CRC in record {count} at byte {pos}")
            else:
                f.seek(length + 4, 1)
            pos += 12 + length + 4
            count += 1
    return count


# ---------------------------------------------------------------------------- writing
def level_path(directory: Path, name: str, resolution: int, part: int) -> Path:
    return Path(directory) / f"{name}-r{int(math.log2(resolution)):02d}.tfrecords.{part:03d}"


def meta_path(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}-meta.json"


def downsample_uint8(images: Tensor) -> Tensor:
    """2×2 box filter (ALAE's ``avg_pool2d(2, 2)``), rounded back to uint8."""
    return F.avg_pool2d(images.float(), 2).round_().clamp_(0, 255).to(torch.uint8)


def write_tfrecords(batches: Iterable[tuple[Tensor, Tensor]], directory: str | Path, name: str,
                    min_resolution: int = 4, parts: int = 1) -> dict:
    """Write (uint8 (B, C, S, S) images, labels) batches at every power-of-two resolution from S down to
    ``min_resolution``; record i goes to part i mod ``parts``. Returns (and saves) the metadata."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    files: dict[tuple[int, int], object] = {}
    meta: dict = {"name": name, "parts": parts, "count": 0}
    try:
        for images, labels in batches:
            size = images.shape[-1]
            if images.dtype != torch.uint8 or images.shape[-2] != size or size & (size - 1):
                raise ValueError(f"images must be uint8, square, power-of-two sized; got {images.dtype} {tuple(images.shape)}")
            if "resolutions" not in meta:
                if min_resolution < 1 or min_resolution & (min_resolution - 1) or min_resolution > size:
                    raise ValueError(f"min_resolution must be a power of two <= {size}, got {min_resolution}")
                meta["resolutions"] = [size >> i for i in range(int(math.log2(size // min_resolution)) + 1)]
                meta["channels"] = int(images.shape[1])
            level = images
            for res in meta["resolutions"]:
                if level.shape[-1] != res:
                    level = downsample_uint8(level)
                for i in range(level.shape[0]):
                    part = (meta["count"] + i) % parts
                    key = (res, part)
                    if key not in files:
                        files[key] = level_path(directory, name, res, part).open("wb")
                    files[key].write(frame_record(encode_example(level[i], int(labels[i]))))
            meta["count"] += int(images.shape[0])
    finally:
        for f in files.values():
            f.close()
    meta_path(directory, name).write_text(json.dumps(meta, indent=2))
    return meta


# ---------------------------------------------------------------------------- reading
def read_meta(directory: str | Path, name: str) -> dict:
    path = meta_path(Path(directory), name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: write the TFRecords first, e.g.\n"
                                f"  python scripts/prepare_tfrecords.py --dataset digits --out {directory} --name {name}")
    return json.loads(path.read_text())


def _yielder(files: list[str], channels: int, resolution: int, buffer_size: int, seed: int, epoch: int,
             with_labels: bool):
    import dareblopy as db

    features = {"data": db.FixedLenFeature([channels, resolution, resolution], db.uint8)}
    if with_labels:
        features["label"] = db.FixedLenFeature([1], db.int64)
    parser = db.RecordParser(features, True)
    return db.ParsedRecordYielderRandomized(parser, files, buffer_size, seed, epoch)


def _next_n(yielder, n: int):
    """DareBlopy's ``next_n``, with its CRC/EOF RuntimeErrors (which name the file) as TFRecordError."""
    try:
        return yielder.next_n(n)
    except RuntimeError as err:
        raise TFRecordError(str(err)) from err


class TFRecordBatches:
    """One epoch of shuffled (uint8 images, labels) batches from DareBlopy, ``len`` = count // batch."""

    def __init__(self, files: list[str], count: int, channels: int, resolution: int, batch_size: int,
                 buffer_size: int = 10_000, seed: int = 0, with_labels: bool = True) -> None:
        self.files, self.count, self.channels, self.resolution = files, count, channels, resolution
        self.batch_size, self.buffer_size, self.seed, self.with_labels = batch_size, buffer_size, seed, with_labels
        self.epoch = 0

    def __len__(self) -> int:
        return self.count // self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        y = _yielder(self.files, self.channels, self.resolution, self.buffer_size, self.seed, self.epoch, self.with_labels)
        self.epoch += 1
        for _ in range(len(self)):
            out = _next_n(y, self.batch_size)
            images = torch.from_numpy(out[0])
            labels = torch.from_numpy(out[1]).long().flatten() if self.with_labels else torch.zeros(images.shape[0], dtype=torch.long)
            yield images, labels


def shard_files(files: list[str], count: int, rank: int, world: int, seed: int) -> tuple[list[str], int, int]:
    """Files, record count and shuffle seed for one DDP rank. With parts divisible by the world size each rank
    reads its own parts (ALAE's rule; record i is in part i mod parts); otherwise every rank reads all parts
    with its own shuffle seed and an equal share of the epoch."""
    if world <= 1:
        return files, count, seed
    parts = len(files)
    if parts % world == 0:
        mine = list(range(rank, parts, world))
        n = sum(count // parts + (1 if p < count % parts else 0) for p in mine)
        return [files[p] for p in mine], n, seed
    return files, count // world, seed + 7919 * rank


class TFRecordDataModule(ImageDataModule):
    """Images from TFRecords written by :func:`write_tfrecords` (``scripts/prepare_tfrecords.py``).

    Args:
        path: folder of the TFRecords.
        tfrecord_name: the set's file prefix (``<name>-r05.tfrecords.000`` …).
        img_size: the resolution level to read (a power of two present in the metadata).
        buffer_size: DareBlopy shuffle buffer, in records.
        verify: walk every file's framing before the first read (cheap; catches truncation and bad headers).
    """

    name = "tfrecord"

    def __init__(self, path: str = "", tfrecord_name: str = "images", img_size: int = 32, channels: int = 3,
                 batch_size: int = 64, flip: bool = False, on_device: bool = False, buffer_size: int = 10_000,
                 verify: bool = True, drop_last: bool = True, root: str = DEFAULT_ROOT, download: bool = False,
                 seed: int = 0) -> None:
        super().__init__(img_size, channels, batch_size, flip, on_device, 0, drop_last, root, download, seed)
        self.path, self.tfrecord_name, self.buffer_size, self.verify = Path(path), tfrecord_name, int(buffer_size), bool(verify)
        self._files: list[str] | None = None
        self._meta: dict | None = None

    def describe(self) -> str:
        return f"tfrecord-{self.path.name}-{self.tfrecord_name}-{self.img_size}px-{self.channels}ch"

    def files(self) -> list[str]:
        if self._files is None:
            meta = read_meta(self.path, self.tfrecord_name)
            if self.img_size not in meta["resolutions"]:
                raise ValueError(f"dataset.img_size={self.img_size} is not in the TFRecords; written resolutions: "
                                 f"{meta['resolutions']}")
            if meta["channels"] != self.channels:
                raise ValueError(f"dataset.channels={self.channels} but the TFRecords have {meta['channels']} channels")
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
        from gancollapse.data.images import UInt8Images

        images, labels = self.read_all()
        return UInt8Images(images, labels)

    def read_all(self, n: int | None = None, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """The first n records of a shuffled pass (all when n is None), as uint8 images and labels."""
        files = self.files()
        count = len(self) if n is None else min(n, len(self))
        y = _yielder(files, self.channels, self.img_size, max(self.buffer_size, 1), self.seed if seed is None else seed, 0, True)
        images, labels = _next_n(y, count)
        return torch.from_numpy(images), torch.from_numpy(labels).long().flatten()

    def train_dataloader(self):
        files = self.files()
        if self.on_device:
            from gancollapse.data.images import DeviceBatches, UInt8Images

            trainer = getattr(self, "trainer", None)
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            images, labels = self.read_all()
            return DeviceBatches(UInt8Images(images, labels).to(self._device()), self.batch_size, True,
                                 self.drop_last, rank, world, self.seed)
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        files, count, seed = shard_files(files, len(self), rank, world, self.seed)
        return TFRecordBatches(files, count, self.channels, self.img_size, self.batch_size, self.buffer_size, seed)

    def sample_uint8(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        return self.read_all(n, seed=seed + 1)
