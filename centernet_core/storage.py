"""Every path the toolkit reads or writes goes through here.

Remote paths use tf.io.gfile; local paths use the standard library, so config and
metadata files can be read before (or without) TensorFlow. Local paths and ``gs://``
work with TensorFlow alone. Schemes such as ``s3://``, ``hdfs://``
and ``az://`` need a file-system plugin: tensorflow-io is imported if present, and a
scheme that is still not registered fails before any work starts.
"""
from __future__ import annotations

import contextlib
import glob as _glob
import os
import posixpath
import shutil
import uuid

from centernet_core.errors import StorageError
from centernet_core.tf_setup import require_tensorflow

BUILTIN_SCHEMES = {"", "file", "gs", "ram"}
_checked: set[str] = set()


def scheme(path: str) -> str:
    return path.split("://", 1)[0].lower() if "://" in path else ""


def _is_local(path: str) -> bool:
    return scheme(path) in ("", "file")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def check_scheme(path: str) -> None:
    """Fail fast, with what to do, when ``path``'s storage scheme is not usable here."""
    s = scheme(path)
    if s in BUILTIN_SCHEMES or s in _checked:
        return
    tf = require_tensorflow()
    try:
        import tensorflow_io  # noqa: F401  (registers s3://, hdfs://, az:// where it can)
        have_tfio = True
    except Exception:  # ImportError, or a plugin that fails to load on this TF
        have_tfio = False
    try:
        tf.io.gfile.exists(path)
    except tf.errors.UnimplementedError:
        why = ("tensorflow-io is installed but registers no file system for it on TensorFlow "
               f"{tf.__version__} (its last release does so only on TF 2.16)" if have_tfio else
               "it needs tensorflow-io: pip install 'centernet[io]' (its last release registers "
               "file systems only on TF 2.16)")
        raise StorageError(f"storage scheme '{s}://' is not available: {why}; "
                           "use a local path or gs://, or a TF 2.16 environment") from None
    except tf.errors.OpError:
        pass  # the scheme is registered; this path's own problems are reported where it is used
    _checked.add(s)


def _gfile():
    return require_tensorflow().io.gfile


def join(*parts: str) -> str:
    return posixpath.join(*parts) if "://" in parts[0] else os.path.join(*parts)


def dirname(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) if "://" in path else os.path.dirname(path.rstrip(os.sep))


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def exists(path: str) -> bool:
    if _is_local(path):
        return os.path.exists(_local(path))
    check_scheme(path)
    gfile = _gfile()
    if not gfile.exists(path):
        return False
    if scheme(path) == "ram":  # ram:// says yes to any prefix of a name ("out" of "out.tmp-1/x")
        path = path.rstrip("/")
        return bool(gfile.glob(path) or gfile.glob(path + "/*"))
    return True


def isdir(path: str) -> bool:
    if _is_local(path):
        return os.path.isdir(_local(path))
    check_scheme(path)
    return exists(path) and _gfile().isdir(path)


def makedirs(path: str) -> None:
    if _is_local(path):
        os.makedirs(_local(path), exist_ok=True)
        return
    check_scheme(path)
    _gfile().makedirs(path)


def glob(pattern: str) -> list[str]:
    if _is_local(pattern):
        return sorted(_glob.glob(_local(pattern)))
    check_scheme(pattern)
    return sorted(_gfile().glob(pattern))


def open_file(path: str, mode: str = "rb"):
    """A file object for ``path`` (local file or tf.io.gfile.GFile)."""
    if _is_local(path):
        return open(_local(path), mode)
    check_scheme(path)
    return _gfile().GFile(path, mode)


def read_text(path: str) -> str:
    with open_file(path, "rb") as f:
        return f.read().decode("utf-8")


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def remove(path: str) -> None:
    if _is_local(path):
        os.remove(_local(path))
        return
    check_scheme(path)
    _gfile().remove(path)


def realpath(path: str) -> str:
    """``path`` with links resolved (local paths); remote paths as they are."""
    return os.path.realpath(_local(path)) if _is_local(path) else path.rstrip("/")


def rename(src: str, dst: str) -> None:
    """Rename the file or directory ``src`` to ``dst``, replacing a file ``dst`` (atomic on local disks).

    tf.io.gfile renames a directory on some file systems without its contents (``ram://``
    moves only the directory entry), so a remote directory is moved file by file.
    """
    if _is_local(dst):
        os.replace(_local(src), _local(dst))
        return
    check_scheme(dst)
    gfile = _gfile()
    if not gfile.isdir(src):
        gfile.rename(src, dst, overwrite=True)
        return
    src = src.rstrip("/")
    for folder, _, files in gfile.walk(src):
        target = dst + folder[len(src):]
        gfile.makedirs(target)
        for name in files:
            gfile.rename(posixpath.join(folder, name), posixpath.join(target, name), overwrite=True)
    gfile.rmtree(src)


def temp_name(path: str) -> str:
    """A sibling name for writing ``path`` before an atomic rename."""
    return f"{path}.tmp-{uuid.uuid4().hex[:8]}"


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write to a temporary sibling, then rename: readers never see half a file."""
    parent = dirname(path)
    if parent and not exists(parent):
        makedirs(parent)
    tmp = temp_name(path)
    try:
        with open_file(tmp, "wb") as f:
            f.write(data)
        rename(tmp, path)
    except BaseException:
        if exists(tmp):
            remove(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_tree(path: str) -> None:
    """Delete the directory ``path`` and everything under it (local or remote)."""
    if _is_local(path):
        shutil.rmtree(_local(path))
        return
    check_scheme(path)
    _gfile().rmtree(path)


@contextlib.contextmanager
def staged_directory(path: str):
    """Write a new directory all-or-nothing: yields a sibling staging directory.

    On a clean exit the staging directory replaces ``path`` (which must be absent or an
    empty directory); on any exception it is deleted and ``path`` is left as it was.
    """
    path = path.rstrip("/")
    parent = dirname(path)
    if parent:
        makedirs(parent)
    staging = temp_name(path)
    makedirs(staging)
    try:
        yield staging
        if isdir(path):  # an empty directory: replaced by the rename
            remove_tree(path)
        rename(staging, path)
    except BaseException:
        if exists(staging):
            remove_tree(staging)
        raise
