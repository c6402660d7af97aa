"""Deployment formats on this CPU: images/s at batch 1 and AP, each runtime against its own fp32.

Speed: for each (experiment preset, input size) the model is built with random weights
(speed does not depend on them) and exported as SavedModel, TFLite fp32 / fp16 / int8 and
ONNX fp32 / int8 (int8 calibrated on ``--calibration-images`` pictures of a synthetic
shapes set, written once), then timed through its own runtime on one 640 x 480 picture,
letterbox and decode included, with ``--threads`` threads. Every rate is also printed as a
ratio to the fp32 file of the same runtime, measured in the same run.

Rates are medians over ``--rounds`` rounds in which every runner of one model is timed
``--iters`` times in turn (load from other jobs falls on all formats alike).

AP: a trained tiny model (``--run``, default: shapes-tiny trained ``--train-steps`` steps
here on 400 synthetic shapes pictures, which also calibrate int8) is exported in every
format and scored with ``eval --model``'s code on ``--ap-data`` (default 150 held-out
shapes pictures of another seed), and the checkpoint itself in float32 and bfloat16
(``eval --precision``).

    python bench/deploy.py --models mobilenetv2-coco:512,resnet18-coco:512,mobilenetv2-coco:320

Record results in docs/benchmarks.md ("## Deployment formats") with command and machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

VARIANTS = (("saved_model", "saved_model"), ("tflite", "tflite"), ("tflite_float16", "tflite"),
            ("tflite_int8", "tflite"), ("onnx", "onnx"), ("onnx_int8", "onnx"))  # (format, its fp32)


def _rates(runners: dict, image, warmup: int, iters: int, rounds: int) -> dict:
    """Median images/s of each runner: ``rounds`` rounds, each timing every runner ``iters``
    times in turn, so that load from other jobs on a shared machine falls on all of them."""
    for fn in runners.values():
        for _ in range(warmup):
            fn(image)
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            for _ in range(iters):
                start = time.perf_counter()
                fn(image)
                times[name].append(time.perf_counter() - start)
    return {name: 1.0 / float(np.median(t)) for name, t in times.items()}


def _export_all(trained, out: str, calibration: str, n: int, extra=()) -> dict:
    from centernet_core import config as config_lib
    from centernet_core.inference.export import export_trained
    trained.cfg = config_lib.override(trained.cfg, ["export.int8=true", "export.tflite_float16=true",
                                                    f"export.calibration_data={calibration}",
                                                    f"export.calibration_images={n}", *extra])
    return export_trained(trained, out, formats=("saved_model", "tflite", "onnx"))


def bench_speed(name: str, size: int, workdir: str, calibration: str, n: int, iters: int, rounds: int,
                threads: int) -> list:
    import keras
    import tensorflow as tf
    from centernet_core import config as config_lib
    from centernet_core.inference import exported
    from centernet_core.inference.trained import TrainedModel
    from centernet_core.modeling.model import build_model
    cfg = config_lib.resolve(name, profile="cpu", overrides=[f"model.input_size={size}"])
    keras.utils.set_random_seed(0)
    model = build_model(cfg, load_backbone_weights=False)
    model(tf.zeros([1, size, size, 3]), training=False)
    categories = [{"index": i, "id": i + 1, "name": f"c{i}"} for i in range(cfg.model.num_classes)]
    out = os.path.join(workdir, f"{name}-{size}")
    _export_all(TrainedModel(model, cfg, categories, "random-init"), out, calibration, n, ["export.force=true"])
    image = np.random.default_rng(0).integers(0, 256, (1, 480, 640, 3), dtype=np.uint8)
    runners = {fmt: exported.open_runner(out, fmt, **({} if fmt == "saved_model" else {"num_threads": threads}))
               for fmt, _ in VARIANTS}
    rates = _rates(runners, image, warmup=3, iters=iters, rounds=rounds)
    rows = []
    for fmt, base in VARIANTS:
        ratio = rates[fmt] / rates[base]
        rows.append({"experiment": name, "backbone": cfg.model.backbone, "input": size, "format": fmt,
                     "images_per_s": round(rates[fmt], 2), "ratio_to_fp32": round(ratio, 2)})
        print(f"{name:18s} {size:4d} {fmt:15s} {rates[fmt]:7.2f} img/s  x{ratio:.2f} of {base} fp32", flush=True)
    return rows


def bench_ap(run: str, pattern: str, workdir: str, calibration: str, n: int, extra=()) -> list:
    import keras
    from centernet_core.inference import exported
    from centernet_core.inference.eval_export import evaluate_runner
    from centernet_core.inference.evaluate import evaluate_checkpoint
    from centernet_core.inference.trained import load_trained
    trained = load_trained(run)
    out = os.path.join(workdir, "trained")
    _export_all(trained, out, calibration, n, ["export.force=true", *extra])
    rows = []
    for fmt, _ in VARIANTS:
        m = evaluate_runner(exported.open_runner(out, fmt), trained.cfg, pattern, trained.categories)
        rows.append({"model": run, "format": fmt, "AP": round(100 * m["AP"], 2), "AP50": round(100 * m["AP50"], 2)})
    for dtype in ("float32", "bfloat16"):
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
        m = evaluate_checkpoint(run, overrides=[f"data.val={pattern}"])
        rows.append({"model": run, "format": f"checkpoint {dtype}", "AP": round(100 * m["AP"], 2),
                     "AP50": round(100 * m["AP50"], 2)})
    keras.mixed_precision.set_global_policy("float32")
    for r in rows:
        print(f"AP {r['format']:22s} AP {r['AP']:6.2f}  AP50 {r['AP50']:6.2f}", flush=True)
    return rows


def _shapes_and_run(workdir: str, train_run: bool, steps: int) -> tuple[str, str, str | None]:
    """(train pattern, held-out pattern, run): 400 shapes pictures to train and calibrate on,
    150 others (another seed) to score on; shapes-tiny trained ``steps`` steps when asked."""
    from centernet_core import config as config_lib
    from centernet_core.data.shapes import make_shapes_dataset
    make_shapes_dataset(os.path.join(workdir, "shapes"), train=400, val=8, size="128", seed=0, workers=1, shards=1)
    make_shapes_dataset(os.path.join(workdir, "heldout"), train=1, val=150, size="128", seed=1, workers=1, shards=1)
    pattern = os.path.join(workdir, "shapes", "train-*.tfrecord")
    heldout = os.path.join(workdir, "heldout", "val-*.tfrecord")
    if not train_run:
        return pattern, heldout, None
    from centernet_core.training.loop import train
    cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=[
        f"train.steps={steps}", "train.warmup_steps=50", "train.learning_rate=0.004",
        f"train.checkpoint_every={steps}", "data.deterministic=true", f"data.train={pattern}", f"data.val={heldout}"])
    run = os.path.join(workdir, "run")
    train(cfg, run, show_progress=False)
    return pattern, heldout, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenetv2-coco:512,resnet18-coco:512,mobilenetv2-coco:320")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3, help="Timed calls per runner per round.")
    parser.add_argument("--rounds", type=int, default=5, help="Rounds over all runners (median of all calls).")
    parser.add_argument("--calibration-images", type=int, default=300)
    parser.add_argument("--run", default="", help="Trained run for the AP rows (default: train shapes-tiny here).")
    parser.add_argument("--ap-data", default="", help="Records for the AP rows (default: 150 held-out shapes).")
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--int8-set", action="append", default=[],
                        help="Config override for the AP rows' export, e.g. export.float_layers=head_ (repeatable).")
    parser.add_argument("--skip-ap", action="store_true")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; TF {tf.__version__}; "
          f"{args.threads} threads")
    with tempfile.TemporaryDirectory() as workdir:
        calibration, heldout, run = _shapes_and_run(workdir, not args.skip_ap and not args.run, args.train_steps)
        ap = [] if args.skip_ap else bench_ap(args.run or run, args.ap_data or heldout, workdir, calibration,
                                              args.calibration_images, args.int8_set)
        speed = []
        for item in filter(None, args.models.split(",")):  # --models "": the AP rows only
            name, size = item.split(":")
            speed += bench_speed(name, int(size), workdir, calibration, args.calibration_images, args.iters,
                                 args.rounds, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.platform(), "cores": os.cpu_count(), "speed": speed, "ap": ap}, f, indent=1)


if __name__ == "__main__":
    main()
