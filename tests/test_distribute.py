"""Strategies and precision from RuntimeConfig; missing hardware fails fast in one line."""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time

import keras
import pytest

from centernet_core import distribute
from centernet_core.config import RuntimeConfig


def _rt(**kw):
    return dataclasses.replace(RuntimeConfig(), **kw)


def _python(code, timeout=90, env=None):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_strategy_is_the_ambient_one():
    import tensorflow as tf
    s = distribute.build_strategy(_rt(strategy="default"))
    assert s is tf.distribute.get_strategy() and s.num_replicas_in_sync == 1
    assert distribute.is_chief(s)


def test_one_device_without_gpu_fails_fast():
    with pytest.raises(distribute.RuntimeSetupError, match="^no GPU found; try --profile cpu$"):
        distribute.build_strategy(_rt(strategy="one_device"))


@pytest.mark.parametrize("raw, fragment", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "needs cluster.worker"),
    ('{"cluster": {"worker": ["a:1"]}}', "needs task.type and task.index"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "worker:3 is not in its cluster"),
])
def test_tf_config_errors(raw, fragment):
    with pytest.raises(distribute.RuntimeSetupError, match=fragment) as e:
        distribute.parse_tf_config(raw)
    assert "\n" not in str(e.value)


def test_multi_worker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(distribute.RuntimeSetupError, match="TF_CONFIG"):
        distribute.build_strategy(_rt(strategy="multi_worker"))


def test_valid_tf_config_parses():
    spec = distribute.parse_tf_config(json.dumps({"cluster": {"worker": ["h:1", "h:2"]},
                                               "task": {"type": "worker", "index": 1}}))
    assert spec["task"]["index"] == 1


@pytest.mark.parametrize("address", ["grpc://127.0.0.1:{port}", "local", "no-such-tpu-name"])
def test_tpu_absent_fails_fast_in_one_line(address):
    address = address.format(port=_free_port())
    code = ("from centernet_core import distribute\nfrom centernet_core.config import RuntimeConfig\n"
            f"try:\n    distribute.build_strategy(RuntimeConfig(strategy='tpu', tpu={address!r}))\n"
            "except distribute.RuntimeSetupError as e:\n    print('ERR', e)\n")
    start = time.monotonic()
    r = _python(code, timeout=60)
    assert time.monotonic() - start < 60
    assert f"ERR no TPU found at {address}; try --profile cpu" in r.stdout.splitlines(), r.stdout + r.stderr


def test_mirrored_over_two_logical_cpus():
    code = ("from centernet_core import distribute\nfrom centernet_core.config import RuntimeConfig\n"
            "s = distribute.build_strategy(RuntimeConfig(strategy='mirrored', num_devices=2))\n"
            "print('REPLICAS', s.num_replicas_in_sync, sorted(s.extended.worker_devices))\n")
    r = _python(code)
    assert "REPLICAS 2 ['/job:localhost/replica:0/task:0/device:CPU:0', " \
           "'/job:localhost/replica:0/task:0/device:CPU:1']" in r.stdout, r.stderr


def test_mirrored_after_initialisation_says_what_to_do():
    code = ("import tensorflow as tf\ntf.config.list_logical_devices('CPU')\n"
            "from centernet_core import distribute\nfrom centernet_core.config import RuntimeConfig\n"
            "try:\n    distribute.build_strategy(RuntimeConfig(strategy='mirrored', num_devices=3))\n"
            "except distribute.RuntimeSetupError as e:\n    print('ERR', e)\n")
    r = _python(code)
    assert "ERR runtime.num_devices=3 but no GPU and only 1 CPU device(s)" in r.stdout, r.stderr


@pytest.mark.parametrize("policy, compute", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16"),
                                             ("float32", "float32")])
def test_set_precision(policy, compute):
    try:
        distribute.set_precision(policy)
        layer = keras.layers.Dense(2)
        layer.build((None, 3))
        assert layer.compute_dtype == compute and layer.kernel.dtype == "float32"
    finally:
        distribute.set_precision("float32")


def test_unknown_precision():
    with pytest.raises(distribute.RuntimeSetupError, match="unknown runtime.precision 'fp8'"):
        distribute.set_precision("fp8")
