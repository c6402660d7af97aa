"""The one box vocabulary of the toolkit and its single conversion function.

Every box-carrying name says its format (see docs/design.md):

- ``xywh_coco``: COCO json ``[x, y, width, height]`` in absolute pixels, (x, y) the
  top-left corner.
- ``yxyx_abs``: ``[ymin, xmin, ymax, xmax]`` in absolute pixels.
- ``yxyx_norm``: ``[ymin, xmin, ymax, xmax]`` divided by the image height / width
  (the TFRecord convention).

Boxes are arrays or tensors of shape ``[..., 4]``. ``convert`` works on NumPy arrays
(and lists) with NumPy and on ``tf.Tensor`` inputs with TensorFlow ops, so the same
function serves the COCO writer (no TensorFlow), the ``tf.data`` pipeline and decoding.
``image_hw`` is ``(height, width)`` of the image the boxes live in, needed only when one
side of the conversion is ``yxyx_norm``; it may be a tensor of shape ``[..., 2]``
broadcastable against the boxes' leading dimensions.
"""
from __future__ import annotations

import numpy as np

FORMATS = ("xywh_coco", "yxyx_abs", "yxyx_norm")


def _ops(boxes):
    """(module, boxes) for the array library ``boxes`` belongs to: numpy or tensorflow."""
    if type(boxes).__module__.startswith(("tensorflow", "keras")):
        import tensorflow as tf
        return tf, boxes
    arr = np.asarray(boxes)
    return np, arr.astype(np.float64) if arr.dtype.kind in "iub" else arr


def _split(boxes):
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def _hw(image_hw, ops, dtype):
    if image_hw is None:
        raise ValueError("image_hw=(height, width) is needed to convert to or from yxyx_norm")
    if ops is np:
        hw = np.asarray(image_hw, dtype=dtype)
    else:
        hw = ops.cast(image_hw, dtype)
    return hw[..., 0], hw[..., 1]


def _to_yxyx_abs(boxes, src: str, ops, image_hw):
    if src == "yxyx_abs":
        return boxes
    if src == "xywh_coco":
        x, y, w, h = _split(boxes)
        return ops.stack([y, x, y + h, x + w], axis=-1)
    ih, iw = _hw(image_hw, ops, boxes.dtype)
    y0, x0, y1, x1 = _split(boxes)
    return ops.stack([y0 * ih, x0 * iw, y1 * ih, x1 * iw], axis=-1)


def _from_yxyx_abs(boxes, dst: str, ops, image_hw):
    if dst == "yxyx_abs":
        return boxes
    y0, x0, y1, x1 = _split(boxes)
    if dst == "xywh_coco":
        return ops.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)
    ih, iw = _hw(image_hw, ops, boxes.dtype)
    return ops.stack([y0 / ih, x0 / iw, y1 / ih, x1 / iw], axis=-1)


def convert(boxes, src: str, dst: str, image_hw=None):
    """Convert ``boxes`` ``[..., 4]`` from format ``src`` to format ``dst``.

    Args:
      boxes: array-like or ``tf.Tensor`` ``[..., 4]`` (float; integer NumPy input is
        promoted to float64).
      src, dst: one of ``FORMATS``.
      image_hw: ``(height, width)`` (or ``[..., 2]``), needed when ``src`` or ``dst``
        is ``yxyx_norm``.

    Returns:
      Boxes of the same shape and array type in format ``dst``.
    """
    for name, fmt in (("src", src), ("dst", dst)):
        if fmt not in FORMATS:
            raise ValueError(f"{name}={fmt!r}: box format must be one of {', '.join(FORMATS)}")
    ops, boxes = _ops(boxes)
    if src == dst:
        return boxes
    return _from_yxyx_abs(_to_yxyx_abs(boxes, src, ops, image_hw), dst, ops, image_hw)


def clip_yxyx_abs(boxes_yxyx_abs, image_hw):
    """Clip ``[..., 4]`` yxyx boxes to ``[0, height] x [0, width]`` (NumPy or TF)."""
    ops, boxes = _ops(boxes_yxyx_abs)
    ih, iw = _hw(image_hw, ops, boxes.dtype)
    y0, x0, y1, x1 = _split(boxes)
    lo = 0.0
    if ops is np:
        return np.stack([np.clip(y0, lo, ih), np.clip(x0, lo, iw), np.clip(y1, lo, ih), np.clip(x1, lo, iw)], -1)
    return ops.stack([ops.clip_by_value(y0, lo, ih), ops.clip_by_value(x0, lo, iw),
                      ops.clip_by_value(y1, lo, ih), ops.clip_by_value(x1, lo, iw)], axis=-1)


def area_yxyx(boxes_yxyx):
    """Area ``[...]`` of ``[..., 4]`` yxyx boxes (in the boxes' own units); 0 for inverted boxes."""
    ops, boxes = _ops(boxes_yxyx)
    y0, x0, y1, x1 = _split(boxes)
    maximum = np.maximum if ops is np else ops.maximum
    return maximum(y1 - y0, 0.0) * maximum(x1 - x0, 0.0)
