"""TFRecord image sets: a writer (no TensorFlow needed), validation, and a DareBlopy-backed datamodule.

Layout (ALAE's: Pidhorskyi, Adjeroh & Doretto, "Adversarial Latent Autoencoders", CVPR 2020,
github.com/podgorskiy/ALAE, ``dataset_preparation/`` and ``dataloader.py``): one file set per power-of-two
resolution, ``<dir>/<name>-r<LL>.tfrecords.<PPP>`` with LL = log2(resolution) and PPP the part index, plus
``<dir>/<name>-meta.json``. Each record is a ``tf.train.Example`` with ``shape`` (int64 [C, H, W]), ``data``
(bytes: raw uint8, CHW order), ``label`` (int64) and ``index`` (int64: the image's position in the source
dataset, so splits and shards can be checked). Lower levels are 2×2 box-filtered from the level above (ALAE),
rounded to uint8 (ALAE truncates; rounding keeps the mean). Record i of a split goes to part i mod parts.

Held-out split: ``test_indices`` (see :func:`split_indices`: the first N of a seeded permutation) go to a
second file set ``<name>-test-r<LL>.tfrecords.<PPP>`` with the same levels, disjoint from the training set
(ALAE's CelebA-HQ script overlaps them). The metadata holds ``channels``, ``resolutions``, ``parts``,
``count`` and ``part_counts`` (training set), ``test_count``, ``test_parts``, ``test_part_counts`` and
``split_seed``.

Framing per record: uint64 length, uint32 masked CRC32C of the length, data, uint32 masked CRC32C of the data
(TFRecord format). CRC32C uses ``google_crc32c`` when installed (``pip install google-crc32c``), else a
pure-Python table (about 10–20 MB/s).

Reading: DareBlopy's ``ParsedRecordYielderRandomized`` (shuffle buffer, per-epoch seed). A bad file makes the
DareBlopy C++ reader fail hard — a record of the wrong size aborts the whole process (ALAE issues #15, #34,
#67, #75) — so files are checked in Python first (:func:`validate_split`): framing, record counts against
the metadata, the first record's shape, and (``full``) every data CRC; a problem raises
:class:`TFRecordError` naming the file and the fix.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import dareblopy as db
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
    if n < 0x80:  # most keys, lengths and labels: one byte
        return bytes((n,))
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


def encode_example(image: Tensor, label: int = 0, index: int | None = None) -> bytes:
    """A serialised ``tf.train.Example`` with ``shape``, ``data`` (uint8 CHW), ``label`` and, when given,
    ``index`` (the image's position in its source dataset)."""
    if image.dtype != torch.uint8 or image.dim() != 3:
        raise ValueError(f"expected a uint8 (C, H, W) image, got {image.dtype} {tuple(image.shape)}")
    entries = {"shape": _int64_feature(image.shape), "data": _bytes_feature(image.contiguous().numpy().tobytes()),
               "label": _int64_feature([int(label)])}
    if index is not None:
        entries["index"] = _int64_feature([int(index)])
    features = b"".join(_field(1, _field(1, k.encode()) + _field(2, v)) for k, v in entries.items())
    return _field(1, features)  # Example.features


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message; fixed-width fields are skipped."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos:pos + n], pos + n
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            continue
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _decode_feature(buf: bytes) -> bytes | list[int] | None:
    for kind, _, lst in _fields(buf):
        if kind == 1:  # BytesList: the first value
            return next((bytes(v) for n, _, v in _fields(lst) if n == 1), b"")
        if kind == 3:  # Int64List, packed or not
            out: list[int] = []
            for n, wire, v in _fields(lst):
                if n == 1 and wire == 0:
                    out.append(_signed(v))
                elif n == 1:
                    pos = 0
                    while pos < len(v):
                        x, pos = _read_varint(v, pos)
                        out.append(_signed(x))
            return out
    return None  # float lists: not used by this layout


def decode_example(payload: bytes) -> dict[str, bytes | list[int] | None]:
    """The features of a serialised ``tf.train.Example`` (bytes → first value, int64 → list); the inverse of
    :func:`encode_example`. Raises ValueError on a malformed message."""
    out: dict[str, bytes | list[int] | None] = {}
    for n, wire, features in _fields(payload):
        if n != 1 or wire != 2:
            continue
        for m, wire2, entry in _fields(features):
            if m != 1 or wire2 != 2:
                continue
            key, value = None, b""
            for k, _, v in _fields(entry):
                if k == 1:
                    key = bytes(v).decode()
                elif k == 2:
                    value = v
            if key is not None:
                out[key] = _decode_feature(value)
    return out


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


def iter_records(path: str | Path) -> Iterator[bytes]:
    """The payloads of a TFRecord file, in file order, read in Python (no CRC checks: run
    :func:`verify_tfrecord` first). For inspection and tests; training reads through DareBlopy."""
    with Path(path).open("rb") as f:
        while header := f.read(12):
            (length,) = struct.unpack("<Q", header[:8])
            payload = f.read(length)
            f.seek(4, 1)
            yield payload


def check_data_crcs(path: str | Path) -> int:
    """Every record's data CRC, checked by DareBlopy's C++ reader (fast; it raises rather than aborts on a bad
    CRC). Returns the record count; raises TFRecordError naming the file. Check the framing first
    (:func:`verify_tfrecord`): that is what keeps a truncated file away from the C++ reader."""
    reader = db.RecordYielderBasic([str(path)])
    count = 0
    try:
        while True:
            count += len(reader.next_n(4096))
    except StopIteration:
        return count
    except RuntimeError as err:
        raise TFRecordError(f"{path}: {err}") from err


# ---------------------------------------------------------------------------- layout
def level_path(directory: Path, name: str, resolution: int, part: int) -> Path:
    return Path(directory) / f"{name}-r{int(math.log2(resolution)):02d}.tfrecords.{part:03d}"


def meta_path(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}-meta.json"


def split_name(name: str, split: str) -> str:
    """File prefix of a split: ``<name>`` for ``train``, ``<name>-test`` for ``test``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return name if split == "train" else f"{name}-test"


def round_robin_counts(count: int, parts: int) -> list[int]:
    """Records per part when record i goes to part i mod parts."""
    return [count // parts + (1 if p < count % parts else 0) for p in range(parts)]


def split_counts(meta: dict, split: str) -> tuple[int, list[int]]:
    """(record count, records per part) of a split according to the metadata (older metadata without
    ``part_counts``: derived from the round-robin rule)."""
    if split == "train":
        count, parts, per_part = meta["count"], meta["parts"], meta.get("part_counts")
    else:
        count, parts, per_part = meta.get("test_count", 0), meta.get("test_parts", 0), meta.get("test_part_counts")
    if not count:
        return 0, []
    return int(count), [int(c) for c in (per_part if per_part is not None else round_robin_counts(count, parts))]


def downsample_uint8(images: Tensor) -> Tensor:
    """2×2 box filter (ALAE's ``avg_pool2d(2, 2)``), rounded back to uint8."""
    return F.avg_pool2d(images.float(), 2).round_().clamp_(0, 255).to(torch.uint8)


def split_indices(total: int, test_count: int, seed: int) -> Tensor:
    """Sorted source indices of a held-out set: the first ``test_count`` entries of a permutation of
    ``range(total)`` drawn with ``seed``. Deterministic; the rest is the training set."""
    if not 0 <= test_count < total:
        raise ValueError(f"--test-count must be in [0, {total}) for a set of {total} images, got {test_count}")
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:test_count].sort().values


# ---------------------------------------------------------------------------- writing
class _SplitWriter:
    """The open files of one split, written under temporary names and renamed only on success."""

    def __init__(self, directory: Path, name: str, parts: int) -> None:
        if parts < 1:
            raise ValueError(f"parts must be >= 1, got {parts}")
        self.directory, self.name, self.parts = directory, name, parts
        self.count, self.part_counts = 0, [0] * parts
        self.handles: dict[tuple[int, int], tuple[Path, Path, object]] = {}
        self.suffix = f".tmp{os.getpid()}"

    def add(self, levels: list[Tensor], labels: Tensor, indices: Tensor) -> None:
        n = int(labels.numel())
        parts = [(self.count + i) % self.parts for i in range(n)]
        for level in levels:
            res = int(level.shape[-1])
            for i in range(n):
                key = (res, parts[i])
                if key not in self.handles:
                    final = level_path(self.directory, self.name, res, parts[i])
                    tmp = final.with_name(final.name + self.suffix)
                    self.handles[key] = (final, tmp, tmp.open("wb"))
                self.handles[key][2].write(frame_record(encode_example(level[i], int(labels[i]), int(indices[i]))))
        for p in parts:
            self.part_counts[p] += 1
        self.count += n

    def close(self, commit: bool) -> None:
        for final, tmp, handle in self.handles.values():
            handle.close()
            if commit:
                os.replace(tmp, final)
            else:
                tmp.unlink(missing_ok=True)

    def remove_stale(self) -> None:
        """Delete files of this prefix that the new set does not have (more parts or levels than now)."""
        keep = {final.name for final, _, _ in self.handles.values()}
        pattern = re.compile(rf"{re.escape(self.name)}-r\d\d\.tfrecords\.\d\d\d")
        for f in self.directory.iterdir():
            if pattern.fullmatch(f.name) and f.name not in keep:
                f.unlink()


def write_tfrecords(batches: Iterable[tuple[Tensor, Tensor]], directory: str | Path, name: str,
                    min_resolution: int = 4, parts: int = 1, test_indices: Tensor | None = None,
                    test_parts: int = 1, split_seed: int | None = None, extra_meta: dict | None = None) -> dict:
    """Write (uint8 (B, C, S, S) images, labels) batches at every power-of-two resolution from S down to
    ``min_resolution``; record i of a split goes to part i mod ``parts``. Images whose position in the stream
    is in ``test_indices`` (see :func:`split_indices`) go to the ``<name>-test`` set instead. Returns (and
    saves) the metadata, ``extra_meta`` merged in.

    Files are written under temporary names and renamed when every batch is written; the old metadata is
    removed first and the new one written last, so an interrupted write never leaves metadata that
    describes files it did not finish. Files of an earlier write with more parts or levels are deleted."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    test_idx = torch.as_tensor([] if test_indices is None else test_indices, dtype=torch.long).flatten()
    writers = {"train": _SplitWriter(directory, name, parts)}
    if test_idx.numel():
        writers["test"] = _SplitWriter(directory, split_name(name, "test"), test_parts)
    meta: dict = {"name": name, "parts": parts, "count": 0}
    seen, ok = 0, False
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
            elif images.shape[1:] != (meta["channels"], meta["resolutions"][0], meta["resolutions"][0]):
                raise ValueError(f"every batch must have the first batch's image shape "
                                 f"{(meta['channels'], meta['resolutions'][0], meta['resolutions'][0])}, got {tuple(images.shape[1:])}")
            levels = [images]
            for _ in meta["resolutions"][1:]:
                levels.append(downsample_uint8(levels[-1]))
            labels = torch.as_tensor(labels).flatten()
            idx = torch.arange(seen, seen + images.shape[0])
            held_out = torch.isin(idx, test_idx)
            for split, sel in (("train", ~held_out), ("test", held_out)):
                if split in writers and bool(sel.any()):
                    writers[split].add([lvl[sel] for lvl in levels], labels[sel], idx[sel])
            seen += int(images.shape[0])
        if test_idx.numel() and int(test_idx.max()) >= seen:
            raise ValueError(f"test index {int(test_idx.max())} is beyond the {seen} images written")
        for split, w in writers.items():
            if w.count < w.parts:
                flag = "--parts" if split == "train" else "--test-parts"
                raise ValueError(f"{w.count} {split} images cannot fill {w.parts} parts: lower {flag}")
        ok = True
    finally:
        if ok:
            meta_path(directory, name).unlink(missing_ok=True)
        for w in writers.values():
            w.close(commit=ok)
    for w in writers.values():
        w.remove_stale()
    if "test" not in writers:  # a held-out set from an earlier write no longer matches this one
        _SplitWriter(directory, split_name(name, "test"), 1).remove_stale()
    test = writers.get("test")
    meta.update(count=writers["train"].count, part_counts=writers["train"].part_counts,
                test_count=test.count if test else 0, test_parts=test.parts if test else 0,
                test_part_counts=test.part_counts if test else [], split_seed=split_seed if test else None,
                **(extra_meta or {}))
    tmp = meta_path(directory, name).with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path(directory, name))
    return meta


# ---------------------------------------------------------------------------- validation
_FIX = "rerun scripts/prepare_tfrecords.py to rewrite the set"


def _is_power_of_two(n: object) -> bool:
    return isinstance(n, int) and n >= 1 and not n & (n - 1)


def check_meta(meta: dict, where: Path) -> None:
    """Raise ValueError naming the bad key of a ``<name>-meta.json``."""
    for key in ("channels", "resolutions", "parts", "count"):
        if key not in meta:
            raise ValueError(f"{where}: key '{key}' missing; {_FIX}")
    if not isinstance(meta["channels"], int) or meta["channels"] < 1:
        raise ValueError(f"{where}: 'channels' must be a positive integer, got {meta['channels']!r}; {_FIX}")
    bad = [r for r in meta["resolutions"] if not _is_power_of_two(r)]
    if bad or not meta["resolutions"]:
        raise ValueError(f"{where}: 'resolutions' must be powers of two, got {meta['resolutions']} (bad: {bad}); {_FIX}")
    for split in ("train", "test"):
        count, per_part = split_counts(meta, split)
        if sum(per_part) != count:
            key = "part_counts" if split == "train" else "test_part_counts"
            raise ValueError(f"{where}: '{key}' {per_part} sums to {sum(per_part)}, not the {split} count {count}; {_FIX}")


def check_first_record(path: Path, channels: int, resolution: int) -> None:
    """The first record holds a ``channels``×``resolution``² uint8 image (DareBlopy aborts the process on a
    record of another size, e.g. ALAE's prepare_celeba_hq_tfrecords.py writing 1024² into the 256² slot)."""
    payload = next(iter_records(path), None)
    if payload is None:
        raise TFRecordError(f"{path}: empty file; {_FIX}")
    try:
        features = decode_example(payload)
    except ValueError as err:
        raise TFRecordError(f"{path}: first record is not a tf.train.Example ({err}); {_FIX}") from err
    data, shape = features.get("data"), features.get("shape")
    want = [channels, resolution, resolution]
    if not isinstance(data, bytes) or len(data) != channels * resolution * resolution or (shape is not None and shape != want):
        got = shape if shape is not None else f"{len(data) if isinstance(data, bytes) else 'no'} data bytes"
        raise TFRecordError(f"{path}: records are {got}, but this level needs shape {want}; {_FIX}")


def validate_split(directory: str | Path, name: str, meta: dict, split: str, resolutions: Iterable[int],
                   full: bool = True) -> None:
    """Check every part of every requested level of a split before DareBlopy reads it: the file exists, its
    framing is intact, its record count matches the metadata, its first record has the level's shape and
    (``full``) every data CRC is right. Raises TFRecordError (a ValueError) naming the file and the fix."""
    directory = Path(directory)
    where = meta_path(directory, name)
    count, per_part = split_counts(meta, split)
    prefix = split_name(name, split)
    for res in resolutions:
        if res not in meta["resolutions"]:
            raise TFRecordError(f"{where}: level {res}px (r{int(math.log2(res)):02d}) was not written (written: "
                                f"{meta['resolutions']}); {_FIX} with --size {max(max(meta['resolutions']), res)} "
                                f"--min-resolution {min(min(meta['resolutions']), res)}")
        for part, expected in enumerate(per_part):
            f = level_path(directory, prefix, res, part)
            if not f.is_file():
                raise TFRecordError(f"{f}: missing (part {part} of {len(per_part)} of the {res}px {split} level); {_FIX}")
            try:
                n = verify_tfrecord(f)
                if full:
                    check_data_crcs(f)
            except TFRecordError as err:
                raise TFRecordError(f"{err}; {_FIX}") from err
            if n != expected:
                raise TFRecordError(f"{f}: {n} records, but {where.name} says {expected}; {_FIX}")
            check_first_record(f, meta["channels"], res)


# ---------------------------------------------------------------------------- reading
def read_meta(directory: str | Path, name: str) -> dict:
    path = meta_path(Path(directory), name)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: write the TFRecords first, e.g.\n"
                                f"  python scripts/prepare_tfrecords.py --dataset digits --out {directory} --name {name}")
    return json.loads(path.read_text())


def resolve_from_meta(directory: str | Path, name: str, img_size: int | None = None,
                      channels: int | None = None) -> tuple[int, int]:
    """(img_size, channels) of the set ``<directory>/<name>``: None reads ``<name>-meta.json`` (the largest
    resolution written, its channels); an explicit value must agree with it. Raises ValueError naming the key,
    the metadata file and the values it holds."""
    meta, where = read_meta(directory, name), meta_path(Path(directory), name)
    resolutions = [int(r) for r in meta.get("resolutions") or []]
    if "channels" not in meta or not resolutions:
        raise ValueError(f"{where}: 'channels' or 'resolutions' missing; {_FIX}")
    if img_size is None:
        img_size = max(resolutions)
    elif int(img_size) not in resolutions:
        raise ValueError(f"dataset.img_size={img_size} is not in the TFRecords: {where} lists the resolutions "
                         f"{resolutions} (without the override: the largest)")
    if channels is None:
        channels = meta["channels"]
    elif int(channels) != int(meta["channels"]):
        raise ValueError(f"dataset.channels={channels} but {where} says the TFRecords have {meta['channels']} "
                         f"channels (without the override: read from there)")
    return int(img_size), int(channels)


def meta_resolver(key: str, directory: str, name: str) -> int:
    """The ``${tfrecord_meta:<img_size|channels>,<path>,<tfrecord_name>}`` interpolation of
    conf/dataset/tfrecord.yaml: the value the metadata gives (:func:`resolve_from_meta`)."""
    keys = ("img_size", "channels")
    if key not in keys:
        raise ValueError(f"tfrecord_meta: key must be one of {keys}, got {key!r}")
    return resolve_from_meta(directory, name)[keys.index(key)]


def parsed_yielder(files: list[str], channels: int, resolution: int, buffer_size: int, seed: int, epoch: int,
                   with_labels: bool):
    """DareBlopy's shuffled reader of ``data`` (and ``label``): files in a seeded order, records through a
    ``buffer_size`` shuffle buffer; the order is a function of (files, buffer_size, seed, epoch) only.
    Validate the files first (:func:`validate_split`): a record of another shape aborts the process."""
    features = {"data": db.FixedLenFeature([channels, resolution, resolution], db.uint8)}
    if with_labels:
        features["label"] = db.FixedLenFeature([1], db.int64)
    parser = db.RecordParser(features, True)
    return db.ParsedRecordYielderRandomized(parser, files, buffer_size, seed, epoch)


def next_records(yielder, n: int):
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
        y = parsed_yielder(self.files, self.channels, self.resolution, self.buffer_size, self.seed, self.epoch, self.with_labels)
        self.epoch += 1
        for _ in range(len(self)):
            out = next_records(y, self.batch_size)
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
        from gancollapse.data.images import UInt8Images

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
