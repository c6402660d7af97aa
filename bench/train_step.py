"""Train-step benchmark: Hourglass-104 at 512x512, batch 2, against Model Garden's, plus bfloat16.

Run:  /tmp/v/bin/python bench/train_step.py [--size 512] [--repeats 3] [--skip-anchor]
      /tmp/v/bin/python bench/train_step.py --kernel-gradients-ab [--experiment resnet18-coco]

In one run (so the ratio shares the machine's state):
1. Model Garden's CenterNet HG-104 train step (the anchor script in its own venv, a
   subprocess): forward, a trivial mean loss, gradients, Adam update; batch 2, float32.
2. This toolkit's train step on the same model size (80 classes): the real training
   loop of ``centernet_core.training.loop`` (focal + L1 losses over both stacks, global-norm
   clipping, AdamW with decoupled decay, finiteness check), one step per call, float32
   and mixed_bfloat16.
Prints one JSON object per measurement and a summary line with the ratios.

``--kernel-gradients-ab`` instead times our float32 step of ``--experiment`` with and without
``conv_grad``'s kernel gradients, two models in one process, steps alternating.
"""
from __future__ import annotations

import argparse
import gc
import json
import time

import keras
import numpy as np
import tensorflow as tf

from anchor import run_anchor  # bench/anchor.py (the script's folder is on sys.path)
from centernet_core import config as config_lib
from centernet_core.training import optim
from centernet_core.modeling.model import build_model
from centernet_core.tasks import build_task
from centernet_core.training.loop import make_train_loop

BATCH = 2
GOAL = 0.9  # our step time / Model Garden's, float32


def synthetic_batch(size: int, num_classes: int, max_objects: int, seed: int = 0):
    """One (features, targets) batch with 10 objects per image at random places."""
    rng = np.random.default_rng(seed)
    h = w = size // 4
    heatmap = np.zeros((BATCH, h, w, num_classes), np.float32)
    indices = np.zeros((BATCH, max_objects), np.int32)
    mask = np.zeros((BATCH, max_objects), np.float32)
    for b in range(BATCH):
        for k in range(10):
            y, x, c = rng.integers(0, h), rng.integers(0, w), rng.integers(0, num_classes)
            heatmap[b, y, x, c] = 1.0
            indices[b, k], mask[b, k] = y * w + x, 1.0
    targets = {"heatmap": heatmap, "indices": indices, "mask": mask,
               "size": rng.uniform(2, 30, (BATCH, max_objects, 2)).astype(np.float32),
               "offset": rng.uniform(0, 1, (BATCH, max_objects, 2)).astype(np.float32)}
    features = {"image": rng.standard_normal((BATCH, size, size, 3)).astype(np.float32)}
    return features, targets


def build_step(experiment: str, size: int, precision: str, matmul_kernel_gradients=None):
    """A function running one training step of ``experiment`` at ``size``, batch 2; and the model."""
    cfg = config_lib.resolve(experiment, profile="cpu",
                             overrides=[f"model.input_size={size}", f"runtime.precision={precision}"])
    strategy = tf.distribute.get_strategy()
    model = build_model(cfg)
    optimizer = optim.build_optimizer(cfg.train, precision)
    optimizer.build(model.trainable_variables)
    loop = make_train_loop(strategy, model, optimizer, build_task(cfg), matmul_kernel_gradients)
    batch = synthetic_batch(size, cfg.model.num_classes, cfg.data.max_objects)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    iterator = iter(strategy.distribute_datasets_from_function(lambda ctx: dataset))
    one = tf.constant(1)
    return (lambda: float(loop(iterator, one)[1]["total"])), model


def measure(size: int, precision: str, repeats: int, warmup: int = 2) -> dict:
    """Median seconds of one training step of HG-104 (80 classes) at ``size``, batch 2."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        step, model = build_step("hourglass104-coco", size, precision)
        for _ in range(warmup):
            step()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - start)
        return {"system": "centernet", "size": size, "batch": BATCH, "precision": precision,
                "train_step_b2_s": round(float(np.median(times)), 3), "loss": loss,
                "params": int(sum(np.prod(w.shape) for w in model.weights))}
    finally:
        keras.mixed_precision.set_global_policy("float32")
        gc.collect()


def kernel_gradients_ab(experiment: str, size: int, repeats: int, warmup: int = 2) -> dict:
    """Median float32 step with TensorFlow's and with ``conv_grad``'s kernel gradients."""
    steps = {name: build_step(experiment, size, "float32", on)[0] for name, on in (("native", False), ("matmul", True))}
    times = {name: [] for name in steps}
    for _ in range(warmup):
        for step in steps.values():
            step()
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    median = {name: round(float(np.median(t)), 3) for name, t in times.items()}
    return {"experiment": experiment, "size": size, "batch": BATCH, "native_s": median["native"],
            "matmul_s": median["matmul"], "matmul_vs_native": round(median["matmul"] / median["native"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-anchor", action="store_true", help="Only this toolkit's numbers.")
    parser.add_argument("--kernel-gradients-ab", action="store_true",
                        help="Time our step with and without conv_grad's kernel gradients instead.")
    parser.add_argument("--experiment", default="hourglass104-coco", help="For --kernel-gradients-ab.")
    args = parser.parse_args()
    if args.kernel_gradients_ab:
        print(json.dumps(kernel_gradients_ab(args.experiment, args.size, args.repeats)), flush=True)
        return
    anchor = None if args.skip_anchor else run_anchor(args.size)
    if anchor:
        print(json.dumps(anchor), flush=True)
    ours = {}
    for precision in ("float32", "mixed_bfloat16"):
        ours[precision] = measure(args.size, precision, args.repeats)
        print(json.dumps(ours[precision]), flush=True)
    summary = {"bf16_vs_fp32": round(ours["mixed_bfloat16"]["train_step_b2_s"] / ours["float32"]["train_step_b2_s"], 3)}
    if anchor:
        mg = anchor["train_step_b2_s"]
        ratio = ours["float32"]["train_step_b2_s"] / mg
        summary.update(ours_vs_mg_fp32=round(ratio, 3), goal=f"<= {GOAL}", met=ratio <= GOAL,
                       ours_bf16_vs_mg_fp32=round(ours["mixed_bfloat16"]["train_step_b2_s"] / mg, 3))
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
