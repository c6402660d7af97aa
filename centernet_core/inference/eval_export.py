"""COCO evaluation of an exported model: the AP of exactly the file you deploy.

``centernet eval --model EXPORT`` (an export directory, its ``saved_model/``, or one of its
``.tflite`` / ``.onnx`` files, int8 ones included) runs the export in its own runtime on the
validation records and scores it with the same bookkeeping as ``evaluate_model``
(``coco_eval``: ground truth from the eval pipeline, results json, COCOeval).

The eval pipeline (``data.pipeline.build_dataset``) gives the ground truth and the source
ids; the export is fed each record's *original* decoded picture (uint8 [1, h, w, 3]) so that
its own letterbox runs, as it will in deployment. Its outputs are already in original
pixels and original category ids.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from centernet_core.inference import coco_eval
from centernet_core.inference import exported
from centernet_core.errors import ConfigError, DataError


def _originals(pattern: str):
    """(source_id int, uint8 [h, w, 3]) of every record of ``pattern``, in the eval pipeline's order."""
    import tensorflow as tf
    from centernet_core import storage
    keys = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
    for rec in tf.data.TFRecordDataset(storage.glob(pattern)).map(lambda s: tf.io.parse_single_example(s, keys)):
        try:
            image = tf.io.decode_image(rec["image/encoded"], channels=3, expand_animations=False)
        except tf.errors.OpError:
            continue  # the pipeline drops it too
        yield int(rec["image/source_id"].numpy() or 0), image.numpy()


def evaluate_runner(runner: Callable, cfg, pattern: str, categories: Sequence[dict], *,
                    annotations: str | None = None, output: str | None = None,
                    on_batch: Callable[[int], None] | None = None) -> dict:
    """COCO box metrics of ``runner`` (``exported`` runner: uint8 [1, h, w, 3] -> serving outputs).

    ``cfg`` supplies the pipeline's settings (``data.max_objects``, ``eval.batch_size``,
    ``model.input_size``); ``categories`` the ids that the ground truth uses. Returns what
    ``evaluate.evaluate_model`` returns.
    """
    from centernet_core.data.pipeline import build_dataset
    gt = coco_eval.GroundTruthBuilder(sorted(categories, key=lambda c: int(c["index"])))
    originals = _originals(pattern)
    results, images = [], 0
    for features, _ in build_dataset(pattern, cfg, False, batch_size=cfg.eval.batch_size):
        source_id = features["source_id"].numpy()
        for sid in source_id:
            for found, picture in originals:  # skip records the pipeline dropped
                if found == sid:
                    break
            else:
                raise DataError(f"image {sid} of {pattern} not found in its records")
            out = runner(picture[None])
            n = int(out["num_detections"][0])
            results += coco_eval.image_results(int(sid), out["detection_boxes"][0, :n],
                                               out["detection_scores"][0, :n],
                                               out["detection_classes"][0, :n].astype(np.int64))
        gt.add_batch(source_id, *(features[k].numpy() for k in (
            "original_hw", "gt_boxes_yxyx_abs", "gt_classes", "gt_is_crowd", "gt_area", "gt_count")))
        images += len(source_id)
        if on_batch:
            on_batch(len(source_id))
    if images == 0:
        raise DataError(f"no images could be read from {pattern!r}")
    if output:
        coco_eval.write_results(output, results)
    metrics = coco_eval.evaluate_results(annotations or gt.dataset(), results, per_class=cfg.eval.per_class)
    return {**metrics, "images": images, "detections": len(results)}


def evaluate_export(path: str, *, annotations: str | None = None, output: str | None = None,
                    overrides: Sequence[str] = (), num_threads: int | None = None,
                    on_start: Callable[[int], None] | None = None,
                    on_batch: Callable[[int], None] | None = None) -> dict:
    """``centernet eval --model PATH``: evaluate the export at ``path`` on ``data.val``.

    ``overrides`` apply to the config saved with the export (``--data`` arrives as
    ``data.val=...``). The result also holds ``"model"`` (the file) and ``"format"``.
    """
    from centernet_core import storage
    from centernet_core.data.metadata import index_to_coco_id, load_metadata
    export_dir, fmt = exported.locate(path)
    cfg = exported.load_config(export_dir, overrides)
    categories = exported.load_categories(export_dir)
    pattern = cfg.data.val
    if not pattern:
        raise ConfigError("no evaluation data: pass --data PATTERN (TFRecords from `centernet prepare`)")
    meta = load_metadata(pattern)
    if index_to_coco_id(meta) != index_to_coco_id(categories):
        raise DataError(f"the categories of {pattern} differ from the export's; evaluate on data prepared "
                        "with the same category list")
    runner = exported.open_runner(export_dir, fmt, **({"num_threads": num_threads} if num_threads else {}))
    if on_start:
        on_start(int(meta.get("images", 0)))
    metrics = evaluate_runner(runner, cfg, pattern, categories, annotations=annotations, output=output,
                              on_batch=on_batch)
    name = exported.FORMAT_FILES[fmt][0]
    return {**metrics, "model": storage.join(export_dir, name), "format": fmt}
