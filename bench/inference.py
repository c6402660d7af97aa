"""Inference speed of exported detectors on this machine: images/s per format and batch.

For each experiment preset the model is built with random weights (speed does not depend
on them), exported with ``export_trained`` (SavedModel + TFLite + ONNX, each checked), and
timed through its own runtime on 640 x 480 uint8 pictures, preprocessing and decoding
included (they are inside every export):

    python bench/inference.py --experiments shapes-tiny,resnet18-coco,mobilenetv2-coco

Prints one row per (experiment, format, batch) and, with --json, writes them to a file.
Record results in docs/benchmarks.md ("## Inference") with the command and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np


def _time(fn, images, warmup: int, iters: int) -> float:
    """Images per second of ``fn(images)``, median of ``iters`` timed calls after ``warmup``."""
    for _ in range(warmup):
        fn(images)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(images)
        times.append(time.perf_counter() - start)
    return images.shape[0] / float(np.median(times))


def bench_experiment(name: str, workdir: str, batches, iters: int, threads: int) -> list[dict]:
    import keras
    import tensorflow as tf
    from centernet_core import config as config_lib
    from centernet_core.inference import exported
    from centernet_core.inference.export import export_trained
    from centernet_core.modeling.model import build_model
    from centernet_core.inference.trained import TrainedModel

    cfg = config_lib.resolve(name, profile="cpu")
    keras.utils.set_random_seed(0)
    model = build_model(cfg)
    size = cfg.model.input_size
    model(tf.zeros([1, size, size, 3]), training=False)
    categories = [{"index": i, "id": i + 1, "name": f"class{i}"} for i in range(cfg.model.num_classes)]
    out = os.path.join(workdir, name)
    export_trained(TrainedModel(model, cfg, categories, "random-init"), out, formats=("saved_model", "tflite", "onnx"))
    rng = np.random.default_rng(0)
    rows = []
    for fmt, fmt_batches in (("saved_model", batches), ("tflite", (1,)), ("onnx", batches)):
        kwargs = {} if fmt == "saved_model" else {"num_threads": threads}
        runner = exported.open_runner(out, fmt, **kwargs)
        for batch in fmt_batches:
            images = rng.integers(0, 256, (batch, 480, 640, 3), dtype=np.uint8)
            rate = _time(runner, images, warmup=2, iters=iters)
            rows.append({"experiment": name, "backbone": cfg.model.backbone, "input": size, "format": fmt,
                         "batch": batch, "images_per_s": round(rate, 1), "ms_per_image": round(1000 / rate, 2)})
            print(f"{name:18s} {cfg.model.backbone:12s} {size:4d} {fmt:12s} batch {batch:2d}: "
                  f"{rate:8.1f} img/s ({1000 / rate:7.2f} ms/img)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default="shapes-tiny,resnet18-coco,mobilenetv2-coco")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TFLite / ONNX Runtime threads.")
    parser.add_argument("--json", default="", help="Also write the rows to this file.")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))
    import tensorflow as tf
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; TF {tf.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.experiments.split(","):
            rows += bench_experiment(name.strip(), workdir, batches, args.iters, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.platform(), "cores": os.cpu_count(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
