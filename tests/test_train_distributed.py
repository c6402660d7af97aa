"""Training across processes and devices: mirrored == one device, two workers agree, SIGTERM resumes.

Each case runs in fresh interpreters: logical CPU devices and multi-worker clusters must be
set up before TensorFlow initialises. Loopback ports only; every wait is bounded.
"""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TINY = ["model.input_size=64", "runtime.global_batch_size=4", "train.scale_with_batch=false", "train.steps=4",
        "train.warmup_steps=1", "runtime.steps_per_loop=2", "train.log_every=2", "train.checkpoint_every=2",
        "data.shuffle_buffer=8"]

EQUIVALENCE = r"""
import json, os, sys
import numpy as np
from centernet_core import config as config_lib
from centernet_core.modeling.layers import Conv2D as ModelConv2D
from centernet_core.training import conv_grad
from centernet_core.training import optim
from centernet_core import distribute
strategy = distribute.build_strategy(config_lib.RuntimeConfig(strategy=sys.argv[1], num_devices=int(sys.argv[2])))
import keras
import tensorflow as tf
from centernet_core.data.pipeline import build_dataset
from centernet_core.tasks import build_task
from centernet_core.training.loop import make_train_loop

# A large Adam epsilon makes the update proportional to the gradient (not its sign), and a
# small clip norm makes the global-norm clip act: both would expose a wrongly reduced gradient.
cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=sys.argv[4:] + [
    "train.adam_epsilon=1.0", "train.clip_norm=0.5", "train.learning_rate=0.05", "train.schedule=constant",
    "train.warmup_steps=0"])
images = build_dataset(sys.argv[3], cfg, False, batch_size=1).unbatch().take(8)
images = images.map(lambda f, t: ({"image": f["image"]}, t)).cache()

def dataset_fn(ctx):
    return images.batch(ctx.get_per_replica_batch_size(8)).repeat()

Conv2D, kernel_gradients = keras.layers.Conv2D, []
if os.environ.get("MATMUL_KERNEL_GRADIENTS"):  # conv_grad's gradients in every layer, counted
    Conv2D, conv_grad.worthwhile, kernel_gradient = ModelConv2D, lambda *a: True, conv_grad.kernel_gradient
    conv_grad.kernel_gradient = lambda *a: kernel_gradients.append(1) or kernel_gradient(*a)

class NoBatchNorm(keras.Model):
    def __init__(self):
        super().__init__()
        self.trunk = [Conv2D(8, 3, strides=2, padding="same", activation="relu"),
                      Conv2D(8, 3, strides=2, padding="same", activation="relu")]
        self.out = {"heatmap": Conv2D(3, 1, bias_initializer=keras.initializers.Constant(-2.19)),
                    "size": Conv2D(2, 1), "offset": Conv2D(2, 1)}
    def call(self, x, training=None):
        for layer in self.trunk:
            x = layer(x)
        return [{k: layer(x) for k, layer in self.out.items()}]

keras.utils.set_random_seed(0)
with strategy.scope():
    model = NoBatchNorm()
    model(tf.zeros((1, 64, 64, 3)))
    optimizer = optim.build_optimizer(cfg.train)
    optimizer.build(model.trainable_variables)
loop = make_train_loop(strategy, model, optimizer, build_task(cfg))
iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
losses = []
for _ in range(3):
    done, sums, finite = loop(iterator, tf.constant(1))
    losses.append({k: float(v) for k, v in sums.items()})
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, "losses": losses,
                              "kernel_gradients": len(kernel_gradients),
                              "weights": [np.asarray(w).tolist() for w in model.weights]}))
"""

WORKER = r"""
import hashlib, json, sys
import numpy as np
from centernet_core import config as config_lib
from centernet_core.training.loop import train
cfg = config_lib.resolve("shapes-tiny", profile="multiworker", overrides=sys.argv[3:])
result = train(config_lib.override(cfg, [f"data.train={sys.argv[2]}"]), sys.argv[1], show_progress=False)
digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in result.model.weights)).hexdigest()
trainable = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in result.model.trainable_weights)).hexdigest()
print("RESULT " + json.dumps({"step": result.step, "loss": result.losses["total"], "digest": digest,
                              "trainable": trainable, "status": result.status, "start_step": result.start_step}))
"""


