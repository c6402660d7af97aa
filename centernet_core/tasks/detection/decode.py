"""Pure decoding: raw head maps -> a fixed number of detections per image.

Letters: B batch, H W output map (input / ``stride``), C classes, N ``max_detections``.

Only ops TFLite and ONNX accept are used on the main path (sigmoid, max_pool, top_k,
gather, arithmetic, elementwise select): shapes are static, N rows per image always, rows
past ``num_detections`` are zero. Optional class-wise NMS (``classwise_nms``, also the
multi-scale merge of ``detect`` with ``eval.merge: nms``) uses the padded NMS op, which
TFLite and ONNX convert; the original's merge, Gaussian soft-NMS (``classwise_soft_nms``),
uses ``NonMaxSuppressionV5``.
"""
from __future__ import annotations

import tensorflow as tf

from centernet_core.strides import OUTPUT_STRIDE


def _peaks(heat):
    """Keep local maxima of a 3x3 window (the "no NMS" of CenterNet); zero elsewhere."""
    hmax = tf.nn.max_pool2d(heat, 3, 1, "SAME")
    return heat * tf.cast(tf.equal(hmax, heat), heat.dtype)


def _top_k(flat, k: int):
    """``tf.math.top_k`` that also takes a map with fewer than ``k`` cells (an exported graph
    fed a small image): the missing rows get score 0 and index 0, so they are never kept."""
    cells = tf.shape(flat)[1]
    padding = tf.maximum(k - cells, 0)
    flat = tf.pad(flat, [[0, 0], [0, padding]])  # [B, max(M, k)], padded scores 0
    scores, index = tf.math.top_k(flat, k=k)  # [B, N]
    return scores, tf.where(index < cells, index, 0)


def decode(heatmap_logits, size, offset, max_detections: int = 100, score_threshold: float = 0.0,
           nms_iou: float = 0.0, stride: int = OUTPUT_STRIDE) -> dict:
    """Detections from one stack's head outputs.

    Args:
      heatmap_logits: ``[B, H, W, C]`` logits (any float dtype).
      size: ``[B, H, W, 2]`` (h, w) in output-map units.
      offset: ``[B, H, W, 2]`` (dy, dx) sub-pixel centre offsets.
      max_detections: N, the top-N peaks over H * W * C.
      score_threshold: detections with score <= this are dropped (0 keeps every peak).
      nms_iou: class-wise NMS IoU threshold; 0 disables NMS (CenterNet's default).
      stride: output stride of the maps.
    Returns:
      ``boxes_yxyx_abs`` float32 ``[B, N, 4]`` in input pixels, ``scores`` float32 ``[B, N]``
      (descending), ``classes`` int32 ``[B, N]`` (training index), ``num_detections`` int32
      ``[B]``; rows past ``num_detections`` are zero.
    """
    heat = _peaks(tf.sigmoid(tf.cast(heatmap_logits, tf.float32)))  # [B, H, W, C]
    size, offset = tf.cast(size, tf.float32), tf.cast(offset, tf.float32)
    shape = tf.shape(heat)
    b, w, c = shape[0], shape[2], shape[3]
    scores, index = _top_k(tf.reshape(heat, [b, -1]), max_detections)  # [B, N]
    classes = index % c
    pixel = index // c  # y * W + x
    ys, xs = tf.cast(pixel // w, tf.float32), tf.cast(pixel % w, tf.float32)
    hw = tf.gather(tf.reshape(size, [b, -1, 2]), pixel, batch_dims=1)  # [B, N, 2]
    dyx = tf.gather(tf.reshape(offset, [b, -1, 2]), pixel, batch_dims=1)  # [B, N, 2]
    cy, cx = ys + dyx[..., 0], xs + dyx[..., 1]
    half_h, half_w = hw[..., 0] / 2.0, hw[..., 1] / 2.0
    boxes = tf.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1) * float(stride)
    if nms_iou > 0.0:
        return classwise_nms(boxes, scores, classes, max_detections, nms_iou, score_threshold)
    return _keep_above(boxes, scores, classes, score_threshold)


