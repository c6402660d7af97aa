"""``centernet demo``: the whole toolkit end to end on the synthetic shapes set, on a CPU.

prepare shapes (600 train / 100 val pictures, 128 px) -> train the ``shapes-tiny`` preset
-> COCO evaluation against the val json -> export (SavedModel, plus TFLite / ONNX when
their runtimes are installed) -> predict on a few val pictures from the export. Under
10 minutes on two CPU cores (docs/benchmarks.md). Each step is the core function the CLI command calls.

Layout of ``workdir``: ``data/`` (dataset), ``run/`` (checkpoints), ``results.json``
(COCO results), ``export/``, ``predictions/`` (drawn pictures).
Running it again reuses the dataset and the finished run (training resumes, if it was
interrupted) and rewrites evaluation, export and predictions.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from typing import Callable

from centernet_core import storage

EXPERIMENT = "shapes-tiny"
TRAIN_IMAGES, VAL_IMAGES, PREDICT_IMAGES = 600, 100, 6


@dataclass
class DemoResult:
    metrics: dict  # evaluate_checkpoint's result (AP, AP50, ...)
    export: dict  # export.json
    predictions: object  # predict.PredictSummary
    paths: dict  # data, run, results, export, predictions


def demo_paths(workdir: str) -> dict:
    names = {"data": "data", "run": "run", "results": "results.json", "export": "export", "predictions": "predictions"}
    return {k: storage.join(workdir, v) for k, v in names.items()}


def export_formats() -> tuple[str, ...]:
    """SavedModel, plus each format whose converter and runtime are importable here."""
    formats = ["saved_model"]
    if importlib.util.find_spec("ai_edge_litert"):
        formats.append("tflite")
    if importlib.util.find_spec("tf2onnx") and importlib.util.find_spec("onnxruntime"):
        formats.append("onnx")
    return tuple(formats)


def run_demo(workdir: str, steps: int | None = None, train_images: int = TRAIN_IMAGES, val_images: int = VAL_IMAGES,
             on_stage: Callable[[str], None] | None = None, console=None, show_progress: bool = True) -> DemoResult:
    """Run the demo in ``workdir``; ``steps`` overrides the preset's train.steps (tests use fewer).

    ``on_stage(name)`` announces each stage; ``console`` and ``show_progress`` go to training.
    """
    from centernet_core import config as config_lib
    from centernet_core.data.metadata import load_metadata
    from centernet_core.data.shapes import make_shapes_dataset
    from centernet_core.errors import DataError
    from centernet_core.inference.evaluate import evaluate_checkpoint
    from centernet_core.inference.export import export_checkpoint
    from centernet_core.inference.predict import predict_images
    from centernet_core.training.loop import train

    say = on_stage or (lambda name: None)
    paths = demo_paths(workdir)
    data = paths["data"]
    train_pattern, val_pattern = storage.join(data, "train-*.tfrecord"), storage.join(data, "val-*.tfrecord")
    try:
        ready = load_metadata(val_pattern)["images"] == val_images and load_metadata(train_pattern)["images"] == train_images
    except DataError:
        ready = False
    if not ready:
        say(f"prepare: {train_images} + {val_images} synthetic shapes pictures in {data}")
        make_shapes_dataset(data, train=train_images, val=val_images, size="128", seed=0)
    overrides = [f"train.steps={steps}", f"train.warmup_steps={min(100, steps // 10)}"] if steps else []
    overrides += [f"data.train={train_pattern}", f"data.val={val_pattern}"]
    cfg = config_lib.resolve(EXPERIMENT, profile="cpu", overrides=overrides)
    say(f"train: {EXPERIMENT}, {cfg.train.steps} steps of {cfg.runtime.global_batch_size} pictures into {paths['run']}")
    train(cfg, paths["run"], show_progress=show_progress, console=console)
    say("eval: COCO box AP on the val pictures")
    annotations = storage.join(data, "instances_val.json")
    metrics = evaluate_checkpoint(paths["run"], annotations=annotations, output=paths["results"],
                                  overrides=["eval.per_class=true"])
    formats = export_formats()
    say(f"export: {', '.join(formats)} into {paths['export']}")
    if storage.exists(paths["export"]):  # the demo's own previous export (exports are all or nothing)
        storage.remove_tree(paths["export"])
    exported = export_checkpoint(paths["run"], paths["export"], [f"export.formats={','.join(formats)}"])
    say(f"predict: {PREDICT_IMAGES} val pictures with the exported SavedModel into {paths['predictions']}")
    val_json = json.loads(storage.read_text(annotations))
    pictures = [storage.join(data, "images", "val", im["file_name"]) for im in val_json["images"][:PREDICT_IMAGES]]
    predictions = predict_images(pictures, paths["export"], paths["predictions"], threshold=0.3)
    return DemoResult(metrics=metrics, export=exported, predictions=predictions, paths=paths)
