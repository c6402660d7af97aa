"""The tf.data input pipeline: TFRecords -> ``(features, targets)`` batches.

    ds = build_dataset(pattern, cfg, training, batch_size=None, input_context=None)

Letters: B batch, S ``model.input_size``, H W = S / 4, C ``model.num_classes``,
K ``data.max_objects``. Contract (docs/design.md, "Pipeline output"):

- ``features["image"]`` float32 ``[B, S, S, 3]``, normalised, channels B, G, R.
- ``features["dropped_objects"]`` int32 ``[B]``: objects beyond K left out of that image
  (the K largest by area are kept, ties in record order; crowd boxes are removed before
  counting in training, since they never train).
- ``features["skipped_records"]`` int64 ``[B]``: records this input pipeline has skipped
  so far because their image bytes are not a decodable format (running count).
- eval also: ``source_id`` int64 ``[B]``, ``original_hw`` float32 ``[B, 2]``, ``scale``
  float32 ``[B]``, ``gt_boxes_yxyx_abs`` ``[B, K, 4]`` (original pixels), ``gt_classes``
  int32 ``[B, K]``, ``gt_is_crowd`` int32 ``[B, K]``, ``gt_area`` ``[B, K]``, ``gt_count``
  int32 ``[B]``.
- ``targets``: ``centernet_core.targets.encode`` batched: ``heatmap`` ``[B, H, W, C]``,
  ``size``/``offset`` ``[B, K, 2]``, ``indices`` int32 ``[B, K]``, ``mask`` ``[B, K]``.

Training: shuffled files and records, repeat, flip / colour jitter / random square crop
per ``data.*``. Eval: one pass in file order, aspect-keeping resize, no drop of the last
batch. Records whose image fails to decode despite the format check are dropped by
``ignore_errors`` (logged), never crash training. Everything is graph-only.
"""
from __future__ import annotations

import tensorflow as tf

from centernet_core import boxes as box_lib
from centernet_core import storage, targets as targets_lib
from centernet_core.config import ExperimentConfig
from centernet_core.data import augment
from centernet_core.errors import DataError

STRIDE = 4
_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value="0"),
    "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    "image/object/area": tf.io.VarLenFeature(tf.float32),
    "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
}
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def decodable_format(encoded):
    """bool scalar: the bytes start like a format ``tf.io.decode_image`` reads."""
    checks = [tf.strings.substr(encoded, 0, len(m)) == m for m in _MAGIC]
    checks.append((tf.strings.substr(encoded, 0, 4) == b"RIFF") & (tf.strings.substr(encoded, 8, 4) == b"WEBP"))
    return tf.reduce_any(tf.stack(checks))


def parse_record(serialized):
    """One serialized Example -> dict of tensors; boxes stay normalised ``[n, 4]``."""
    ex = tf.io.parse_single_example(serialized, _FEATURES)
    dense = {k: tf.sparse.to_dense(v) for k, v in ex.items() if isinstance(v, tf.SparseTensor)}
    boxes = tf.stack([dense[f"image/object/bbox/{k}"] for k in ("ymin", "xmin", "ymax", "xmax")], -1)  # [n, 4]
    return {"encoded": ex["image/encoded"], "ok": decodable_format(ex["image/encoded"]),
            "source_id": tf.strings.to_number(ex["image/source_id"], tf.int64),
            "boxes_yxyx_norm": boxes, "classes": tf.cast(dense["image/object/class/label"], tf.int32),
            "area": dense["image/object/area"], "is_crowd": tf.cast(dense["image/object/is_crowd"], tf.int32)}


def select_objects(rec, boxes_yxyx_abs, max_objects: int, drop_crowd: bool):
    """Keep at most K objects, largest first (stable), padded to K rows.

    Returns (boxes ``[K, 4]``, classes ``[K]``, is_crowd ``[K]``, area ``[K]``, count,
    dropped) with padding rows zero.
    """
    keep = tf.ones_like(rec["classes"], tf.bool) if not drop_crowd else tf.equal(rec["is_crowd"], 0)
    boxes = tf.boolean_mask(boxes_yxyx_abs, keep)  # [n, 4]
    cols = [tf.boolean_mask(rec[k], keep) for k in ("classes", "is_crowd", "area")]
    order = tf.argsort(-box_lib.area_yxyx(boxes), stable=True)[:max_objects]
    n = tf.shape(order)[0]
    pad = max_objects - n

    def take(x):
        x = tf.gather(x, order)
        return tf.pad(x, [[0, pad]] + [[0, 0]] * (len(x.shape) - 1))

    out = [take(boxes)] + [take(c) for c in cols]
    out[0] = tf.ensure_shape(out[0], [max_objects, 4])
    return (*out, n, tf.reduce_sum(tf.cast(keep, tf.int32)) - n)


