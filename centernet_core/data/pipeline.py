"""The tf.data input pipeline: TFRecords -> ``(features, targets)`` batches.

    ds = build_dataset(pattern, cfg, training, batch_size=None, input_context=None, start_step=0)

Letters: B batch, S ``model.input_size``, H W = S / 4, C ``model.num_classes``,
K ``data.max_objects``. Contract (docs/design.md, "Pipeline output"):

- ``features["image"]``: training: uint8 ``[B, S, S, 3]`` RGB pixels, with
  ``features["colour_transform"]`` float32 ``[B, 4, 3]`` (jitter + normalisation) and
  ``features["content"]`` int32 ``[B, 4]`` (top, left, height, width of the pixels;
  the rest is padding); ``augment.model_input(features)`` turns them into the model's
  float32 normalised B, G, R input on the accelerator. Eval: float32 ``[B, S, S, 3]``,
  normalised, channels B, G, R (``model_input`` passes it through).
- ``features["dropped_objects"]`` int32 ``[B]``: objects beyond K left out of that image
  (the K largest by area are kept, ties in record order; with ``data.crowd: ignore`` crowd
  boxes are removed before counting in training, since they never train; with ``train``
  they are ordinary objects, as in both references).
- ``features["skipped_records"]`` int64 ``[B]``: records this input pipeline has skipped
  so far because their image bytes are not a decodable format or their object lists
  differ in length (running count).
- eval also: ``source_id`` int64 ``[B]``, ``original_hw`` float32 ``[B, 2]``, ``scale``
  float32 ``[B]``, ``gt_boxes_yxyx_abs`` ``[B, K, 4]`` (original pixels), ``gt_classes``
  int32 ``[B, K]``, ``gt_is_crowd`` int32 ``[B, K]``, ``gt_area`` ``[B, K]``, ``gt_count``
  int32 ``[B]``.
- ``targets``: ``centernet_core.tasks.detection.targets.encode`` batched: ``heatmap`` ``[B, H, W, C]``,
  ``size``/``offset`` ``[B, K, 2]``, ``indices`` int32 ``[B, K]``, ``mask`` ``[B, K]``.

Training: shuffled files and records, repeat, flip / colour jitter / random square crop
per ``data.*``; with ``data.mosaic`` that fraction of the inputs are 2x2 mosaics of four
augmented images (``_mosaic_group``; each input then carries four records, merged into
one object list by ``_merge_tiles``). With ``data.deterministic`` the shuffles and
augmentations are seeded by ``train.seed``, the input pipeline id and the step training starts (or resumes) at: the
iterator is not checkpointed, so a resumed run draws a new, reproducible sequence instead
of replaying the one its first part already saw. Eval: one pass in file order,
aspect-keeping resize, no drop of the last batch. Records whose image fails to decode
despite the format check are dropped by ``ignore_errors`` (logged), never crash training.
Everything is graph-only.

Stages: records -> check (scan: format, object lists, skip count) -> per image: decode
and place the pixels (``_train_image`` / ``_eval_image``, augment module) -> batch ->
per batch: parse the objects, keep the K largest, map them like the pixels, encode the
targets (``_batch_targets``). Per-image work is only what touches pixels; everything
about boxes runs once per batch, vectorised.
"""
from __future__ import annotations

import hashlib

import tensorflow as tf

from centernet_core import boxes as box_lib
from centernet_core import storage
from centernet_core.config import ExperimentConfig
from centernet_core.data import augment, augment_reference
from centernet_core.data import keypoints as keypoints_lib
from centernet_core.errors import DataError
from centernet_core.pixels import MEAN_BGR
from centernet_core.strides import OUTPUT_STRIDE
from centernet_core.tasks import Task, build_task
_OBJECT_FEATURES = {
    "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value="0"),
    **{f"image/object/{k}": tf.io.RaggedFeature(t) for k, t in [
        ("bbox/ymin", tf.float32), ("bbox/xmin", tf.float32), ("bbox/ymax", tf.float32),
        ("bbox/xmax", tf.float32), ("class/label", tf.int64), ("area", tf.float32), ("is_crowd", tf.int64)]},
}
_LISTS = [k for k in _OBJECT_FEATURES if k.startswith("image/object/")]
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def decodable_format(encoded):
    """bool scalar: the bytes start like a format ``tf.io.decode_image`` reads."""
    checks = [tf.strings.substr(encoded, 0, len(m)) == m for m in _MAGIC]
    checks.append((tf.strings.substr(encoded, 0, 4) == b"RIFF") & (tf.strings.substr(encoded, 8, 4) == b"WEBP"))
    return tf.reduce_any(tf.stack(checks))


