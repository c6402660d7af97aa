"""Pure decoding: raw head maps -> a fixed number of detections per image.

Letters: B batch, H W output map (input / ``stride``), C classes, N ``max_detections``.

Only ops TFLite and ONNX accept are used on the main path (sigmoid, max_pool, top_k,
gather, arithmetic, elementwise select): shapes are static, N rows per image always, rows
past ``num_detections`` are zero. Optional class-wise NMS uses the padded NMS op.
"""
from __future__ import annotations

import tensorflow as tf

OUTPUT_STRIDE = 4
_NMS_CLASS_OFFSET = 1e5  # boxes of different classes are shifted this far apart: never overlap


def _peaks(heat):
    """Keep local maxima of a 3x3 window (the "no NMS" of CenterNet); zero elsewhere."""
    hmax = tf.nn.max_pool2d(heat, 3, 1, "SAME")
    return heat * tf.cast(tf.equal(hmax, heat), heat.dtype)


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
    scores, index = tf.math.top_k(tf.reshape(heat, [b, -1]), k=max_detections)  # [B, N]
    classes = index % c
    pixel = index // c  # y * W + x
    ys, xs = tf.cast(pixel // w, tf.float32), tf.cast(pixel % w, tf.float32)
    hw = tf.gather(tf.reshape(size, [b, -1, 2]), pixel, batch_dims=1)  # [B, N, 2]
    dyx = tf.gather(tf.reshape(offset, [b, -1, 2]), pixel, batch_dims=1)  # [B, N, 2]
    cy, cx = ys + dyx[..., 0], xs + dyx[..., 1]
    half_h, half_w = hw[..., 0] / 2.0, hw[..., 1] / 2.0
    boxes = tf.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1) * float(stride)
    if nms_iou > 0.0:
        boxes, scores, classes = _class_nms(boxes, scores, classes, max_detections, nms_iou)
    valid = scores > score_threshold  # scores are sorted: the valid rows come first
    boxes = tf.where(valid[..., None], boxes, 0.0)
    classes = tf.where(valid, tf.cast(classes, tf.int32), 0)
    scores = tf.where(valid, scores, 0.0)
    return {"boxes_yxyx_abs": boxes, "scores": scores, "classes": classes,
            "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)}


def _class_nms(boxes, scores, classes, max_detections: int, iou: float):
    """Class-wise NMS on the top-N candidates; returns the same shapes, survivors first.

    Classes are separated by shifting each class's boxes by ``class * 1e5`` pixels, so one
    padded NMS call suppresses within classes only. Dropped rows get score 0.
    """
    shift = tf.cast(classes, tf.float32)[..., None] * _NMS_CLASS_OFFSET
    keep, count = tf.image.non_max_suppression_padded(
        boxes + shift, scores, max_output_size=max_detections, iou_threshold=iou,
        pad_to_max_output_size=True)  # [B, N] indices into the (sorted) candidates, [B]
    live = tf.range(max_detections)[None, :] < count[:, None]  # [B, N]
    boxes = tf.gather(boxes, keep, batch_dims=1)
    scores = tf.where(live, tf.gather(scores, keep, batch_dims=1), 0.0)
    classes = tf.gather(classes, keep, batch_dims=1)
    return boxes, scores, classes


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
