"""Model benchmark: Hourglass-104 forward + decode against Model Garden, bf16, every backbone.

Run:  /tmp/v/bin/python bench/model.py [--size 512] [--repeats 5] [--skip-anchor]

In one run (so the ratios share the machine's state):
1. Model Garden's CenterNet HG-104 (the anchor script, run as a subprocess in its own venv):
   forward + its detection generator at batch 1, float32.
2. This toolkit's HG-104 (80 classes, as the anchor): forward (last stack, the one decoded),
   decode alone, forward + decode, float32; and forward + decode under float32 and
   mixed_bfloat16, each with the batch norm folded per call (the default) and frozen once
   (``freeze_for_inference``, the eval / export path). These four are timed round-robin,
   one call each per round, so a change in the machine's load hits all of them alike.
3. The same four in a fresh process with oneDNN's weight cache on, as ``centernet eval`` and
   ``centernet predict`` run (``tf_setup.cache_inference_weights``); and, to show what that
   switch alone is worth, Model Garden's script once more with the same switch forced on.
4. Every registered backbone: params, FLOPs and forward + decode latency at the same size.
The goal figure is our inference commands' time (frozen, weight cache) over Model Garden's as
its users run it; the other ratios are printed beside it.
Prints one JSON object per line and a Markdown table at the end; goals are checked, not assumed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from anchor import run_anchor, run_json  # bench/anchor.py (the script's folder is on sys.path)
from centernet_core import config as config_lib
from centernet_core.tasks.detection.decode import decode
from centernet_core.modeling.model import build_model, freeze_for_inference
from centernet_core.modeling.summary import count_params, describe_model
from centernet_core.tf_setup import WEIGHT_CACHE_ENV

EXPERIMENTS = {"hourglass104": "hourglass104-coco", "hourglass52": "hourglass104-coco", "resnet18": "resnet18-coco",
               "resnet50": "resnet50-coco", "dla34": "dla34-coco", "mobilenetv2": "mobilenetv2-coco"}


def timed(fn, *args, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of ``fn(*args)`` including fetching every output to numpy."""
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(backbone: str, size: int, repeats: int, precision: str = "float32", parts: bool = False) -> dict:
    """Latency (s) of forward + decode at batch 1; with ``parts`` also forward and decode alone."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        cfg = config_lib.resolve(EXPERIMENTS[backbone], overrides=[f"model.backbone={backbone}",
                                                                    f"model.input_size={size}"])
        model = build_model(cfg)
        x = tf.random.stateless_uniform((1, size, size, 3), seed=(0, 1))

        @tf.function
        def forward(images):
            return model(images, training=False)[-1]

        @tf.function
        def infer(images):
            out = model(images, training=False)[-1]
            return decode(out["heatmap"], out["size"], out["offset"], max_detections=100)

        result = {"backbone": backbone, "precision": precision, "size": size,
                  "infer_b1_s": timed(infer, x, repeats=repeats)}
        if parts:
            maps = forward(x)
            decode_fn = tf.function(lambda m: decode(m["heatmap"], m["size"], m["offset"], max_detections=100))
            result["forward_b1_s"] = timed(forward, x, repeats=repeats)
            result["decode_b1_s"] = timed(decode_fn, maps, repeats=max(repeats, 10))
        if precision == "float32":
            info = describe_model(model, size)
            result.update(params=count_params(model)["total"], gflops=round(info["flops"] / 1e9, 1))
        return result
    finally:
        keras.mixed_precision.set_global_policy("float32")


def interleaved(fns: dict, x, repeats: int, warmup: int = 2) -> dict:
    """Median wall time of each ``fns[name](x)`` (outputs fetched), timed round-robin."""
    fetch = lambda out: tf.nest.map_structure(lambda t: t.numpy(), out)  # noqa: E731
    for _ in range(warmup):
        for fn in fns.values():
            fetch(fn(x))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fetch(fn(x))
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def precision_pair(size: int, repeats: int) -> dict:
    """HG-104 forward + decode, float32 vs mixed_bfloat16, BN folded per call vs frozen; in seconds."""
    cfg = config_lib.resolve(EXPERIMENTS["hourglass104"], overrides=[f"model.input_size={size}"])
    fns = {}
    for precision in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(precision)
        try:
            model = build_model(cfg)
        finally:
            keras.mixed_precision.set_global_policy("float32")

        def infer(images, model=model):
            out = model(images, training=False)[-1]
            return decode(out["heatmap"], out["size"], out["offset"], max_detections=100)

        # Traced before freezing, so this one keeps folding per call (same input spec: no retrace).
        fns[f"{precision}_per_call"] = tf.function(infer)
        fns[f"{precision}_per_call"].get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32))
        freeze_for_inference(model)
        fns[f"{precision}_frozen"] = tf.function(infer)
    x = tf.random.stateless_uniform((1, size, size, 3), seed=(0, 1))
    return interleaved(fns, x, repeats)


def cached_precision_pair(size: int, repeats: int) -> dict:
    """``precision_pair`` in a fresh process with oneDNN's weight cache on (how eval / predict run)."""
    return run_json([sys.executable, __file__, "--precision-pair-only", "--size", str(size), "--repeats", str(repeats)],
                    {WEIGHT_CACHE_ENV: "1"})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-anchor", action="store_true")
    parser.add_argument("--precision-pair-only", action="store_true", help=argparse.SUPPRESS)  # the child run
    args = parser.parse_args(argv)
    if args.precision_pair_only:
        print(json.dumps(precision_pair(args.size, args.repeats)), flush=True)
        return {}
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "tf": tf.__version__,
               "keras": keras.__version__}
    print(json.dumps({"machine": machine}), flush=True)
    # The anchor runs before and after our HG-104 figures (the machine may be shared): the
    # comparison uses the faster of the two anchor runs, and every line records the load.
    anchors = [] if args.skip_anchor else [run_anchor(args.size)]
    print(json.dumps({"anchor": anchors[-1] if anchors else None, "load": os.getloadavg()}), flush=True)
    hg = measure("hourglass104", args.size, args.repeats, parts=True)
    print(json.dumps({**hg, "load": os.getloadavg()}), flush=True)
    pair = precision_pair(args.size, args.repeats)
    print(json.dumps({"hourglass104_forward_decode_s": pair, "load": os.getloadavg()}), flush=True)
    cached = cached_precision_pair(args.size, args.repeats)
    print(json.dumps({"hourglass104_forward_decode_s_weight_cache": cached, "load": os.getloadavg()}), flush=True)
    anchor_cached = None
    if anchors:
        anchors.append(run_anchor(args.size))
        print(json.dumps({"anchor": anchors[-1], "load": os.getloadavg()}), flush=True)
        anchor_cached = run_anchor(args.size, env={WEIGHT_CACHE_ENV: "1"})
        print(json.dumps({"anchor_weight_cache": anchor_cached, "load": os.getloadavg()}), flush=True)
    anchor = min(anchors, key=lambda a: a["infer_b1_s"]) if anchors else None
    rows = [hg] + [measure(name, args.size, args.repeats) for name in EXPERIMENTS if name != "hourglass104"]
    summary = {"decode_over_forward": hg["decode_b1_s"] / hg["forward_b1_s"],
               "bf16_over_float32": pair["mixed_bfloat16_per_call"] / pair["float32_per_call"],
               "bf16_over_float32_frozen": pair["mixed_bfloat16_frozen"] / pair["float32_frozen"],
               "frozen_over_per_call_float32": pair["float32_frozen"] / pair["float32_per_call"]}
    if anchor:
        # The goal: our inference commands (frozen folds, weight cache) against Model Garden as shipped.
        summary["ours_over_model_garden"] = cached["float32_frozen"] / anchor["infer_b1_s"]
        summary["ours_without_weight_cache_over_model_garden"] = hg["infer_b1_s"] / anchor["infer_b1_s"]
        summary["both_with_weight_cache"] = cached["float32_frozen"] / anchor_cached["infer_b1_s"]
    summary["weight_cache_over_none_float32_frozen"] = cached["float32_frozen"] / pair["float32_frozen"]
    # bf16 goal, like for like: both per-call folds, and both frozen.
    goals = {"ours_over_model_garden": 0.9, "decode_over_forward": 0.02, "bf16_over_float32": 0.75,
             "bf16_over_float32_frozen": 0.75}
    summary["goals_met"] = {k: summary[k] <= v for k, v in goals.items() if k in summary}
    print(json.dumps({"summary": summary}), flush=True)
    print(f"\n| backbone | params | GFLOPs | forward + decode, b1 {args.size}px, float32 |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backbone']} | {r['params']:,} | {r['gflops']} | {r['infer_b1_s'] * 1000:.0f} ms |")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