def _check_record(count, serialized):
    """scan step: parse, check the image format and the object lists; running skip count.

    A record whose image bytes are not a decodable format, or whose object lists (boxes,
    labels, areas, crowd flags) differ in length, is not ``ok``: it is counted and dropped.
    """
    ex = tf.io.parse_single_example(serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                                                 **{k: _OBJECT_FEATURES[k] for k in _LISTS}})
    lengths = tf.stack([tf.size(ex[k]) for k in _LISTS])
    ok = decodable_format(ex["image/encoded"]) & tf.reduce_all(tf.equal(lengths, lengths[0]))
    count = count + tf.cast(~ok, tf.int64)
    return count, {"serialized": serialized, "encoded": ex["image/encoded"], "ok": ok, "skipped": count}


def _train_image(rec, seed, cfg: ExperimentConfig):
    """One record -> augmented uint8 ``[S, S, 3]`` with its colour transform and content box,
    plus the map its boxes take.

    Decodes only the random crop's source region (augment module docstring); one draw of
    8 uniforms gives crop scale and position, flip and colour jitter.
    """
    size, d = cfg.model.input_size, cfg.data
    u = tf.random.stateless_uniform([8], seed)
    reference = d.augmentation == "reference"
    window = augment_reference.reference_crop_window if reference else augment.random_crop_window

    def placement(hw):
        start, side = window(u[:3], hw, d.crop_scales)
        return augment.crop_placement(start, side, hw, size)

    region, hw, place = augment.decode_crop(rec["encoded"], placement)
    flip = (u[3] < 0.5) if d.random_flip else tf.constant(False)
    jitter = d.color_jitter and not reference
    colour, contrast = augment.color_jitter_params(u[4:]) if jitter else (None, None)
    pixels, transform, content = augment.place_crop(region, place, flip, size, colour, contrast)
    if reference:  # black padding, jittered with the pixels: the whole input is content
        dst = tf.cast(place["dst"], tf.float32)
        mean_rgb = augment_reference.region_mean_rgb(region) * dst[2] * dst[3] / float(size * size)
        transform = augment_reference.reference_colour_transform(seed, mean_rgb, bool(d.color_jitter))
        content = tf.constant([0, 0, size, size], tf.int32)
    return {"image": tf.ensure_shape(pixels, [size, size, 3]), "colour_transform": transform, "content": content,
            "serialized": rec["serialized"], "original_hw": tf.cast(hw, tf.float32), "affine": place["affine"],
            "flip": flip, "skipped": rec["skipped"]}


# (scale, top, left) of each tile's S/2 square in the S-pixel mosaic, row by row
_TILES = ((0.5, 0.0, 0.0), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0), (0.5, 0.5, 0.5))
MOSAIC_TILES = len(_TILES)


def mosaic_group_probability(fraction: float) -> float:
    """The chance a group of four images becomes one mosaic, so that ``fraction`` of the
    inputs are mosaics: a group gives one mosaic (q) or four single images (1 - q), and
    q / (q + 4 (1 - q)) = fraction."""
    return MOSAIC_TILES * fraction / (1.0 + (MOSAIC_TILES - 1) * fraction)


