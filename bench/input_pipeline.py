"""Train input pipeline throughput vs a bare decode + resize pipeline, same records, same run.

    python bench/input_pipeline.py [--images 400] [--batches 30] [--rounds 3] [--dir /tmp/cn-bench-shapes640]

Writes (once) `prepare shapes` data at 640x480, then times, after 3 warm-up batches:
  full: build_dataset(training=True): decode of the random square crop's region only,
        flip, one resize + pad to 512 (uint8), each image's colour jitter + normalisation
        map, batch 16, then per batch CenterNet targets (128 objects, 3 classes). The map
        itself is applied with the batch on the accelerator (augment.normalize_batch),
        not in the input pipeline; its cost there is printed separately.
  bare: TFRecordDataset -> parse image/encoded -> decode_image -> resize to 512 -> batch 16.
Both repeat over the same shards with AUTOTUNE parallelism, in alternating rounds with a
fresh iterator each. Prints the median images/s and full/bare.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import tensorflow as tf

from centernet_core import config as config_lib
from centernet_core.data import augment
from centernet_core.data.pipeline import build_dataset
from centernet_core.data.shapes import make_shapes_dataset

SIZE, BATCH = 512, 16


def bare_dataset(pattern: str) -> tf.data.Dataset:
    def decode(raw):
        ex = tf.io.parse_single_example(raw, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
        image = tf.io.decode_image(ex["image/encoded"], channels=3, expand_animations=False)
        return tf.image.resize(image, [SIZE, SIZE])

    ds = tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)).repeat()
    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def images_per_second(ds: tf.data.Dataset, batches: int) -> tuple[float, float]:
    """(images per wall-clock second, process CPU milliseconds per image)."""
    it = iter(ds)
    for _ in range(3):
        next(it)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    n = batches * BATCH
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default="/tmp/cn-bench-shapes640")
    a = p.parse_args()
    if not os.path.exists(os.path.join(a.dir, "train.meta.json")):
        make_shapes_dataset(a.dir, train=a.images, val=0, size="640x480", seed=0, workers=2, shards=4)
    pattern = os.path.join(a.dir, "train-*.tfrecord")
    cfg = config_lib.resolve("shapes-tiny", None, None, [f"model.input_size={SIZE}", "data.max_objects=128",
                                                         f"runtime.global_batch_size={BATCH}"])
    runs = {"bare": [], "full": []}
    for _ in range(a.rounds):  # alternating, a fresh iterator each time: the machine drifts
        runs["bare"].append(images_per_second(bare_dataset(pattern), a.batches))
        runs["full"].append(images_per_second(build_dataset(pattern, cfg, True), a.batches))
    bare, full = ([float(np.median([r[i] for r in runs[k]])) for i in range(2)] for k in ("bare", "full"))
    print(f"cpus={os.cpu_count()} input={SIZE} batch={BATCH} images=640x480 rounds={a.rounds} (medians)")
    print(f"bare decode+resize: {bare[0]:.1f} img/s, {bare[1]:.2f} CPU ms/img")
    print(f"full train pipeline (augment + targets): {full[0]:.1f} img/s, {full[1]:.2f} CPU ms/img")
    print(f"ratio full/bare: throughput {full[0] / bare[0]:.2f}, CPU cost {bare[1] / full[1]:.2f}")
    features, _ = next(iter(build_dataset(pattern, cfg, True)))
    normalise = tf.function(lambda f: augment.model_input(f))
    normalise(features).numpy()
    start = time.perf_counter()
    for _ in range(10):
        normalise(features).numpy()
    print(f"the colour map on this CPU (augment.normalize_batch, in the train step): "
          f"{(time.perf_counter() - start) / (10 * BATCH) * 1000:.2f} ms/img")


if __name__ == "__main__":
    main()
