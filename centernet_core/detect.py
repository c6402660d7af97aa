"""Model -> detections in original-image pixels, with optional flip and multi-scale testing.

Shared by evaluation (``evaluate.py``), the serving graph (``serving.py``, exported) and
prediction, so all three decode the same way. Graph-safe TensorFlow throughout.

Letters: B batch, S input size, H W output map (S / 4), C classes, N detections.

Flip test (as in the original CenterNet): run the image and its horizontal mirror in one
batch, mirror the second output back, average the heatmaps *after the sigmoid* and the
sizes; the offsets come from the un-mirrored image alone (a mirrored dx has the wrong
sign and sub-pixel phase). Multi-scale test: resize the (letterboxed) input by each
scale to the nearest multiple of the backbone divisor, decode each, map to input pixels,
and merge all scales with class-wise NMS (``decode.classwise_nms``, the same as decode's).
Scales are taken from the letterboxed input, so scales above 1 upsample it rather than
re-reading the original picture.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from centernet_core.decode import classwise_nms, decode, merge_flip, to_original

# IoU for merging scales when eval.nms_iou is 0 (its "no NMS" value means nothing for a
# merge that always needs one); the original CenterNet merges scales at 0.5 as well.
MERGE_IOU = 0.5


def head_maps(model, images, flip: bool = False):
    """Run ``model`` and return the last stack's (heatmap logits, size, offset), float32.

    Args:
      model: callable ``model(images, training=False)`` -> list of head dicts.
      images: [B, S, S, 3] normalised input.
      flip: run the image and its mirror as one batch of 2B and merge them with
        ``decode.merge_flip`` (heatmap returned as logits of the averaged probability).
    Returns: [B, H, W, C], [B, H, W, 2], [B, H, W, 2].
    """
    if not flip:
        out = model(images, training=False)[-1]
        return tuple(tf.cast(out[k], tf.float32) for k in ("heatmap", "size", "offset"))
    batch = tf.shape(images)[0]
    out = model(tf.concat([images, tf.reverse(images, axis=[2])], axis=0), training=False)[-1]
    merged = merge_flip({k: v[:batch] for k, v in out.items()}, {k: v[batch:] for k, v in out.items()})
    return merged["heatmap"], merged["size"], merged["offset"]


def scaled_size(input_size: int, scale: float, divisor: int) -> int:
    """The input side used at test scale ``scale``: S x scale to the nearest multiple of ``divisor``."""
    return max(divisor, int(round(input_size * scale / divisor)) * divisor)


def detect(model, images, scale, original_hw, *, divisor: int = 32, flip: bool = False,
           scales: Sequence[float] = (1.0,), max_detections: int = 100, score_threshold: float = 0.0,
           nms_iou: float = 0.0) -> dict:
    """Detections of ``model`` on a letterboxed batch, in original-image pixels.

    Args:
      images: [B, S, S, 3] normalised input (static S).
      scale: [B] input pixel = original pixel x scale; original_hw: [B, 2] (height, width).
      divisor: the backbone's input divisor (for scaled inputs).
      flip, scales: test-time augmentation (module docstring).
      max_detections, score_threshold, nms_iou: as in ``decode``; with several scales,
        the merge uses ``nms_iou`` or ``MERGE_IOU`` when it is 0.
    Returns: dict ``boxes_yxyx_abs`` [B, N, 4] (original pixels, clipped), ``scores`` [B, N],
      ``classes`` int32 [B, N] (training index), ``num_detections`` int32 [B].
    """
    input_size = int(images.shape[1])
    parts = []
    for s in scales:
        side = input_size if s == 1.0 else scaled_size(input_size, s, divisor)
        x = images if side == input_size else tf.image.resize(images, [side, side], method="bilinear")
        heat, size, offset = head_maps(model, x, flip)
        det = decode(heat, size, offset, max_detections=max_detections, score_threshold=score_threshold,
                     nms_iou=nms_iou if len(scales) == 1 else 0.0)
        det["boxes_yxyx_abs"] = det["boxes_yxyx_abs"] * (input_size / side)  # back to the S frame
        parts.append(det)
    if len(parts) == 1:
        det = parts[0]
    else:
        cat = lambda key: tf.concat([p[key] for p in parts], axis=1)  # noqa: E731
        det = classwise_nms(cat("boxes_yxyx_abs"), cat("scores"), cat("classes"), max_detections,
                            nms_iou or MERGE_IOU, score_threshold)
    det["boxes_yxyx_abs"] = to_original(det["boxes_yxyx_abs"], scale, original_hw)
    return det
