"""The installed `centernet` command: profiles, config errors, exit codes, missing TensorFlow, storage."""
import os
import subprocess
import sys

import pytest

from centernet_core import storage
from centernet_core.errors import StorageError

PROFILES = ["cpu", "cpu-bf16", "gpu", "gpu-x8", "multiworker", "tpu-v3-8"]


def run_cli(*args, cwd="/", env=None, pre="", timeout=120):
    """Run the CLI in a fresh interpreter from an unrelated directory; `pre` runs first."""
    code = f"{pre}\nimport sys\nfrom centernet_cli.main import main\nmain(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)


def test_profiles_list_and_show():
    r = run_cli("profiles", "list")
    assert r.returncode == 0, r.stderr
    for name in PROFILES:
        assert name in r.stdout
    r = run_cli("profiles", "show", "tpu-v3-8")
    assert r.returncode == 0
    assert "strategy: tpu" in r.stdout and "precision: mixed_bfloat16" in r.stdout
    assert "global_batch_size: 128" in r.stdout


def test_config_errors_are_one_line_with_exit_2():
    r = run_cli("config", "--experiment", "shapes-tiny", "--set", "model.no_such_key=1")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "unknown config key 'model.no_such_key'; did you mean" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("config", "--experiment", "shapes-tiny", "--set", "train.steps=abc")
    assert r.returncode == 2 and "train.steps: expected an integer, got 'abc'" in r.stderr
    r = run_cli("config", "--experiment", "nope")
    assert r.returncode == 2 and "unknown experiment 'nope'" in r.stderr
    r = run_cli("profiles", "show", "tpu-v9")
    assert r.returncode == 2 and "unknown profile 'tpu-v9'" in r.stderr


def test_debug_shows_the_traceback():
    r = run_cli("--debug", "config", "--experiment", "shapes-tiny", "--set", "train.steps=abc")
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr


def test_version_and_resolved_config_output():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("centernet ")
    r = run_cli("config", "-e", "hourglass104-coco", "-p", "gpu-x8", "--set", "train.steps=1000", "--set", "train.warmup_steps=100")
    assert r.returncode == 0
    assert "backbone: hourglass104" in r.stdout and "steps: 2000" in r.stdout  # 1000 @128 -> 2000 @64


def test_missing_tensorflow_names_the_extra():
    # `import tensorflow` fails in this interpreter; a command that needs it says what to install.
    block = "import sys; sys.modules['tensorflow'] = None"
    r = run_cli("config", "--config", "s3://bucket/exp.yaml", pre=block)
    assert r.returncode == 2
    assert "TensorFlow is not installed" in r.stderr and "pip install 'centernet[cpu]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # Commands that need no TensorFlow still work without it.
    assert run_cli("profiles", "list", pre=block).returncode == 0


def test_unregistered_storage_scheme_fails_before_work(tmp_path):
    r = run_cli("config", "--config", "s3://bucket/exp.yaml")
    assert r.returncode == 2
    assert "storage scheme 's3://' is not available" in r.stderr
    assert "tensorflow-io" in r.stderr and "gs://" in r.stderr


def test_storage_scheme_message_when_tensorflow_io_registers_nothing(monkeypatch):
    import types
    monkeypatch.setitem(sys.modules, "tensorflow_io", types.ModuleType("tensorflow_io"))
    monkeypatch.setattr(storage, "_checked", set())
    with pytest.raises(StorageError, match=r"'hdfs://' is not available: tensorflow-io is installed but registers no file system"):
        storage.check_scheme("hdfs://namenode/data/train.tfrecord")


def test_builtin_schemes_need_no_plugin(tmp_path):
    storage.check_scheme("gs://bucket/x")  # built into TensorFlow: no error
    path = str(tmp_path / "a" / "b.txt")
    storage.write_text_atomic(path, "hello")
    assert storage.read_text(path) == "hello"
    assert os.listdir(tmp_path / "a") == ["b.txt"]  # no temporary file left behind


def test_failed_atomic_write_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")

    def broken_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage, "rename", broken_rename)
    with pytest.raises(OSError, match="disk full"):
        storage.write_text_atomic(str(target), "new")
    assert os.listdir(tmp_path) == ["out.json"] and target.read_text() == "old"