def _mosaic_group(tiles, seed, cfg: ExperimentConfig):
    """Four ``_train_image`` outputs -> one 2x2 mosaic or the four as they are, stacked ``[n, ...]``.

    Every element then carries R = 4 records (``serialized`` ``[R]``, ``original_hw`` ``[R, 2]``,
    ``affine`` ``[R, 4]``, ``flip`` ``[R]``) and ``tile`` ``[R, 3]``: each record's boxes, mapped
    to its own S-pixel input as without mosaic, go to ``box * scale + (top, left) * S``. A
    single image is record 0 with tile (1, 0, 0) and three empty records (no objects). A
    mosaic's tiles are the four images halved, their padding filled with the mean colour; its
    colour transform is tile 0's and its content the whole input.
    """
    size, r = cfg.model.input_size, MOSAIC_TILES
    half = size // 2
    images = tiles["image"]  # uint8 [R, S, S, 3]
    q = mosaic_group_probability(cfg.data.mosaic)

    def mosaic():
        mean_rgb = tf.constant([round(255 * c) for c in reversed(MEAN_BGR)], tf.float32)
        filled = tf.where(augment.content_mask(tiles["content"], size), tf.cast(images, tf.float32), mean_rgb)
        small = tf.cast(tf.image.resize(filled, [half, half], antialias=True) + 0.5, tf.uint8)  # [R, S/2, S/2, 3]
        grid = tf.concat([tf.concat([small[0], small[1]], 1), tf.concat([small[2], small[3]], 1)], 0)
        placed = tf.constant(_TILES, tf.float32) * tf.constant([1.0, size, size])
        return {"image": grid[None], "colour_transform": tiles["colour_transform"][:1],
                "content": tf.constant([[0, 0, size, size]], tf.int32), "serialized": tiles["serialized"][None],
                "original_hw": tiles["original_hw"][None], "affine": tiles["affine"][None],
                "flip": tiles["flip"][None], "tile": placed[None], "skipped": tf.reduce_max(tiles["skipped"])[None]}

    def singles():
        def with_empty(x, fill):  # [R, ...] -> [R, R, ...]: each image's own record, then R - 1 empty ones
            rest = tf.fill(tf.concat([[r, r - 1], tf.shape(x)[1:]], 0), tf.constant(fill, x.dtype))
            return tf.concat([x[:, None], rest], 1)
        own = tf.constant([[1.0, 0.0, 0.0]] + [[0.0, 0.0, 0.0]] * (r - 1))
        return {"image": images, "colour_transform": tiles["colour_transform"], "content": tiles["content"],
                "serialized": with_empty(tiles["serialized"], ""), "original_hw": with_empty(tiles["original_hw"], 1.0),
                "affine": with_empty(tiles["affine"], 1.0), "flip": with_empty(tiles["flip"], False),
                "tile": tf.tile(own[None], [r, 1, 1]), "skipped": tiles["skipped"]}

    return tf.cond(tf.random.stateless_uniform([], seed) < q, mosaic, singles)


def _merge_tiles(boxes, classes, crowd, area, count, dropped, tile, max_objects: int):
    """Each record's K objects ``[B * R, K, ...]`` (in its own S-pixel input) -> each mosaic's
    K largest ``[B, K, ...]`` in the mosaic's pixels; returns (boxes, classes, crowd, area,
    count, dropped) as ``select_objects`` does."""
    r = tile.shape[1]
    scale, top, left = tf.unstack(tf.reshape(tile, [-1, 3]), 3, axis=1)  # [B * R] each
    boxes = boxes * scale[:, None, None] + tf.stack([top, left, top, left], -1)[:, None, :]
    real = tf.range(max_objects)[None] < count[:, None]  # [B * R, K]

    def per_mosaic(x):  # [B * R, K, ...] -> [B, R * K, ...]
        return tf.reshape(x, tf.concat([[-1, r * max_objects], tf.shape(x)[2:]], 0))

    rec = {"classes": per_mosaic(classes), "is_crowd": per_mosaic(crowd), "area": per_mosaic(area)}
    *out, count, more = select_objects(rec, per_mosaic(boxes), max_objects, False, per_mosaic(real))
    return (*out, count, tf.reduce_sum(tf.reshape(dropped, [-1, r]), 1) + more)


def _eval_image(rec, size: int):
    """One record -> letterboxed, normalised ``[S, S, 3]`` (augment.resample) and its map."""
    image = tf.io.decode_image(rec["encoded"], channels=3, expand_animations=False)  # uint8 [h, w, 3]
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_max(hw)
    pixels = augment.resample(augment.normalize_bgr(image), tf.constant(0.0), tf.constant(0.0), scale, size)
    return {"image": tf.ensure_shape(pixels, [size, size, 3]), "serialized": rec["serialized"],
            "original_hw": hw, "affine": tf.stack([scale, scale, 0.0, 0.0]), "flip": tf.constant(False),
            "skipped": rec["skipped"]}