def _python(args, env=None, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


def _result(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT "):])


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _cli(*args):
    return ["-c", "from centernet_cli.main import main; main()", *args]


@pytest.mark.parametrize("matmul", [False, True], ids=["native", "matmul-kernel-gradients"])
def test_mirrored_two_cpus_equals_one_device(shapes_dataset, matmul):
    # With ``matmul`` the two replicas use conv_grad's kernel gradients, the one device TensorFlow's.
    pattern = os.path.join(shapes_dataset, "val-*.tfrecord")
    args = ["model.input_size=64"]
    one = _result(_python(["-c", EQUIVALENCE, "default", "0", pattern, *args]))
    two = _result(_python(["-c", EQUIVALENCE, "mirrored", "2", pattern, *args],
                          env={"MATMUL_KERNEL_GRADIENTS": "1"} if matmul else None))
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert one["kernel_gradients"] == 0
    if matmul:  # 5 layers, traced on each replica's own thread
        assert two["kernel_gradients"] >= 2 * 5
    else:
        assert two["kernel_gradients"] == 0
    for a, b in zip(one["losses"], two["losses"]):
        for k in ("total", "heatmap", "size", "offset"):
            assert b[k] == pytest.approx(a[k], rel=2e-5), (k, one["losses"], two["losses"])
    assert one["losses"][2]["total"] < one["losses"][0]["total"]  # it did learn: the updates matter
    for wa, wb in zip(one["weights"], two["weights"], strict=True):
        np.testing.assert_allclose(np.asarray(wb), np.asarray(wa), rtol=1e-4, atol=1e-6)


def test_mirrored_real_model_and_batch_that_does_not_split(shapes_dataset, tmp_path):
    pattern = os.path.join(shapes_dataset, "train-*.tfrecord")
    base = ["train", "-e", "shapes-tiny", "-p", "cpu", "--data", pattern, "--no-progress",
            "--set", "runtime.strategy=mirrored", "--set", "runtime.num_devices=2"]
    sets = [x for item in TINY for x in ("--set", item)]
    bad = _python(_cli(*base, "-m", str(tmp_path / "bad"), *sets, "--set", "runtime.global_batch_size=3"))
    assert bad.returncode == 2
    assert "runtime.global_batch_size=3 does not split over 2 replicas; try --set runtime.global_batch_size=2" \
        in bad.stderr and "Traceback" not in bad.stderr
    good = _python(_cli(*base, "-m", str(tmp_path / "good"), *sets))
    assert good.returncode == 0, good.stderr[-3000:]
    assert "finished at step 4" in good.stdout
    assert os.path.exists(tmp_path / "good" / "ckpt-4.index")


def test_two_workers_end_with_identical_weights(shapes_dataset, tmp_path):
    pattern = os.path.join(shapes_dataset, "train-*.tfrecord")
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    run = str(tmp_path / "run")
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, run, pattern, *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "2"}))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            results.append(_result(subprocess.CompletedProcess(p.args, p.returncode, out, err)))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [r["step"] for r in results] == [4, 4]
    assert results[0]["trainable"] == results[1]["trainable"]
    assert results[0]["digest"] == results[1]["digest"]
    assert results[0]["loss"] == results[1]["loss"]
    assert os.path.exists(os.path.join(run, "ckpt-4.index")) and os.path.exists(os.path.join(run, "config.yaml"))


class _Lines:
    """Collects a process's stdout lines on a thread, so a test can wait for one without blocking."""

    def __init__(self, proc):
        self.lines, self.proc = [], proc
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        self._thread.start()

    def wait_for(self, text, timeout=180):
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.proc.stderr.read()[-3000:]
            time.sleep(0.1)

    def text(self):
        self._thread.join(timeout=60)
        return "".join(self.lines)


def test_sigterm_saves_and_the_same_command_resumes(shapes_dataset, tmp_path):
    # checkpoint_every far beyond the stop: the only checkpoint is the one the signal path saves
    run = str(tmp_path / "run")
    sets = [x for item in TINY + ["train.steps=600", "runtime.steps_per_loop=5", "train.checkpoint_every=10000",
                                  "train.log_every=5"] for x in ("--set", item)]
    command = [sys.executable] + _cli("train", "-e", "shapes-tiny", "-p", "cpu", "-m", run, "--no-progress",
                   "--data", os.path.join(shapes_dataset, "train-*.tfrecord"), *sets)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = _Lines(proc)
    try:
        lines.wait_for("step 10/600")
        assert not glob.glob(os.path.join(run, "ckpt-*.index"))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        out = lines.text()
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    stopped = int(out.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert 10 <= stopped < 600
    assert [os.path.basename(p) for p in glob.glob(os.path.join(run, "ckpt-*.index"))] == [f"ckpt-{stopped}.index"]
    saved = tf_load_step(os.path.join(run, f"ckpt-{stopped}"))
    assert saved == stopped

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from step {stopped} (" in again.stdout
    assert "finished at step 600" in again.stdout


def tf_load_step(prefix):
    """The ``step`` variable stored in checkpoint ``prefix``, read in a fresh interpreter."""
    code = "import sys, tensorflow as tf; print(int(tf.train.load_variable(sys.argv[1], 'step/.ATTRIBUTES/VARIABLE_VALUE')))"
    proc = _python(["-c", code, prefix], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


def test_sigterm_to_one_worker_stops_both_at_one_step(shapes_dataset, tmp_path):
    pattern = os.path.join(shapes_dataset, "train-*.tfrecord")
    run = str(tmp_path / "run")
    long = TINY + ["train.steps=400", "runtime.steps_per_loop=2", "train.checkpoint_every=10000",
                   "train.log_every=2"]

    def start(overrides):
        hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
        procs = []
        for index in range(2):
            tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
            procs.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, run, pattern, *overrides], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
                env={**os.environ, "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}))
        return procs

    def finish(procs, lines=None):
        results = []
        try:
            for i, p in enumerate(procs):
                p.wait(timeout=300)
                out = lines[i].text() if lines else p.stdout.read()
                results.append(_result(subprocess.CompletedProcess(p.args, p.returncode, out, p.stderr.read())))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        return results

    procs = start(long)
    lines = [_Lines(p) for p in procs]
    try:
        lines[0].wait_for("step 4/400")  # the chief's log: both are training
    except BaseException:
        for p in procs:
            p.kill()
        raise
    procs[1].send_signal(signal.SIGTERM)  # the other worker only
    first = finish(procs, lines)
    stopped = first[0]["step"]
    assert [r["step"] for r in first] == [stopped, stopped] and 4 <= stopped < 400
    assert [r["status"] for r in first] == ["interrupted", "interrupted"]
    assert first[0]["digest"] == first[1]["digest"]
    assert [os.path.basename(p) for p in glob.glob(os.path.join(run, "ckpt-*.index"))] == [f"ckpt-{stopped}.index"]

    again = finish(start(TINY + [f"train.steps={stopped + 2}", "train.checkpoint_every=10000"]))
    assert [(r["start_step"], r["step"], r["status"]) for r in again] == [(stopped, stopped + 2, "finished")] * 2
