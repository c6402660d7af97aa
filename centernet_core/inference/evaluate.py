"""COCO evaluation of a model, a checkpoint, or a results file.

Three entry points, one per job:

- ``evaluate_model(model, cfg, pattern, categories, ...)``: the in-memory model on the
  eval pipeline of ``pattern``; what train-and-eval calls (``train.eval_every``).
- ``evaluate_checkpoint(path, ...)``: ``centernet eval --ckpt``: rebuild the run, restore,
  then ``evaluate_model``.
- ``evaluate_detections(detections, annotations)``: ``centernet eval --detections``:
  pycocotools on two files, no model.

Detections are mapped to original pixels and original category ids (``detect``) and, with
``output``, written as a COCO results json. Ground truth is the ``annotations`` json when
given, else built from the records' ground truth (crowd boxes and areas kept; at most
``data.max_objects`` boxes per image, so pass the json for exact numbers on crowded sets).
"""
from __future__ import annotations

from typing import Callable, Sequence

from centernet_core import storage
from centernet_core.data.metadata import index_to_coco_id
from centernet_core.errors import ConfigError, DataError
from centernet_core.inference import coco_eval, keypoint_eval
from centernet_core.inference.report import write_report


def _ground_truth_dict(annotations: str) -> dict:
    import json
    return json.loads(storage.read_text(annotations))


def evaluate_model(model, cfg, pattern: str, categories: Sequence[dict], *,
                   annotations: str | None = None, output: str | None = None, report: str | None = None,
                   on_batch: Callable[[int], None] | None = None) -> dict:
    """COCO box metrics of ``model`` on the TFRecords matching ``pattern``.

    The train-and-eval path: ``train`` can call this with its live model after each
    ``train.eval_every`` steps.

    Args:
      model: callable ``model(images [B, S, S, 3], training=False)`` -> list of head dicts.
      cfg: the run's ``ExperimentConfig`` (model.*, and eval.*: flip, scales, per_class, ...).
      pattern: eval TFRecord glob.
      categories: ``[{"index", "id", "name"}]``, training index -> original category.
      annotations: COCO instances json as ground truth (default: the records' ground truth).
      output: write the COCO results json here (atomically).
      report: write the evaluation report (``inference.report``) into this directory, with
        the records' pictures and the model's heatmaps in its galleries.
      on_batch: called with the number of images after each batch (progress bars).
    Returns: ``{"AP", "AP50", ..., "ARl"}`` (the 12 COCOeval numbers), ``"images"``,
      ``"detections"``, and ``"per_class"`` {name: AP} when asked.
    """
    import tensorflow as tf
    from centernet_core import strides
    from centernet_core.data.pipeline import build_dataset
    from centernet_core.inference.detect import detect
    from centernet_core.tasks import build_task

    e, size = cfg.eval, cfg.model.input_size
    task = build_task(cfg)
    categories = sorted(categories, key=lambda c: int(c["index"]))
    category_ids = list(index_to_coco_id(categories).values())
    if len(category_ids) != cfg.model.num_classes:
        raise ConfigError(f"{len(category_ids)} categories for model.num_classes={cfg.model.num_classes}")
    divisor = strides.input_divisor(cfg.model.backbone)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32),
                                  tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, 2], tf.float32)])
    def run(images, scale, original_hw):
        return detect(model, task, images, scale, original_hw, divisor=divisor,
                      flip=e.flip, scales=e.scales, max_detections=e.max_detections,
                      score_threshold=e.score_threshold, nms_iou=e.nms_iou)

    if e.protocol == "original":  # the original's test protocol, one image at a time at its own size
        from centernet_core.inference import original_protocol
        batches = original_protocol.batches(build_dataset(pattern, cfg, False, batch_size=1), pattern)
        run_original = original_protocol.make_detect_fn(model, task, divisor, e)
        run = lambda image, scale, original_hw: run_original(image)  # noqa: E731
    else:
        batches = ((f, f["image"]) for f, _ in build_dataset(pattern, cfg, False, batch_size=e.batch_size))
    gt = coco_eval.GroundTruthBuilder(categories)
    results, images = [], 0
    for features, inputs in batches:
        det = {k: v.numpy() for k, v in run(inputs, features["scale"], features["original_hw"]).items()}
        source_id = features["source_id"].numpy()
        results += coco_eval.detections_to_results(source_id, det["boxes_yxyx_abs"], det["scores"], det["classes"],
                                                   det["num_detections"], category_ids)
        if "keypoints_yx_abs" in det:  # the keypoints task: joints into the same result dicts
            keypoint_eval.attach_keypoints(results, det)
        gt.add_batch(source_id, *(features[k].numpy() for k in (
            "original_hw", "gt_boxes_yxyx_abs", "gt_classes", "gt_is_crowd", "gt_area", "gt_count")))
        if "gt_keypoints" in features:
            keypoint_eval.add_ground_truth(gt, features["gt_keypoints"].numpy(), features["gt_count"].numpy())
        images += len(source_id)
        if on_batch:
            on_batch(len(source_id))
    if images == 0:
        raise DataError(f"no images could be read from {pattern!r}")
    expected = check_complete(pattern, images, e.allow_subset)
    if report:
        from centernet_core.inference import report_sources
        pictures = report_sources.record_pictures(pattern)
        write_report(report, _ground_truth_dict(annotations) if annotations else gt.dataset(), results, pictures,
                     report_sources.model_heatmaps(model, cfg, categories, pictures))
    if output:
        coco_eval.write_results(output, results)
    metrics = coco_eval.evaluate_results(annotations or gt.dataset(), results, per_class=e.per_class)
    if getattr(task, "num_keypoints", 0):  # keypoint AP (OKS) beside box AP
        metrics.update(keypoint_eval.evaluate_keypoints(annotations or gt.dataset(), results, keypoint_eval.sigmas_for(
            task.num_keypoints, e.keypoint_sigmas)))
    return {**metrics, "images": images, "images_expected": expected, "detections": len(results)}


