"""The TFRecord file format, in Python (no TensorFlow needed): CRC32C, framing, ``tf.train.Example`` records.

Framing per record: uint64 length, uint32 masked CRC32C of the length, data, uint32 masked CRC32C of the data
(TFRecord format). CRC32C uses ``google_crc32c`` when installed (``pip install google-crc32c``), else a
pure-Python table (about 10–20 MB/s).

Each record of this project's sets is a ``tf.train.Example`` with ``shape`` (int64 [C, H, W]), ``data`` (bytes:
raw uint8, CHW order), ``label`` (int64) and ``index`` (int64: the image's position in the source dataset), the
layout of ALAE (Pidhorskyi, Adjeroh & Doretto, "Adversarial Latent Autoencoders", CVPR 2020,
github.com/podgorskiy/ALAE, ``dataset_preparation/``). Reading the framing back (:func:`verify_tfrecord`,
:func:`iter_records`) is what keeps a bad file away from DareBlopy's C++ reader (:mod:`~.tfrecord_reader`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor


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