def select_objects(rec, boxes_yxyx_abs, max_objects: int, drop_crowd: bool, present=None):
    """Keep at most K objects per image, largest first (stable), padded to K rows.

    Args:
      rec: ``classes``, ``is_crowd``, ``area``: ``[n]`` per image, or ``[B, N]``.
      boxes_yxyx_abs: ``[n, 4]`` or ``[B, N, 4]``.
      max_objects: K.
      drop_crowd: leave out crowd boxes before choosing.
      present: bool ``[B, N]``, the rows that hold an object (batched inputs only).

    Returns:
      (boxes ``[K, 4]``, classes ``[K]``, is_crowd ``[K]``, area ``[K]``, count, dropped), each
      with a leading ``[B]`` for batched inputs; padding rows are zero.
    """
    if boxes_yxyx_abs.shape.rank == 2:
        batched = {k: rec[k][None] for k in ("classes", "is_crowd", "area")}
        out = select_objects(batched, boxes_yxyx_abs[None], max_objects, drop_crowd,
                             tf.ones_like(batched["classes"], tf.bool))
        return tuple(x[0] for x in out)
    keep = present & tf.equal(rec["is_crowd"], 0) if drop_crowd else present  # [B, N]
    key = tf.where(keep, -box_lib.area_yxyx(boxes_yxyx_abs), float("inf"))  # kept first, largest first
    order = tf.argsort(key, axis=1, stable=True)[:, :max_objects]  # [B, min(N, K)]
    kept = tf.reduce_sum(tf.cast(keep, tf.int32), 1)  # [B]
    count = tf.minimum(kept, max_objects)
    real = tf.range(tf.shape(order)[1])[None] < count[:, None]  # [B, min(N, K)]
    pad = max_objects - tf.shape(order)[1]

    def take(x):
        x = tf.gather(x, order, batch_dims=1)
        x = tf.where(tf.reshape(real, tf.concat([tf.shape(real), tf.ones([x.shape.rank - 2], tf.int32)], 0)),
                     x, tf.zeros_like(x))
        x = tf.pad(x, [[0, 0], [0, pad]] + [[0, 0]] * (x.shape.rank - 2))
        return tf.ensure_shape(x, [None, max_objects] + x.shape[2:])

    out = [take(boxes_yxyx_abs)] + [take(rec[k]) for k in ("classes", "is_crowd", "area")]
    return (*out, count, kept - count)


