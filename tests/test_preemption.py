"""kill -9 during training: the rerun resumes from the newest complete checkpoint and what the
killed save left behind (``ckpt-N_temp`` staging, files the state file never recorded) is gone."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

SETS = ["model.input_size=64", "runtime.global_batch_size=4", "train.scale_with_batch=false",
        "train.warmup_steps=1", "runtime.steps_per_loop=1", "train.log_every=1", "train.checkpoint_every=1",
        "train.keep_checkpoints=3", "data.shuffle_buffer=8"]


def _command(run, data, steps):
    sets = [x for item in SETS + [f"train.steps={steps}"] for x in ("--set", item)]
    return [sys.executable, "-c", "from centernet_cli.main import main; main()", "train", "-e", "shapes-tiny",
            "-p", "cpu", "-m", run, "--no-progress", "--data", data, *sets]


def _recorded(run):
    """The checkpoint prefixes the state file lists (what TensorFlow resumes from)."""
    lines = open(os.path.join(run, "checkpoint")).read().splitlines()
    names = [line.split('"')[1] for line in lines if line.startswith("all_model_checkpoint_paths")]
    return [os.path.basename(n) for n in names]


def _on_disk(run):
    return sorted({os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(run, "ckpt-*"))})


def test_kill_9_mid_run_resumes_from_the_last_complete_checkpoint(shapes_dataset, tmp_path):
    run = str(tmp_path / "run")
    data = os.path.join(shapes_dataset, "train-*.tfrecord")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200"}
    proc = subprocess.Popen(_command(run, data, 600), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while not os.path.exists(os.path.join(run, "ckpt-6.index")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        time.sleep(0.3)  # a checkpoint a step: likely in the middle of one
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    latest = _recorded(run)[-1]
    step = int(latest.split("-")[1])
    assert step >= 6
    # what a save killed at another moment leaves: its staging directory, its files without a record
    os.makedirs(os.path.join(run, f"ckpt-{step + 1}_temp"))
    open(os.path.join(run, f"ckpt-{step + 1}_temp", "part-00000-of-00001.data-00000-of-00001"), "wb").write(b"\0" * 9)
    open(os.path.join(run, f"ckpt-{step + 50}.index"), "wb").write(b"half an index")

    again = subprocess.run(_command(run, data, step + 2) + ["--set", "train.checkpoint_every=100"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from step {step} (" in again.stdout and f"finished at step {step + 2}" in again.stdout
    assert _on_disk(run) == sorted(_recorded(run)), (_on_disk(run), _recorded(run))
    assert _recorded(run)[-1] == f"ckpt-{step + 2}"
