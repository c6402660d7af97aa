"""The restricted PyTorch checkpoint reader: both file layouts, every tensor layout, and refusals."""
import collections
import io
import os
import subprocess
import sys
import pickle
import zipfile

import numpy as np
import pytest

from centernet_core.importers import torch_pickle
from centernet_core.importers.torch_pickle import CheckpointError

SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}}


class _Call:
    """Pickles as "call fn(*args)": what a malicious checkpoint contains."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _legacy_file(path, payload: bytes, header: bytes | None = None):
    header = header if header is not None else pickle.dumps(torch_pickle.LEGACY_MAGIC, protocol=2)
    with open(path, "wb") as f:
        f.write(header + pickle.dumps(1001, protocol=2) + pickle.dumps(SYS_INFO, protocol=2) + payload
                + pickle.dumps([], protocol=2))


def _zip_file(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")


@pytest.mark.parametrize("layout, attack", [("legacy", "os.system"), ("legacy", "builtins.eval"), ("legacy", "header"),
                                            ("zip", "os.system"), ("zip", "builtins.eval")])
def test_pickle_calling_anything_else_is_refused_and_not_run(tmp_path, layout, attack):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    if attack == "os.system":
        payload = pickle.dumps({"epoch": 1, "state_dict": _Call(os.system, command)}, protocol=2)
    else:
        payload = pickle.dumps(_Call(eval, f"__import__('os').system({command!r})"), protocol=2)
    path = str(tmp_path / "evil.pth")
    if attack == "header":  # the very first pickle of a legacy file is restricted too
        _legacy_file(path, pickle.dumps({}, protocol=2), header=payload)
    elif layout == "legacy":
        _legacy_file(path, payload)
    else:
        _zip_file(path, payload)
    refused = r"refused to load: the pickle asks for '(posix|os|builtins|__builtin__)\.(system|eval)'"
    with pytest.raises(CheckpointError, match=refused):
        torch_pickle.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("torch.nn.modules.conv", "Conv2d"),
                                          ("torch._utils", "_rebuild_tensor_v2.__globals__"),
                                          ("torch.serialization", "_load_from_bytes"), ("builtins", "getattr")])
def test_only_the_tensor_globals_resolve(tmp_path, module, name):
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."  # GLOBAL, empty tuple, REDUCE
    path = str(tmp_path / "x.pth")
    _zip_file(path, payload)
    with pytest.raises(CheckpointError, match=f"asks for '{module}.{name}'"):
        torch_pickle.load(path)


def test_files_that_are_not_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        torch_pickle.load(str(tmp_path / "absent.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01 not a pickle at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        torch_pickle.load(str(junk))
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError, match="no torch.save magic number"):
        torch_pickle.load(str(plain))
    nozip = tmp_path / "nozip.pth"
    with zipfile.ZipFile(nozip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="without <dir>/data.pkl"):
        torch_pickle.load(str(nozip))


# ---------------------------------------------------------------- files written by torch itself

try:
    import torch
except ImportError:  # the `dev` extra pins torch; without it only the torch-free tests run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the `dev` extra) writes the reference checkpoints")


def _tensors():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    return collections.OrderedDict([
        ("conv.weight", torch.randn(8, 3, 3, 3, generator=g)),
        ("transposed", base.t()),  # non-contiguous strides
        ("row2", base[2]),  # shares base's storage at an offset
        ("cols", base[:, 1:4]),  # offset and strides
        ("half", torch.randn(5, generator=g).half()),
        ("bf16", torch.randn(5, generator=g).bfloat16()),
        ("long", torch.arange(-3, 7)),
        ("int", torch.arange(4, dtype=torch.int32)),
        ("mask", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(2.5)),
        ("empty", torch.zeros(0, 3)),
        ("bn.num_batches_tracked", torch.tensor(1234)),
    ])


@needs_torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_round_trip_of_every_tensor_layout(tmp_path, zip_format):
    tensors = _tensors()
    saved = {"epoch": 70, "state_dict": tensors,
             "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                           "param_groups": [{"lr": 1.25e-4, "betas": (0.9, 0.999), "params": [0]}]}}
    path = str(tmp_path / "ck.pth")
    torch.save(saved, path, _use_new_zipfile_serialization=zip_format)
    with open(path, "rb") as f:
        assert (f.read(2) == b"PK") == zip_format
    got = torch_pickle.load(path)
    assert got["epoch"] == 70
    assert isinstance(got["state_dict"], collections.OrderedDict)
    assert list(got["state_dict"]) == list(tensors)
    for key, t in tensors.items():
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        value = got["state_dict"][key]
        assert value.dtype == want.dtype and value.shape == want.shape, key
        np.testing.assert_array_equal(value, want, err_msg=key)
        assert value.flags["C_CONTIGUOUS"]
    assert got["optimizer"]["param_groups"] == [{"lr": 1.25e-4, "betas": (0.9, 0.999), "params": [0]}]
    np.testing.assert_array_equal(got["optimizer"]["state"][0]["exp_avg"], [1.0, 1.0])
    assert float(got["optimizer"]["state"][0]["step"]) == 3.0


@needs_torch
def test_bare_state_dict_and_parameters(tmp_path):
    # CornerNet / ExtremeNet snapshots are a bare state dict; a pickled nn.Parameter rebuilds too.
    path = str(tmp_path / "p.pth")
    param = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    torch.save({"module.w": param.detach(), "p": [param]}, path)
    got = torch_pickle.load(path)
    np.testing.assert_array_equal(got["module.w"], np.arange(6.0, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(got["p"][0], got["module.w"])


@needs_torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_files_fail_clearly(tmp_path, zip_format):
    path = tmp_path / "ck.pth"
    torch.save({"w": torch.randn(1000)}, str(path), _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1500])
    with pytest.raises(CheckpointError, match="truncated|damaged|incomplete"):
        torch_pickle.load(str(path))


@needs_torch
def test_storage_records_are_read_by_key_not_by_order(tmp_path):
    # The zip reader must look storages up by their key: rewrite an archive in reverse order.
    src, dst = tmp_path / "a.pth", tmp_path / "b.pth"
    tensors = {"a": torch.arange(5.0), "b": torch.arange(3) * 7}
    torch.save(tensors, str(src))
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in reversed(zin.infolist()):
            zout.writestr(info.filename.replace(info.filename.split("/")[0], "renamed", 1), zin.read(info))
    got = torch_pickle.load(str(dst))
    np.testing.assert_array_equal(got["a"], np.arange(5.0, dtype=np.float32))
    np.testing.assert_array_equal(got["b"], np.arange(3) * 7)


@needs_torch
def test_reading_needs_no_torch(tmp_path):
    # The reader must not import torch itself: load in an interpreter where `import torch` fails.
    path = str(tmp_path / "ck.pth")
    torch.save({"w": torch.arange(4.0)}, path, _use_new_zipfile_serialization=False)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from centernet_core.importers import torch_pickle\n"
            f"print(torch_pickle.load({path!r})['w'].tolist())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0.0, 1.0, 2.0, 3.0]"


@needs_torch
def test_legacy_storage_views(tmp_path):
    # torch < 1.0 could save a storage that is a view into a bigger one: (view key, offset, size).
    # Hand-write such a file: the root holds 0..9, the tensor sits on the view [2:6] at offset 1.
    class Store:
        def __init__(self, pid):
            self.pid = pid

    class Tensor:
        def __init__(self, store, offset, size):
            self.args = (store, offset, size, (1,), False, collections.OrderedDict())

        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.pid if isinstance(obj, Store) else None

    view = Store(("storage", torch.FloatStorage, "root", "cpu", 10, ("view", 2, 4)))
    body = io.BytesIO()
    Pickler(body, protocol=2).dump({"t": Tensor(view, 1, (3,))})
    data = np.arange(10, dtype="<f4").tobytes()
    path = tmp_path / "old.pth"
    path.write_bytes(pickle.dumps(torch_pickle.LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
                     + pickle.dumps(SYS_INFO, protocol=2) + body.getvalue() + pickle.dumps(["root"], protocol=2)
                     + np.int64(10).astype("<i8").tobytes() + data)
    np.testing.assert_array_equal(torch_pickle.load(str(path))["t"], [3.0, 4.0, 5.0])
