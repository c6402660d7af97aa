"""Pure, graph-safe encoding of objects with keypoints into CenterNet's multi_pose targets.

Letters: B batch, K objects (``data.max_objects``, padded), J keypoints per object, H W
output map size (input / stride), C classes.

``encode`` adds to the detection targets (``tasks.detection.targets``: ``heatmap``,
``size``, ``offset``, ``indices``, ``mask``):

- ``joints`` float32 ``[B, K, J, 2]``: (dy, dx) of each joint from its object's centre
  cell (the integer cell, as the original's ``kps = pts - ct_int``), output-map units.
- ``joint_mask`` float32 ``[B, K, J]``: 1 where the joint trains: the object trains, the
  joint is labelled (v > 0) and lies inside the output map.
- ``keypoint_heatmap`` float32 ``[B, H, W, J]``: a CornerNet gaussian per trained joint
  at its floor cell, radius that of its object's box, max over objects.
- ``keypoint_offset`` float32 ``[B, K * J, 2]``: joint minus its floor cell;
  ``keypoint_indices`` int32 ``[B, K * J]`` (``y * W + x`` of that cell, 0 where masked);
  ``keypoint_mask`` float32 ``[B, K * J]`` (``joint_mask`` flattened).

As in the original, an object without a single labelled joint (v = 0 everywhere) keeps a
centre peak of 0.9999 in ``heatmap`` (not a focal-loss positive, not a negative either)
and trains no size, offset or joints (``mask`` 0).
"""
from __future__ import annotations

import tensorflow as tf

from centernet_core.tasks.detection import targets as det_targets

NO_KEYPOINT_PEAK = 0.9999  # the original's centre value for objects without labelled joints


def encode(boxes_yxyx_abs, classes, weights, keypoints_yxv, num_classes: int, output_hw: tuple[int, int],
           stride: int = 4, min_overlap: float = 0.7) -> dict:
    """multi_pose targets of a batch.

    Args:
      boxes_yxyx_abs: float ``[B, K, 4]`` input pixels; classes int ``[B, K]``; weights bool
        or float ``[B, K]`` (0: padding, crowd), as ``detection.targets.encode``.
      keypoints_yxv: float ``[B, K, J, 3]``: (y, x) input pixels and the visibility flag v
        (0 unlabelled, 1 labelled but hidden, 2 visible; COCO's).
      num_classes: C; output_hw: (H, W); stride; min_overlap: the CornerNet radius parameter.

    Returns:
      the dict of the module docstring.
    """
    kp = tf.cast(keypoints_yxv, tf.float32)  # [B, K, J, 3]
    labelled = kp[..., 2] > 0  # [B, K, J]
    has_joints = tf.reduce_any(labelled, axis=-1)  # [B, K]
    real = tf.cast(weights, tf.float32) > 0
    det = det_targets.encode(boxes_yxyx_abs, classes, real & has_joints, num_classes, output_hw, stride,
                             min_overlap)
    bare = det_targets.encode(boxes_yxyx_abs, classes, real & ~has_joints, num_classes, output_hw, stride,
                              min_overlap)
    det["heatmap"] = tf.maximum(det["heatmap"], NO_KEYPOINT_PEAK * bare["heatmap"])

    out_h, out_w = int(output_hw[0]), int(output_hw[1])
    boxes = tf.cast(boxes_yxyx_abs, tf.float32) / float(stride)  # [B, K, 4] output units
    y0, x0, y1, x1 = tf.unstack(boxes, 4, axis=-1)
    centre_y = tf.clip_by_value(tf.floor((y0 + y1) / 2.0), 0.0, out_h - 1.0)  # the detection targets' cell
    centre_x = tf.clip_by_value(tf.floor((x0 + x1) / 2.0), 0.0, out_w - 1.0)
    jy, jx = kp[..., 0] / float(stride), kp[..., 1] / float(stride)  # [B, K, J]
    inside = (jy >= 0.0) & (jy < out_h) & (jx >= 0.0) & (jx < out_w)
    trains = (det["mask"] > 0)[..., None] & labelled & inside  # [B, K, J]
    fmask = tf.cast(trains, tf.float32)
    joints = tf.stack([jy - centre_y[..., None], jx - centre_x[..., None]], axis=-1) * fmask[..., None]

    # Keypoint heatmap: one gaussian per trained joint, radius of its object's box.
    h, w = y1 - y0, x1 - x0
    radius = tf.floor(tf.maximum(det_targets.gaussian_radius(tf.math.ceil(h), tf.math.ceil(w), min_overlap), 0.0))
    num_joints = tf.shape(kp)[2]
    radius = tf.broadcast_to(radius[..., None], tf.shape(jy))  # [B, K, J]
    iy, ix = tf.floor(jy), tf.floor(jx)
    rows = tf.where(trains)  # [k, 3] (image, object, joint)
    r = tf.gather_nd(radius, rows)
    sigma = (2.0 * r + 1.0) / 6.0
    gy = det_targets._gaussian_1d(tf.gather_nd(iy, rows), r, sigma, out_h)  # [k, H]
    gx = det_targets._gaussian_1d(tf.gather_nd(ix, rows), r, sigma, out_w)  # [k, W]
    blobs = gy[:, :, None] * gx[:, None, :]  # [k, H, W]
    segment = tf.cast(rows[:, 0], tf.int32) * num_joints + tf.cast(rows[:, 2], tf.int32)  # image * J + joint
    batch = tf.shape(kp)[0]
    per_joint = tf.math.unsorted_segment_max(blobs, segment, batch * num_joints)  # [B * J, H, W]
    per_joint = tf.reshape(tf.maximum(per_joint, 0.0), [batch, num_joints, out_h, out_w])
    keypoint_heatmap = tf.transpose(per_joint, [0, 2, 3, 1])  # [B, H, W, J]

    flat = [batch, -1]
    kp_offset = tf.stack([jy - iy, jx - ix], axis=-1) * fmask[..., None]  # [B, K, J, 2]
    kp_index = tf.where(trains, tf.cast(iy, tf.int32) * out_w + tf.cast(ix, tf.int32), 0)  # [B, K, J]
    det.update(joints=joints, joint_mask=fmask, keypoint_heatmap=keypoint_heatmap,
               keypoint_offset=tf.reshape(kp_offset, [batch, -1, 2]), keypoint_indices=tf.reshape(kp_index, flat),
               keypoint_mask=tf.reshape(fmask, flat))
    return det