def _batch_targets(batch, cfg: ExperimentConfig, task: Task, training: bool):
    """A batch of decoded images -> ``(features, targets)``: objects parsed, chosen, encoded."""
    size, d = cfg.model.input_size, cfg.data
    if "tile" in batch:  # mosaic layout: R records per input, flattened to B * R "images" until _merge_tiles
        batch = dict(batch, **{k: tf.reshape(batch[k], tf.concat([[-1], tf.shape(batch[k])[2:]], 0))
                               for k in ("serialized", "original_hw", "affine", "flip")})
    ex = tf.io.parse_example(batch["serialized"], _OBJECT_FEATURES)
    present = tf.sequence_mask(ex["image/object/class/label"].row_lengths())  # [B, N]
    dense = {k: ex[k].to_tensor() for k in _LISTS}  # [B, N] each (equal lengths: _check_record)
    boxes_norm = tf.stack([dense[f"image/object/bbox/{k}"] for k in ("ymin", "xmin", "ymax", "xmax")], -1)
    hw = batch["original_hw"]  # [B, 2]
    boxes_abs = box_lib.convert(boxes_norm, "yxyx_norm", "yxyx_abs", hw[:, None, :])  # [B, N, 4] original px
    rec = {"classes": tf.cast(dense["image/object/class/label"], tf.int32),
           "is_crowd": tf.cast(dense["image/object/is_crowd"], tf.int32), "area": dense["image/object/area"]}
    drop_crowd = training and d.crowd == "ignore"
    boxes, classes, crowd, area, count, dropped = select_objects(rec, boxes_abs, d.max_objects, drop_crowd, present)
    input_boxes = augment.transform_boxes(boxes, batch["affine"], size)  # [B, K, 4] input px
    input_boxes = tf.where(batch["flip"][:, None, None], augment.flip_boxes(input_boxes, size), input_boxes)
    if "tile" in batch:
        input_boxes, classes, crowd, area, count, dropped = _merge_tiles(
            input_boxes, classes, crowd, area, count, dropped, batch["tile"], d.max_objects)
    real = tf.range(d.max_objects)[None] < count[:, None]  # [B, K]
    trained = real if d.crowd == "train" else real & tf.equal(crowd, 0)  # [B, K]
    objects = {"boxes_yxyx_abs": input_boxes, "classes": classes, "weights": trained}
    if getattr(task, "num_keypoints", 0):  # the keypoints task: the same objects' joints, mapped like the boxes
        joints = keypoints_lib.parse(batch["serialized"], task.num_keypoints, hw, tf.shape(present)[1])
        drop = training and getattr(d, "crowd", "ignore") == "ignore"  # as the boxes' selection
        gt_keypoints = select_objects(dict(rec, area=joints), boxes_abs, d.max_objects, drop, present)[3]
        objects["keypoints_yxv"] = keypoints_lib.to_input(gt_keypoints, batch["affine"], batch["flip"], size,
                                                          task.flip_index)  # [B, K, J, 3] input px
    targets = task.encode(objects, (size // OUTPUT_STRIDE, size // OUTPUT_STRIDE))
    features = {"image": batch["image"], "dropped_objects": dropped, "skipped_records": batch["skipped"]}
    if training:
        features.update(colour_transform=batch["colour_transform"], content=batch["content"])
    else:
        features.update(source_id=tf.strings.to_number(ex["image/source_id"], tf.int64), original_hw=hw,
                        scale=batch["affine"][:, 0], gt_boxes_yxyx_abs=boxes, gt_classes=classes,
                        gt_is_crowd=crowd, gt_area=area, gt_count=count)
    if getattr(task, "num_keypoints", 0) and not training:
        features["gt_keypoints"] = gt_keypoints  # [B, K, J, 3] original px (y, x, v)
    return features, targets


def _salted(seed: int, salt: str) -> int:
    """A second 63-bit seed from ``seed``, shared with no pipeline's own (``pipeline_seed``)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{salt}".encode()).digest()[:8], "little") >> 1


def pipeline_seed(seed: int, pipeline_id: int, start_step: int) -> int:
    """The tf.data seed of one input pipeline starting at ``start_step``.

    ``seed + pipeline_id`` at step 0 (a fresh run's sequence); other steps hash all three
    into 63 bits, so no two (pipeline, start) pairs of a run share a sequence.
    """
    if start_step == 0:
        return seed + pipeline_id
    digest = hashlib.sha256(f"{seed}/{pipeline_id}/{start_step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def build_dataset(pattern: str, cfg: ExperimentConfig, training: bool, *, batch_size: int | None = None,
                  input_context: tf.distribute.InputContext | None = None,
                  start_step: int = 0) -> tf.data.Dataset:
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
      start_step: the training step this dataset starts at; part of the seed (module
        docstring).
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
    seed = pipeline_seed(cfg.train.seed, input_context.input_pipeline_id if input_context else 0, start_step)
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
    ds = ds.scan(tf.constant(0, tf.int64), _check_record).filter(lambda rec: rec["ok"])
    if training:
        seeds = tf.data.Dataset.random(seed=seed if cfg.data.deterministic else None).batch(2)  # [2] per element
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda rec, s: _train_image(rec, s, cfg),
                                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        if cfg.data.mosaic > 0:
            ds = ds.ignore_errors(log_warning=True).batch(MOSAIC_TILES, drop_remainder=True)
            group_seed = _salted(seed, "mosaic") if cfg.data.deterministic else None
            group_seeds = tf.data.Dataset.random(seed=group_seed).batch(2)
            ds = tf.data.Dataset.zip(ds, group_seeds).map(lambda tiles, s: _mosaic_group(tiles, s, cfg),
                                                          num_parallel_calls=tf.data.AUTOTUNE,
                                                          deterministic=deterministic).unbatch()
    else:
        ds = ds.map(lambda rec: _eval_image(rec, cfg.model.input_size), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=deterministic)
    ds = ds.ignore_errors(log_warning=True)  # images failing to decode despite the format check
    ds = ds.batch(batch_size, drop_remainder=bool(cfg.runtime.drop_remainder) and training,
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    task = build_task(cfg)
    ds = ds.map(lambda batch: _batch_targets(batch, cfg, task, training), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