def _example(rec, seed, cfg: ExperimentConfig, training: bool):
    """Decode, augment, normalise and encode one record -> (features, targets)."""
    size, d = cfg.model.input_size, cfg.data
    image = tf.io.decode_image(rec["encoded"], channels=3, expand_animations=False)  # uint8 [h, w, 3]
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    boxes_abs = box_lib.convert(rec["boxes_yxyx_norm"], "yxyx_norm", "yxyx_abs", hw)  # [n, 4] original px
    boxes, classes, crowd, area, count, dropped = select_objects(rec, boxes_abs, d.max_objects, drop_crowd=training)
    if training:
        seeds = tf.random.experimental.stateless_split(seed, 3)
        top, left, side = augment.random_crop_window(seeds[0], hw, d.crop_scales)
        scale = size / side
    else:
        top, left, scale = tf.constant(0.0), tf.constant(0.0), size / tf.reduce_max(hw)
    jitter = augment.color_jitter_params(seeds[1]) if training and d.color_jitter else (None, None)
    pixels = augment.resample(augment.normalize_bgr(image, *jitter), top, left, scale, size)  # [S, S, 3]
    input_boxes = augment.transform_boxes(boxes, top, left, scale, size)  # [K, 4] input px
    if training and d.random_flip:
        flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
        pixels, input_boxes = tf.cond(flip, lambda: augment.flip_left_right(pixels, input_boxes, size),
                                      lambda: (pixels, input_boxes))
    real = tf.range(d.max_objects) < count
    targets = targets_lib.encode(input_boxes, classes, real & tf.equal(crowd, 0), cfg.model.num_classes,
                                 (size // STRIDE, size // STRIDE), STRIDE, d.min_overlap)
    features = {"image": tf.ensure_shape(pixels, [size, size, 3]), "dropped_objects": dropped,
                "skipped_records": rec["skipped"]}
    if not training:
        features.update(source_id=rec["source_id"], original_hw=hw, scale=tf.cast(scale, tf.float32),
                        gt_boxes_yxyx_abs=boxes, gt_classes=classes, gt_is_crowd=crowd, gt_area=area,
                        gt_count=count)
    return features, targets


def _count_skipped(count, rec):
    """scan step: running count of records failing the format check."""
    count = count + tf.cast(~rec["ok"], tf.int64)
    return count, dict(rec, skipped=count)


def build_dataset(pattern: str, cfg: ExperimentConfig, training: bool, *, batch_size: int | None = None,
                  input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Batches of ``(features, targets)`` from TFRecords matching ``pattern``.

    Args:
      pattern: shard glob (e.g. ``data/train-*.tfrecord``; any storage path).
      cfg: the resolved experiment config (model.input_size / num_classes, data.*,
        runtime.global_batch_size / drop_remainder, eval.batch_size, train.seed).
      training: augmented, shuffled, repeated; otherwise one ordered eval pass.
      batch_size: per-replica batch; default: ``input_context``'s share of
        ``runtime.global_batch_size`` (training) or ``eval.batch_size`` (eval).
      input_context: from ``strategy.distribute_datasets_from_function``; files (or,
        with fewer files than pipelines, records) are sharded by its pipeline id.
    """
    files = storage.glob(pattern)
    if not files:
        raise DataError(f"no TFRecord files match {pattern!r}; write them with `centernet prepare coco` "
                        "and set data.train / data.val to their pattern")
    if batch_size is None:
        batch_size = cfg.runtime.global_batch_size if training else cfg.eval.batch_size
        if input_context is not None and training:
            batch_size = input_context.get_per_replica_batch_size(batch_size)
    deterministic = bool(cfg.data.deterministic) or not training
    seed = cfg.train.seed + (input_context.input_pipeline_id if input_context else 0)
    ds = tf.data.Dataset.from_tensor_slices(files)
    shard_records = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            shard_records = True
    if training:
        ds = ds.shuffle(len(files), seed=seed if cfg.data.deterministic else None)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8) if training else 1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shard_records:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        ds = ds.shuffle(cfg.data.shuffle_buffer, seed=seed if cfg.data.deterministic else None).repeat()
    ds = ds.map(parse_record, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.scan(tf.constant(0, tf.int64), _count_skipped).filter(lambda rec: rec["ok"])
    seeds = tf.data.Dataset.random(seed=seed if cfg.data.deterministic else None).batch(2)  # [2] per element
    ds = tf.data.Dataset.zip(ds, seeds)
    ds = ds.map(lambda rec, s: _example(rec, s, cfg, training), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)
    ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(batch_size, drop_remainder=bool(cfg.runtime.drop_remainder) and training,
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
