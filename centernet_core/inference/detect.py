"""Model -> detections in original-image pixels, with optional flip and multi-scale testing.

Shared by evaluation (``evaluate.py``), the serving graph (``serving.py``, exported) and
prediction, so all three decode the same way. Graph-safe TensorFlow throughout.

Letters: B batch, S input size, H W output map (S / 4), C classes, N detections.

Flip test (as in the original CenterNet): run the image and its horizontal mirror in one
batch, mirror the second output back, average the heatmaps *after the sigmoid* and the
sizes; the offsets come from the un-mirrored image alone (a mirrored dx has the wrong
sign and sub-pixel phase). Multi-scale test: resize the (letterboxed) input by each
scale to the nearest multiple of the backbone divisor, decode each, map to input pixels,
and merge all scales with the task's merge (detection: ``eval.merge``, Gaussian soft-NMS
as the original, ``decode.classwise_soft_nms``, or hard class-wise NMS).

Here the scales are taken from the letterboxed input (``eval.protocol: letterbox``), so
scales above 1 upsample it rather than re-reading the original picture: a fixed-shape
graph, which is what exports need. The original resizes the original picture per scale,
at its own size: ``eval.protocol: original`` (``original_protocol``) does that.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from centernet_core.tasks import Task


def head_maps(model, task: Task, images, flip: bool = False) -> dict:
    """Run ``model`` and return the last stack's raw maps (dict of float32 tensors).

    Args:
      model: callable ``model(images, training=False)`` -> list of head dicts.
      task: the model's task (its ``merge_flip``).
      images: [B, S, S, 3] normalised input.
      flip: run the image and its mirror as one batch of 2B and merge them with
        ``task.merge_flip``.
    Returns: e.g. detection's ``{"heatmap": [B, H, W, C], "size": [B, H, W, 2], "offset": [B, H, W, 2]}``.
    """
    if not flip:
        out = model(images, training=False)[-1]
        return {k: tf.cast(v, tf.float32) for k, v in out.items()}
    batch = tf.shape(images)[0]
    out = model(tf.concat([images, tf.reverse(images, axis=[2])], axis=0), training=False)[-1]
    return task.merge_flip({k: v[:batch] for k, v in out.items()}, {k: v[batch:] for k, v in out.items()})


def scaled_size(input_size: int, scale: float, divisor: int) -> int:
    """The input side used at test scale ``scale``: S x scale to the nearest multiple of ``divisor``."""
    return max(divisor, int(round(input_size * scale / divisor)) * divisor)


def detect(model, task: Task, images, scale, original_hw, *, divisor: int = 32, flip: bool = False,
           scales: Sequence[float] = (1.0,), max_detections: int = 100, score_threshold: float = 0.0,
           nms_iou: float = 0.0) -> dict:
    """Detections of ``model`` on a letterboxed batch, in original-image pixels.

    Args:
      task: the model's task (decoder, flip and scale merging, mapping to the original).
      images: [B, S, S, 3] normalised input (static S).
      scale: [B] input pixel = original pixel x scale; original_hw: [B, 2] (height, width).
      divisor: the backbone's input divisor (for scaled inputs).
      flip, scales: test-time augmentation (module docstring).
      max_detections, score_threshold, nms_iou: as in the task's ``decode``; with several
        scales, the merge uses ``nms_iou`` (the task's merge IoU when it is 0).
    Returns: the task's detections; for detection ``boxes_yxyx_abs`` [B, N, 4] (original
      pixels, clipped), ``scores`` [B, N], ``classes`` int32 [B, N] (training index),
      ``num_detections`` int32 [B].
    """
    input_size = int(images.shape[1])
    parts = []
    for s in scales:
        side = input_size if s == 1.0 else scaled_size(input_size, s, divisor)
        x = images if side == input_size else tf.image.resize(images, [side, side], method="bilinear")
        maps = head_maps(model, task, x, flip)
        det = task.decode(maps, max_detections=max_detections, score_threshold=score_threshold,
                          nms_iou=nms_iou if len(scales) == 1 else 0.0)
        parts.append(task.rescale(det, input_size / side))  # back to the S frame
    det = parts[0] if len(parts) == 1 else task.merge_scales(parts, max_detections, nms_iou, score_threshold)
    return task.to_original(det, scale, original_hw)
