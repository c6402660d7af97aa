"""Serialize ``tf.train.Example`` protos in pure Python, without importing TensorFlow.

The COCO writer builds examples in worker processes; importing TensorFlow there costs
seconds per process and memory per worker, while the Example wire format is three tiny
messages. This module writes exactly the bytes ``tf.train.Example.SerializeToString``
would parse back (tests/test_prepare_coco.py checks them with ``tf.io.parse_example``):

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }        # map entry: key = 1, value = 2
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                       Int64List int64_list = 3; } }       # each: repeated value = 1 (packed)
"""
from __future__ import annotations

import struct
from typing import Iterable, Union

FeatureValue = Union[bytes, str, int, float, Iterable]


def _varint(value: int) -> bytes:
    """Base-128 varint; negative int64 values use their 64-bit two's complement (10 bytes)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def bytes_feature(values: Iterable[bytes | str]) -> bytes:
    """Serialized ``Feature`` holding a ``BytesList`` (str values are UTF-8 encoded)."""
    items = b"".join(_field(1, v.encode("utf-8") if isinstance(v, str) else bytes(v)) for v in values)
    return _field(1, items)


def float_feature(values: Iterable[float]) -> bytes:
    """Serialized ``Feature`` holding a packed ``FloatList`` (float32)."""
    values = [float(v) for v in values]
    packed = struct.pack(f"<{len(values)}f", *values)
    return _field(2, _field(1, packed) if values else b"")


def int64_feature(values: Iterable[int]) -> bytes:
    """Serialized ``Feature`` holding a packed ``Int64List``."""
    packed = b"".join(_varint(int(v)) for v in values)
    return _field(3, _field(1, packed) if packed else b"")


def serialize_example(features: dict[str, bytes]) -> bytes:
    """Serialized ``tf.train.Example`` from ``{key: serialized Feature}``.

    Build the values with ``bytes_feature``, ``float_feature`` and ``int64_feature``.
    Keys are written in sorted order, so equal inputs give equal bytes.
    """
    entries = b"".join(_field(1, _field(1, key.encode("utf-8")) + _field(2, feature))
                       for key, feature in sorted(features.items()))
    return _field(1, entries)
