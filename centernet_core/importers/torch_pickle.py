"""Read PyTorch checkpoints (``torch.save`` files) without PyTorch, and without running them.

A ``.pth`` file is a pickle, and a pickle may name any Python callable to run while it
loads. This reader uses a restricted unpickler: the only globals it resolves are the ones
``torch.save`` writes for tensors (``torch._utils._rebuild_tensor_v2`` and its older and
parameter variants, the typed storage classes such as ``torch.FloatStorage``) and
``collections.OrderedDict``; each resolves to a function of this module, never to
PyTorch. Any other global (``os.system``, ``builtins.eval``, a model class, ...) stops the
load with :class:`CheckpointError` before anything is called.

Both on-disk layouts are read:

- zip (torch >= 1.6 default): ``<dir>/data.pkl`` plus one raw record ``<dir>/data/<key>``
  per storage, and an optional ``<dir>/byteorder`` record;
- legacy (torch < 1.6, or ``_use_new_zipfile_serialization=False``): pickles of the magic
  number, the protocol version and ``sys_info``, then the object pickle, then the sorted
  list of storage keys, then per key an int64 element count and the raw storage bytes.

Tensors come back as contiguous (possibly read-only) numpy arrays in their saved layout
(PyTorch's NCHW / OIHW).
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from centernet_core import storage
from centernet_core.errors import DataError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch.<Name>Storage -> numpy dtype of one element. BFloat16 has no numpy dtype: it is
# read as uint16 and widened to float32 (bfloat16 is the top half of a float32).
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}


class CheckpointError(DataError):
    """A checkpoint that cannot be read, is unsafe to load, or does not fit the model."""


class _StorageType:
    """What ``torch.FloatStorage`` (and friends) resolve to: just the element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage named in the pickle; its bytes are attached after the pickle is read."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int):
        self.type, self.key, self.numel = storage_type, key, numel
        self.array: np.ndarray | None = None  # 1-D, filled by the format reader

    def attach(self, data: bytes, byteorder: str) -> None:
        dtype = self.type.dtype.newbyteorder("<" if byteorder == "little" else ">")
        count = len(data) // dtype.itemsize
        if count < self.numel:
            raise CheckpointError(f"storage {self.key}: {count} elements on disk, {self.numel} expected; "
                                  "the file is truncated or corrupt")
        # No copy for native byte order: tensors may be read-only views of the file's bytes.
        array = np.frombuffer(data, dtype=dtype, count=self.numel)
        array = array.astype(self.type.dtype.newbyteorder("="), copy=False)
        if self.type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        self.array = array


class _Tensor:
    """A tensor waiting for its storage bytes: storage, element offset, size, stride."""

    def __init__(self, storage_: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage_, int(offset), tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        base = self.storage.array
        if not self.size:
            return np.array(base[self.offset])
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, base.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or last >= base.size:
            raise CheckpointError(f"a tensor of size {self.size} reaches past its storage {self.storage.key}")
        strides = tuple(s * base.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(base[self.offset:], self.size, strides, writeable=False)
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage_, offset, size, stride, *_ignored):
    # _rebuild_tensor_v2 adds requires_grad, backward_hooks and (newer) metadata: unused here.
    if not isinstance(storage_, _Storage):
        raise CheckpointError("malformed checkpoint: a tensor is not built on a storage")
    return _Tensor(storage_, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor-building globals; storages come through ``persistent_load``."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module in ("torch", "torch.storage") and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"{self.source}: refused to load: the pickle asks for '{module}.{name}', which is "
                              "not part of a tensor checkpoint; nothing was run. Only load files you trust")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"{self.source}: unexpected persistent id {pid!r:.80}; not a torch.save file")
        _, storage_type, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        root = self.storages.setdefault(str(key), _Storage(storage_type, str(key), int(numel)))
        if view is None:
            return root
        # Legacy storage views (torch < 1.0): (view key, element offset, element count) into root.
        view_key, offset, count = view
        return self.storages.setdefault(str(view_key), _View(root, int(offset), int(count), str(view_key)))


class _View(_Storage):
    """A legacy storage view: a slice of its root storage, filled when the root is."""

    def __init__(self, root: _Storage, offset: int, numel: int, key: str):
        super().__init__(root.type, key, numel)
        self.root, self.offset = root, offset

    def resolve(self) -> None:
        self.array = self.root.array[self.offset:self.offset + self.numel]


def _unpickle(data, source: str) -> tuple[object, _RestrictedUnpickler]:
    unpickler = _RestrictedUnpickler(io.BytesIO(data) if isinstance(data, bytes) else data, source)
    try:
        return unpickler.load(), unpickler
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{source}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def _materialize(obj):
    """Replace every pending tensor in a tree of dicts, lists and tuples by a numpy array."""
    if isinstance(obj, _Tensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialize(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _load_zip(raw: bytes, source: str):
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointError(f"{source}: a zip file without <dir>/data.pkl is not a torch.save checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = zf.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        obj, unpickler = _unpickle(zf.read(pkl[0]), source)
        for key, st in unpickler.storages.items():
            if isinstance(st, _View):
                continue
            name = f"{prefix}data/{key}"
            if name not in names:
                raise CheckpointError(f"{source}: storage record {name} is missing; the file is incomplete")
            st.attach(zf.read(name), byteorder)
    return obj, unpickler


def _load_legacy(raw: bytes, source: str):
    f = io.BytesIO(raw)
    magic = _unpickle(f, source)[0]  # restricted like every other pickle of the file
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{source}: not a PyTorch checkpoint (no torch.save magic number; very old "
                              "tar-format files are not supported: re-save them with torch)")
    protocol, sys_info = _unpickle(f, source)[0], _unpickle(f, source)[0]
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"{source}: legacy checkpoint protocol {protocol} is not supported "
                              f"(expected {LEGACY_PROTOCOL})")
    byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
    obj, unpickler = _unpickle(f, source)
    keys, _ = _unpickle(f, source)
    for key in keys:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{source}: the file ends before storage {key}; it is truncated")
        (numel,) = struct.unpack("<q" if byteorder == "little" else ">q", head)
        st = unpickler.storages.get(str(key))
        if st is None:
            raise CheckpointError(f"{source}: storage {key} is listed but never used; the file is corrupt")
        st.attach(f.read(numel * st.type.dtype.itemsize), byteorder)
    return obj, unpickler


def load(path: str):
    """The object saved by ``torch.save`` at ``path``, with tensors as numpy arrays.

    Reads local paths and any scheme ``storage`` supports. Raises CheckpointError (one line
    saying what to do) for a file that is not a torch checkpoint, is truncated, or whose
    pickle names any global other than the tensor-building ones listed in this module.
    """
    if not storage.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    raw = storage.read_bytes(path)
    if raw[:4] == b"PK\x03\x04":
        try:
            obj, unpickler = _load_zip(raw, path)
        except zipfile.BadZipFile as e:
            raise CheckpointError(f"{path}: damaged zip checkpoint ({e}); download it again") from None
    else:
        obj, unpickler = _load_legacy(raw, path)
    for st in unpickler.storages.values():
        if isinstance(st, _View):
            st.resolve()
        elif st.array is None:
            raise CheckpointError(f"{path}: storage {st.key} has no data in the file; the file is incomplete")
    return _materialize(obj)
