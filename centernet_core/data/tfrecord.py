"""Write TFRecord files without TensorFlow, so ``prepare coco`` workers need not import it.

A TFRecord file is a sequence of framed records (the format ``tf.data.TFRecordDataset``
reads)::

    uint64 length (little-endian)
    uint32 masked CRC32C of the 8 length bytes
    byte   data[length]
    uint32 masked CRC32C of data

with ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32). The CRC32C
comes from ``google-crc32c`` (C, hardware accelerated). Where that package is missing,
``open_writer`` falls back to ``tf.io.TFRecordWriter``, which writes the same bytes but
costs a TensorFlow import. tests/test_prepare_coco.py checks the bytes against
TensorFlow's writer and reader.
"""
from __future__ import annotations

import struct

from centernet_core import storage

try:
    import google_crc32c
except ImportError:  # the writer falls back to TensorFlow's
    google_crc32c = None

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record's bytes as they appear in a TFRecord file."""
    length = struct.pack("<Q", len(data))
    return b"".join([length, struct.pack("<I", masked_crc32c(length)), data,
                     struct.pack("<I", masked_crc32c(data))])


class _Writer:
    """``tf.io.TFRecordWriter``'s ``write`` / ``close`` on a ``storage`` file."""

    def __init__(self, path: str):
        self._file = storage.open_file(path, "wb")

    def write(self, record: bytes) -> None:
        self._file.write(frame(record))

    def close(self) -> None:
        self._file.close()


def open_writer(path: str):
    """A TFRecord writer for ``path`` (any storage path): ``write(bytes)``, ``close()``."""
    if google_crc32c is None:
        from centernet_core.tf_setup import require_tensorflow

        return require_tensorflow(quiet=True).io.TFRecordWriter(path)
    return _Writer(path)