def _keep_above(boxes, scores, classes, score_threshold: float) -> dict:
    """The ``decode`` dict of score-sorted rows: rows with score <= threshold become zero."""
    valid = scores > score_threshold  # scores are sorted: the valid rows come first
    boxes = tf.where(valid[..., None], boxes, 0.0)
    classes = tf.where(valid, tf.cast(classes, tf.int32), 0)
    scores = tf.where(valid, scores, 0.0)
    return {"boxes_yxyx_abs": boxes, "scores": scores, "classes": classes,
            "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)}


def classwise_nms(boxes_yxyx, scores, classes, max_detections: int, iou: float, score_threshold: float = 0.0) -> dict:
    """Class-wise NMS over M candidates per image; keeps the best ``max_detections`` (N).

    Classes are separated by shifting each class's boxes by ``class x span`` pixels, where
    ``span`` is the extent of all of the image's boxes plus 1, so boxes of different classes
    never overlap and one padded NMS call suppresses within a class only. The shift is at
    most C x span: float32 keeps the boxes' sub-pixel precision (a fixed shift such as
    1e5 px per class does not: at class 79 coordinates are only exact to 0.5 px).

    Args:
      boxes_yxyx: ``[B, M, 4]`` (any pixel frame); scores: ``[B, M]`` (any order);
        classes: ``[B, M]`` integer training index.
      max_detections: N (may be less than, equal to or more than M).
      iou: suppress a box overlapping a better one of its class by more than this.
      score_threshold: survivors with score <= this are dropped.
    Returns: the ``decode`` dict: ``boxes_yxyx_abs`` ``[B, N, 4]``, ``scores`` ``[B, N]``
      (descending), ``classes`` int32 ``[B, N]``, ``num_detections`` int32 ``[B]``; rows past
      ``num_detections`` are zero.
    """
    boxes_yxyx, scores = tf.cast(boxes_yxyx, tf.float32), tf.cast(scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    low = tf.reduce_min(boxes_yxyx, axis=[1, 2], keepdims=True)  # [B, 1, 1]
    span = tf.reduce_max(boxes_yxyx, axis=[1, 2], keepdims=True) - low + 1.0  # [B, 1, 1]
    shifted = boxes_yxyx - low + tf.cast(classes, tf.float32)[..., None] * span  # [B, M, 4], >= 0
    keep, count = tf.image.non_max_suppression_padded(
        shifted, scores, max_output_size=max_detections, iou_threshold=iou,
        pad_to_max_output_size=True)  # [B, N] indices into the candidates (best first), [B]
    live = tf.range(max_detections)[None, :] < count[:, None]  # [B, N]
    scores = tf.where(live, tf.gather(scores, keep, batch_dims=1), 0.0)
    return _keep_above(tf.gather(boxes_yxyx, keep, batch_dims=1), scores,
                       tf.gather(classes, keep, batch_dims=1), score_threshold)


SOFT_NMS_SIGMA = 0.5  # the original's soft_nms(method=2): weight exp(-iou^2 / sigma)
SOFT_NMS_MIN_SCORE = 0.001  # boxes decayed below this are discarded (the original's threshold)


def classwise_soft_nms(boxes_yxyx, scores, classes, max_detections: int, sigma: float = SOFT_NMS_SIGMA,
                       score_threshold: float = 0.0, min_score: float = SOFT_NMS_MIN_SCORE) -> dict:
    """The original's multi-scale merge: Gaussian soft-NMS per class, then the best N overall.

    Greedy: the best remaining box is kept and every box of its class is rescored by
    ``exp(-iou^2 / sigma)``; boxes falling below ``min_score`` are discarded. IoU uses the
    original's inclusive pixel corners (``+ 1`` on widths and heights). Each class present
    runs on its own, in unshifted pixels (the shift of ``classwise_nms`` costs float32 bits
    that soft-NMS's IoU-dependent weights would show). Built on ``non_max_suppression_with_scores``
    (its ``soft_nms_sigma`` is sigma / 2: TF writes the weight as ``exp(-iou^2 / (2 s))``).

    Deliberate difference: the original's merge ignores the ``keep`` list its Cython
    ``soft_nms`` returns, so a discarded box's row is filled with a copy of the last row;
    here a discarded box is gone.

    Args and result as ``classwise_nms`` (scores are the decayed ones, descending).
    """
    boxes_yxyx, scores = tf.cast(boxes_yxyx, tf.float32), tf.cast(scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    inclusive = tf.concat([boxes_yxyx[..., :2], boxes_yxyx[..., 2:] + 1.0], axis=-1)  # [B, M, 4]

    def one_class(image_boxes, image_scores, image_classes, c):
        """Soft-NMS of class c's boxes (others scored 0, so dropped): indices and scores [N]."""
        own = tf.where(tf.equal(image_classes, c), image_scores, 0.0)
        keep, kept = tf.image.non_max_suppression_with_scores(
            image_boxes, own, max_output_size=max_detections, iou_threshold=1.0,
            score_threshold=min_score, soft_nms_sigma=sigma / 2.0)  # [n] best first
        pad = max_detections - tf.shape(keep)[0]
        return tf.pad(keep, [[0, pad]]), tf.pad(kept, [[0, pad]])

    def one(args):
        image_boxes, image_scores, image_classes = args
        present, _ = tf.unique(image_classes)  # per class, in unshifted pixels (exact IoU)
        keep, kept = tf.map_fn(lambda c: one_class(image_boxes, image_scores, image_classes, c), present,
                               fn_output_signature=(tf.TensorSpec([max_detections], tf.int32),
                                                    tf.TensorSpec([max_detections], tf.float32)))  # [P, N]
        best, order = _top_k(tf.reshape(kept, [1, -1]), max_detections)  # [1, N] over all classes
        return tf.gather(tf.reshape(keep, [-1]), order[0]), best[0]

    keep, kept = tf.map_fn(one, (inclusive, scores, classes), fn_output_signature=(
        tf.TensorSpec([max_detections], tf.int32), tf.TensorSpec([max_detections], tf.float32)))  # [B, N]
    return _keep_above(tf.gather(boxes_yxyx, keep, batch_dims=1), kept,
                       tf.gather(classes, keep, batch_dims=1), score_threshold)


def to_original(boxes_yxyx_abs, scale, original_hw):
    """Map boxes from input pixels back to the original image and clip to it.

    Args:
      boxes_yxyx_abs: ``[B, N, 4]`` in input pixels (input = original x ``scale``, padding at
        the bottom / right, so no offset).
      scale: ``[B]`` resize factor of each image.
      original_hw: ``[B, 2]`` original (height, width).
    Returns:
      ``[B, N, 4]`` float32 ``boxes_yxyx_abs`` in original pixels.
    """
    boxes = tf.cast(boxes_yxyx_abs, tf.float32) / tf.cast(scale, tf.float32)[:, None, None]
    hw = tf.cast(original_hw, tf.float32)
    upper = tf.concat([hw, hw], axis=-1)[:, None, :]  # [B, 1, 4]: (h, w, h, w)
    return tf.clip_by_value(boxes, 0.0, upper)


def merge_flip(outputs: dict, outputs_flipped: dict) -> dict:
    """Flip test (the original's): average the image's and its mirror's heatmaps and sizes.

    ``outputs_flipped`` are the head maps of the horizontally mirrored input; they are
    mirrored back before averaging. Heatmaps are averaged as probabilities (after sigmoid)
    and returned as logits again; offsets come from the unflipped image (a mirrored offset
    is not the offset of the same pixel). Shapes as ``decode``'s inputs, float32.
    """
    def unflip(t):
        return tf.reverse(tf.cast(t, tf.float32), axis=[2])
    prob = 0.5 * (tf.sigmoid(tf.cast(outputs["heatmap"], tf.float32)) + tf.sigmoid(unflip(outputs_flipped["heatmap"])))
    prob = tf.clip_by_value(prob, 1e-7, 1.0 - 1e-7)
    return {"heatmap": tf.math.log(prob) - tf.math.log1p(-prob),
            "size": 0.5 * (tf.cast(outputs["size"], tf.float32) + unflip(outputs_flipped["size"])),
            "offset": tf.cast(outputs["offset"], tf.float32)}
