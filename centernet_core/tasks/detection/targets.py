"""Pure, graph-safe encoding of boxes into CenterNet training targets.

Letters: B batch, K objects (``data.max_objects``, padded), H W output map size
(input / stride), C classes.

``encode`` turns one image's boxes (in input pixels, after augmentation and resizing), or
a batch of them, into the maps the losses read (docs/design.md, "Pipeline output"):

- ``heatmap`` float32 ``[H, W, C]``: a CornerNet gaussian per object at the floor of its
  centre, combined with max over objects of the same class; exactly 1.0 at each centre.
- ``size`` float32 ``[K, 2]``: (h, w) of each box in output-map units.
- ``offset`` float32 ``[K, 2]``: (dy, dx) = centre minus its floor, in [0, 1).
- ``indices`` int32 ``[K]``: ``y * W + x`` of each centre cell; 0 on rows that do not
  train (padding, crowd, empty boxes), so a gather never goes out of range.
- ``mask`` float32 ``[K]``: 1 for rows that train, 0 otherwise.

The heatmap is built for all objects (of all images in a batch) at once: separable 1-D
gaussians ``[k, H]`` and ``[k, W]`` make ``[k, H, W]`` for the k rows that train, and
``tf.math.unsorted_segment_max`` keyed by (image, class) reduces them to ``[B, C, H, W]``;
no Python loop over objects or images, so a batch costs a handful of ops.
"""
from __future__ import annotations

import tensorflow as tf


def gaussian_radius(height, width, min_overlap: float = 0.7):
    """CornerNet gaussian radius, keeping the reference quirk.

    The radius is the smallest of the three roots of the quadratics that bound how far a
    corner may move while the box keeps IoU >= ``min_overlap`` with the original.
    Reference quirk (CornerNet, kept by the original CenterNet and by Model Garden):
    roots two and three are divided by 2 where the quadratic formula divides by 2a
    (a = 4 and a = 4 * min_overlap). We keep it, because pretrained weights and the
    published AP were produced with it; a user reported lower AP with the corrected
    formula. tests/test_targets.py pins the value for a 10x10 box (2.7332; 0.976 corrected).

    Args:
      height, width: float ``[...]`` box sides in output-map units.
      min_overlap: the IoU the three corner moves must preserve.

    Returns:
      float32 ``[...]`` radius before flooring.
    """
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    b1 = h + w
    c1 = w * h * (1.0 - min_overlap) / (1.0 + min_overlap)
    r1 = (b1 + tf.sqrt(b1 * b1 - 4.0 * c1)) / 2.0
    a2, b2, c2 = 4.0, 2.0 * (h + w), (1.0 - min_overlap) * w * h
    r2 = (b2 + tf.sqrt(b2 * b2 - 4.0 * a2 * c2)) / 2.0  # quirk: / 2, not / (2 * a2)
    a3, b3, c3 = 4.0 * min_overlap, -2.0 * min_overlap * (h + w), (min_overlap - 1.0) * w * h
    r3 = (b3 + tf.sqrt(b3 * b3 - 4.0 * a3 * c3)) / 2.0  # quirk: / 2, not / (2 * a3)
    return tf.minimum(tf.minimum(r1, r2), r3)


def _gaussian_1d(centres, radius, sigma, length: int):
    """Truncated 1-D gaussians ``[..., length]`` around integer ``centres`` ``[...]``."""
    grid = tf.range(length, dtype=tf.float32)
    d = grid - centres[..., None]  # [..., L]
    g = tf.exp(-(d * d) / (2.0 * sigma[..., None] * sigma[..., None]))
    return tf.where(tf.abs(d) <= radius[..., None], g, 0.0)