def check_complete(pattern: str, images: int, allow_subset: bool = False) -> int:
    """The image count of ``pattern``'s metadata; DataError when ``images`` differs from it.

    The pipeline skips records it cannot decode, so AP could come from a subset without
    this check; ``allow_subset`` (``eval.allow_subset``, ``--allow-subset``) accepts one.
    """
    from centernet_core.data.metadata import load_metadata

    try:
        expected = int(load_metadata(pattern).get("images", images))
    except DataError:  # records without metadata (written by other tools): nothing to compare with
        return images
    if images != expected and not allow_subset:
        raise DataError(f"evaluated {images} of the {expected} images that the metadata of {pattern!r} lists "
                        f"(undecodable records are skipped, or the pattern matches only some shards); AP on a "
                        "subset is not comparable: fix the data, or pass --allow-subset (eval.allow_subset=true)")
    return expected


def evaluate_checkpoint(path: str, *, annotations: str | None = None, output: str | None = None,
                        report: str | None = None, overrides: Sequence[str] = (),
                        on_start: Callable[[int], None] | None = None,
                        on_batch: Callable[[int], None] | None = None) -> dict:
    """``centernet eval --ckpt``: restore the run at ``path`` and evaluate it on ``data.val``.

    ``overrides`` (``a.b=value``) apply to the run's config: the CLI's ``--data``, ``--flip``,
    ``--scales`` and ``--per-class`` arrive as ``data.val=...``, ``eval.flip=...`` and so on.
    ``on_start(total_images)`` is called once the dataset's size is known. Other arguments
    as ``evaluate_model``; the result also holds ``"checkpoint"``.
    """
    from centernet_core.data.metadata import load_metadata
    from centernet_core.inference.trained import load_trained

    trained = load_trained(path, overrides)
    pattern = trained.cfg.data.val
    if not pattern:
        raise ConfigError("no evaluation data: pass --data PATTERN (TFRecords from `centernet prepare`) "
                          "or train with data.val set")
    meta = load_metadata(pattern)
    data_ids, run_ids = index_to_coco_id(meta), index_to_coco_id(trained.categories)
    if data_ids != run_ids:
        raise DataError(f"the categories of {pattern} differ from the run's (index -> id "
                        f"{list(data_ids.items())[:5]}... vs {list(run_ids.items())[:5]}...); "
                        "evaluate on data prepared with the same category list")
    if on_start:
        on_start(int(meta.get("images", 0)))
    metrics = evaluate_model(trained.model, trained.cfg, pattern, trained.categories, annotations=annotations,
                             output=output, report=report, on_batch=on_batch)
    return {**metrics, "checkpoint": trained.checkpoint}


def evaluate_detections(detections: str, annotations: str, per_class: bool = False, report: str | None = None,
                        pictures: str | None = None, keypoint_sigmas: Sequence[float] = ()) -> dict:
    """``centernet eval --detections``: COCOeval of a results json against an instances json.

    The numbers are exactly those of running pycocotools' COCOeval on the two files.
    Results with ``keypoints`` (``[x, y, v] * J``, as the keypoints task writes them) against
    annotations whose categories name keypoints are also scored by COCOeval("keypoints")
    (the ``kp_*`` numbers), with ``keypoint_sigmas``, else the json category's ``sigmas``,
    else COCO's 17 for J = 17 (``keypoint_eval.sigmas_for``).
    ``report``: write the evaluation report there (pictures from the records ``pictures``
    when given; no heatmaps: there is no model).
    """
    results = coco_eval.read_results(detections)
    coco_gt = coco_eval.load_ground_truth(annotations)
    metrics = coco_eval.evaluate_results(coco_gt, results, per_class=per_class)
    layouts = [c for c in coco_gt.dataset.get("categories", []) if c.get("keypoints")]
    if layouts and any("keypoints" in r for r in results):
        sigmas = keypoint_sigmas or layouts[0].get("sigmas") or ()
        metrics.update(keypoint_eval.evaluate_keypoints(coco_gt, results, keypoint_eval.sigmas_for(
            len(layouts[0]["keypoints"]), sigmas)))
    if report:
        from centernet_core.inference import report_sources
        loader = report_sources.record_pictures(pictures) if pictures else None
        write_report(report, _ground_truth_dict(annotations), results, loader)
    return {**metrics, "detections": len(results)}
