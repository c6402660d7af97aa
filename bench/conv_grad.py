"""Kernel-gradient benchmark: TensorFlow's native kernel vs ``conv_grad.kernel_gradient``.

Run:  /tmp/v/bin/python bench/conv_grad.py [--repeats 5] [--precision float32]

For each convolution shape of Hourglass-104 at 512 x 512, batch 2 (every shape its train
step runs, with how often), times in one process, alternating: the forward pass, the native
kernel gradient (``Conv2DBackpropFilter``) and the matrix-product one, one op at a time;
checks the two gradients agree; then a few narrower layers (``PROBES``). Prints one JSON line
per shape and a summary over HG-104's layers weighted by their number, split by
``conv_grad.worthwhile``.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tensorflow as tf

from centernet_core.training import conv_grad

# (count in HG-104, input size H = W, C, F, k, stride, padding): the layers of one train step.
SHAPES = [
    (1, 518, 3, 128, 7, 2, "VALID"), (1, 258, 128, 256, 3, 2, "VALID"), (1, 256, 128, 256, 1, 2, "VALID"),
    (19, 128, 256, 256, 3, 1, "SAME"), (2, 128, 256, 256, 1, 1, "VALID"),
    (4, 128, 256, 2, 1, 1, "VALID"), (2, 128, 256, 80, 1, 1, "VALID"),
    (2, 130, 256, 256, 3, 2, "VALID"), (2, 128, 256, 256, 1, 2, "VALID"),
    (22, 64, 256, 256, 3, 1, "SAME"), (2, 66, 256, 384, 3, 2, "VALID"), (2, 64, 256, 384, 1, 2, "VALID"),
    (2, 32, 384, 256, 3, 1, "SAME"), (2, 32, 256, 256, 3, 1, "SAME"),
    (18, 32, 384, 384, 3, 1, "SAME"), (2, 34, 384, 384, 3, 2, "VALID"),
    (22, 16, 384, 384, 3, 1, "SAME"), (2, 18, 384, 384, 3, 2, "VALID"),
    (22, 8, 384, 384, 3, 1, "SAME"), (26, 4, 512, 512, 3, 1, "SAME"),
]
# Narrower layers (ResNet-18 / DLA-34 at 512 px) that set conv_grad's channel thresholds; count 0:
# printed, not in the summary.
PROBES = [
    (0, 256, 64, 64, 3, 1, "SAME"), (0, 128, 64, 64, 3, 1, "SAME"), (0, 128, 128, 128, 3, 1, "SAME"),
    (0, 64, 128, 128, 3, 1, "SAME"), (0, 130, 64, 128, 3, 2, "VALID"), (0, 128, 64, 80, 1, 1, "VALID"),
    (0, 128, 32, 32, 3, 1, "SAME"),
]
BATCH = 2


def time_shape(count, size, cin, filters, k, s, padding, dtype, repeats):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((BATCH, size, size, cin)), dtype)
    kernel = tf.constant(rng.standard_normal((k, k, cin, filters)) * 0.05, dtype)
    out = tf.nn.conv2d(x, kernel, s, padding)
    dy = tf.constant(rng.standard_normal(out.shape), dtype)
    strides = [1, s, s, 1]
    fns = {
        "forward": tf.function(lambda: tf.nn.conv2d(x, kernel, s, padding)),
        "native": tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=kernel.shape, out_backprop=dy, strides=strides, padding=padding)),
        "matmul": tf.function(lambda: conv_grad.kernel_gradient(x, dy, k, s, padding)),
    }
    native, ours = fns["native"](), fns["matmul"]()
    scale = float(tf.reduce_max(tf.abs(tf.cast(native, tf.float32))))
    err = float(tf.reduce_max(tf.abs(tf.cast(native, tf.float32) - tf.cast(ours, tf.float32)))) / scale
    fns["forward"]()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn().numpy()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    return {"count": count, "input": size, "cin": cin, "filters": filters, "k": k, "stride": s,
            "forward_ms": round(ms["forward"], 2), "native_ms": round(ms["native"], 2),
            "matmul_ms": round(ms["matmul"], 2), "matmul_vs_native": round(ms["matmul"] / ms["native"], 3),
            "worthwhile": conv_grad.worthwhile(x.shape, kernel.shape, s, dtype, padding), "max_rel_err": float(f"{err:.2e}")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args()
    dtype = tf.as_dtype(args.precision)
    total = {"native_all": 0.0, "matmul_where_worthwhile": 0.0, "matmul_all": 0.0}
    for shape in SHAPES + PROBES:
        row = time_shape(*shape, dtype=dtype, repeats=args.repeats)
        print(json.dumps(row), flush=True)
        n = row["count"]
        total["native_all"] += n * row["native_ms"]
        total["matmul_all"] += n * row["matmul_ms"]
        total["matmul_where_worthwhile"] += n * (row["matmul_ms"] if row["worthwhile"] else row["native_ms"])
    print(json.dumps({"summary_ms_per_step": {k: round(v, 1) for k, v in total.items()},
                      "precision": args.precision}), flush=True)


if __name__ == "__main__":
    main()
