"""A tiny trained run shared by the evaluate / export / predict / demo tests.

``tiny_run(shapes_dir, root)`` trains the ``shapes-tiny`` preset for a few steps on the
session's ``shapes_dataset`` (see conftest.py) once per test process and returns the run
directory; later calls reuse it. A few steps are enough: these tests compare runtimes and
files, not accuracy.
"""
import os

STEPS = 30
_cache: dict = {}


def tiny_run(shapes_dir: str, root) -> str:
    if shapes_dir not in _cache:
        from centernet_core import config as config_lib
        from centernet_core.training.loop import train

        cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=[
            f"train.steps={STEPS}", "train.warmup_steps=3", "train.log_every=15", "train.checkpoint_every=15",
            "eval.batch_size=4", "data.deterministic=true"])
        run_dir = os.path.join(str(root), "tiny-run")
        cfg = config_lib.override(cfg, [f"data.train={os.path.join(shapes_dir, 'train-*.tfrecord')}",
                                        f"data.val={os.path.join(shapes_dir, 'val-*.tfrecord')}"])
        train(cfg, run_dir, show_progress=False)
        _cache[shapes_dir] = run_dir
    return _cache[shapes_dir]