def encode(boxes_yxyx_abs, classes, weights, num_classes: int, output_hw: tuple[int, int],
           stride: int = 4, min_overlap: float = 0.7) -> dict:
    """CenterNet targets for one image, or for a batch at once.

    Args:
      boxes_yxyx_abs: float ``[K, 4]`` (or ``[B, K, 4]``) boxes in input pixels (already
        clipped to the input).
      classes: int ``[K]`` (``[B, K]``) contiguous class index in ``[0, C)``.
      weights: float or bool ``[K]`` (``[B, K]``); rows with 0 (padding, crowd) produce no
        target. Rows with an empty box or a class outside ``[0, C)`` produce none either.
      num_classes: C.
      output_hw: (H, W) of the output map; the input is ``(H * stride, W * stride)``.
      stride: input pixels per output cell.
      min_overlap: CornerNet radius parameter (``data.min_overlap``).

    Returns:
      dict ``heatmap`` ``[H, W, C]``, ``size`` ``[K, 2]``, ``offset`` ``[K, 2]``,
      ``indices`` int32 ``[K]``, ``mask`` ``[K]`` (see the module docstring), each with a
      leading ``[B]`` for batched inputs.
    """
    boxes = tf.convert_to_tensor(boxes_yxyx_abs)
    if boxes.shape.rank == 2:
        one = encode(boxes[None], tf.convert_to_tensor(classes)[None], tf.convert_to_tensor(weights)[None],
                     num_classes, output_hw, stride, min_overlap)
        return {k: v[0] for k, v in one.items()}
    out_h, out_w = int(output_hw[0]), int(output_hw[1])
    boxes = tf.cast(boxes, tf.float32) / float(stride)  # [B, K, 4] in output units
    classes = tf.cast(classes, tf.int32)  # [B, K]
    y0, x0, y1, x1 = tf.unstack(boxes, 4, axis=-1)
    h, w = y1 - y0, x1 - x0
    valid = ((tf.cast(weights, tf.float32) > 0) & (h > 0) & (w > 0)
             & (classes >= 0) & (classes < num_classes))  # [B, K]
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    iy = tf.clip_by_value(tf.floor(cy), 0.0, out_h - 1.0)
    ix = tf.clip_by_value(tf.floor(cx), 0.0, out_w - 1.0)

    # The original rounds the box up to whole cells before the radius: ceil(h), ceil(w).
    radius = tf.floor(tf.maximum(gaussian_radius(tf.math.ceil(h), tf.math.ceil(w), min_overlap), 0.0))
    sigma = (2.0 * radius + 1.0) / 6.0
    # Only rows that train get a full map: k of the B * K rows (a few per image, typically).
    rows = tf.where(valid)  # [k, 2] (image, row)
    gy = _gaussian_1d(tf.gather_nd(iy, rows), tf.gather_nd(radius, rows), tf.gather_nd(sigma, rows), out_h)  # [k, H]
    gx = _gaussian_1d(tf.gather_nd(ix, rows), tf.gather_nd(radius, rows), tf.gather_nd(sigma, rows), out_w)  # [k, W]
    blobs = gy[:, :, None] * gx[:, None, :]  # [k, H, W]
    segment = tf.cast(rows[:, 0], tf.int32) * num_classes + tf.gather_nd(classes, rows)  # [k] image * C + class
    batch = tf.shape(boxes)[0]
    per_class = tf.math.unsorted_segment_max(blobs, segment, batch * num_classes)  # [B * C, H, W]
    per_class = tf.reshape(tf.maximum(per_class, 0.0), [batch, num_classes, out_h, out_w])  # empty: -inf -> 0
    heatmap = tf.transpose(per_class, [0, 2, 3, 1])  # [B, H, W, C]

    fvalid = tf.cast(valid, tf.float32)
    size = tf.stack([h, w], axis=-1) * fvalid[..., None]  # [B, K, 2]
    offset = tf.stack([cy - iy, cx - ix], axis=-1) * fvalid[..., None]  # [B, K, 2]
    indices = tf.where(valid, tf.cast(iy, tf.int32) * out_w + tf.cast(ix, tf.int32), 0)  # [B, K]
    return {"heatmap": heatmap, "size": size, "offset": offset, "indices": indices, "mask": fvalid}
