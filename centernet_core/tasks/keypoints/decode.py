"""Pure decoding of multi_pose maps: centre peaks -> boxes and regressed joints, snapped to
keypoint-heatmap peaks (the original's ``multi_pose_decode``); the flip test's merge.

Letters: B batch, H W output map, C classes, J keypoints per object, N detections,
M keypoint peaks per joint (= N, as the original's top-K per joint channel).

Snapping rule (the original's): for each detection and joint, the nearest peak of that
joint's heatmap (3x3 max-pool peaks, top-M, plus their sub-pixel offsets) replaces the
regressed joint when (a) the peak's score exceeds ``keypoint_threshold``, (b) it lies
inside the detection's box (edges included) and (c) it is no farther than 0.3 x the box's
longer side. Otherwise the regressed joint stays. Graph-only, static shapes, ops that
TFLite and ONNX convert.
"""
from __future__ import annotations

import tensorflow as tf

from centernet_core.tasks.detection import decode as det_decode

SNAP_DISTANCE = 0.3  # x the box's longer side (the original's)
_FAR = 1e6  # distance given to peaks below the threshold


def _gather_cells(maps, pixel):
    """``maps`` ``[B, H, W, D]`` at flat cells ``pixel`` ``[B, N]`` -> ``[B, N, D]`` float32."""
    b = tf.shape(maps)[0]
    d = maps.shape[-1] if maps.shape[-1] is not None else tf.shape(maps)[3]
    return tf.gather(tf.reshape(tf.cast(maps, tf.float32), [b, -1, d]), pixel, batch_dims=1)


def keypoint_peaks(keypoint_heatmap_logits, keypoint_offset, num_peaks: int):
    """Top ``num_peaks`` 3x3 peaks of each joint channel.

    Returns (scores ``[B, J, M]``, positions ``[B, J, M, 2]`` (y, x) output units with
    their sub-pixel offsets).
    """
    heat = det_decode._peaks(tf.sigmoid(tf.cast(keypoint_heatmap_logits, tf.float32)))  # [B, H, W, J]
    shape = tf.shape(heat)
    b, w, j = shape[0], shape[2], shape[3]
    per_joint = tf.reshape(tf.transpose(heat, [0, 3, 1, 2]), [b * j, -1])  # [B * J, H * W]
    scores, index = det_decode._top_k(per_joint, num_peaks)  # [B * J, M]
    index = tf.reshape(index, [b, -1])  # [B, J * M]
    off = _gather_cells(keypoint_offset, index)  # [B, J * M, 2]
    y = tf.cast(index // w, tf.float32) + off[..., 0]
    x = tf.cast(index % w, tf.float32) + off[..., 1]
    positions = tf.reshape(tf.stack([y, x], axis=-1), [b, j, num_peaks, 2])
    return tf.reshape(scores, [b, j, num_peaks]), positions


def snap(joints_yx, boxes_yxyx, peak_scores, peak_yx, threshold: float):
    """The snapping rule (module docstring), all in output-map units.

    Args:
      joints_yx: ``[B, N, J, 2]`` regressed joints; boxes_yxyx: ``[B, N, 4]``.
      peak_scores: ``[B, J, M]``; peak_yx: ``[B, J, M, 2]``.
      threshold: peaks scoring <= this are ignored.
    Returns: (joints ``[B, N, J, 2]``, snapped bool ``[B, N, J]``, chosen peak scores ``[B, N, J]``).
    """
    live = peak_scores > threshold  # [B, J, M]
    diff = tf.expand_dims(joints_yx, 3) - tf.expand_dims(peak_yx, 1)  # [B, N, J, M, 2]
    dist = tf.sqrt(tf.reduce_sum(diff * diff, axis=-1))  # [B, N, J, M]
    dist = tf.where(tf.expand_dims(live, 1), dist, _FAR)
    nearest = tf.argmin(dist, axis=-1, output_type=tf.int32)  # [B, N, J]
    min_dist = tf.reduce_min(dist, axis=-1)  # [B, N, J]
    n = tf.shape(joints_yx)[1]
    scores = tf.tile(tf.expand_dims(peak_scores, 1), [1, n, 1, 1])  # [B, N, J, M]
    chosen_score = tf.gather(scores, nearest, batch_dims=3)  # [B, N, J]
    chosen = tf.gather(tf.tile(tf.expand_dims(peak_yx, 1), [1, n, 1, 1, 1]), nearest, batch_dims=3)  # [B, N, J, 2]
    y0, x0, y1, x1 = [t[..., None] for t in tf.unstack(boxes_yxyx, 4, axis=-1)]  # [B, N, 1] each
    cy, cx = chosen[..., 0], chosen[..., 1]
    in_box = (cy >= y0) & (cy <= y1) & (cx >= x0) & (cx <= x1)
    reach = SNAP_DISTANCE * tf.maximum(y1 - y0, x1 - x0)  # [B, N, 1]
    snapped = in_box & (chosen_score > threshold) & (min_dist <= reach)
    return tf.where(tf.expand_dims(snapped, -1), chosen, joints_yx), snapped, chosen_score


def decode(maps: dict, max_detections: int = 100, score_threshold: float = 0.0,
           keypoint_threshold: float = 0.1, stride: int = 4) -> dict:
    """Detections with keypoints from one stack's maps (un-suppressed; see ``nms``).

    Args:
      maps: ``heatmap`` ``[B, H, W, C]``, ``size``/``offset`` ``[B, H, W, 2]``, ``joints``
        ``[B, H, W, 2J]``, ``keypoint_heatmap`` ``[B, H, W, J]`` (logits),
        ``keypoint_offset`` ``[B, H, W, 2]``.
      max_detections: N (also M, the peaks per joint).
      score_threshold: detections scoring <= this become zero rows.
      keypoint_threshold: the snapping rule's peak threshold.
    Returns: detection's ``decode`` dict (input pixels) plus ``keypoints_yx_abs`` float32
      ``[B, N, J, 2]`` (input pixels) and ``keypoint_scores`` ``[B, N, J]`` (the snapped
      peak's score, else the keypoint heatmap's probability at the regressed joint).
    """
    heat = det_decode._peaks(tf.sigmoid(tf.cast(maps["heatmap"], tf.float32)))  # [B, H, W, C]
    shape = tf.shape(heat)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    scores, index = det_decode._top_k(tf.reshape(heat, [b, -1]), max_detections)  # [B, N]
    classes = index % c
    pixel = index // c  # y * W + x
    ys, xs = tf.cast(pixel // w, tf.float32), tf.cast(pixel % w, tf.float32)  # [B, N]
    hw = _gather_cells(maps["size"], pixel)  # [B, N, 2]
    dyx = _gather_cells(maps["offset"], pixel)
    cy, cx = ys + dyx[..., 0], xs + dyx[..., 1]
    boxes = tf.stack([cy - hw[..., 0] / 2, cx - hw[..., 1] / 2, cy + hw[..., 0] / 2, cx + hw[..., 1] / 2], -1)
    joints = _gather_cells(maps["joints"], pixel)  # [B, N, 2J]
    joints = tf.reshape(joints, [b, max_detections, -1, 2]) + tf.expand_dims(tf.stack([ys, xs], -1), 2)
    peak_scores, peak_yx = keypoint_peaks(maps["keypoint_heatmap"], maps["keypoint_offset"], max_detections)
    joints, snapped, chosen_score = snap(joints, boxes, peak_scores, peak_yx, keypoint_threshold)
    # Probability at each regressed joint's cell (clipped into the map) for unsnapped joints.
    cell_y = tf.clip_by_value(tf.cast(tf.floor(joints[..., 0]), tf.int32), 0, h - 1)
    cell_x = tf.clip_by_value(tf.cast(tf.floor(joints[..., 1]), tf.int32), 0, w - 1)
    kp_prob = tf.sigmoid(tf.cast(maps["keypoint_heatmap"], tf.float32))  # [B, H, W, J]
    j = tf.shape(joints)[2]
    cells = tf.reshape(cell_y * w + cell_x, [b, -1])  # [B, N * J]
    flat_prob = tf.reshape(kp_prob, [b, -1])  # [B, H * W * J]
    joint_id = tf.tile(tf.range(j)[None, None], [b, max_detections, 1])
    at = tf.gather(flat_prob, cells * j + tf.reshape(joint_id, [b, -1]), batch_dims=1)
    kp_scores = tf.where(snapped, chosen_score, tf.reshape(at, tf.shape(snapped)))
    return keep_above(boxes * float(stride), scores, classes, joints * float(stride), kp_scores, score_threshold)


def keep_above(boxes, scores, classes, keypoints, keypoint_scores, score_threshold: float) -> dict:
    """Detection's ``_keep_above`` with the keypoints: rows scoring <= threshold become zero."""
    out = det_decode._keep_above(boxes, scores, classes, score_threshold)
    valid = scores > score_threshold
    out["keypoints_yx_abs"] = tf.where(tf.expand_dims(tf.expand_dims(valid, -1), -1), keypoints, 0.0)
    out["keypoint_scores"] = tf.where(valid[..., None], keypoint_scores, 0.0)
    return out


def nms(det: dict, max_detections: int, iou: float, score_threshold: float = 0.0) -> dict:
    """Class-wise NMS of ``decode``-like rows (any count M) keeping their keypoints; N rows out.

    Classes are separated by shifting boxes (as ``detection.decode.classwise_nms``).
    """
    boxes, scores = det["boxes_yxyx_abs"], det["scores"]
    classes = tf.cast(det["classes"], tf.int32)
    low = tf.reduce_min(boxes, axis=[1, 2], keepdims=True)
    span = tf.reduce_max(boxes, axis=[1, 2], keepdims=True) - low + 1.0
    shifted = boxes - low + tf.cast(classes, tf.float32)[..., None] * span
    keep, count = tf.image.non_max_suppression_padded(shifted, scores, max_output_size=max_detections,
                                                      iou_threshold=iou, pad_to_max_output_size=True)
    live = tf.range(max_detections)[None, :] < count[:, None]

    def take(t):
        return tf.gather(t, keep, batch_dims=1)
    return keep_above(take(boxes), tf.where(live, take(scores), 0.0), take(classes), take(det["keypoints_yx_abs"]),
                      take(det["keypoint_scores"]), score_threshold)


def merge_flip(maps: dict, maps_flipped: dict, flip_index) -> dict:
    """Flip test (the original's): average the image's and its mirror's maps.

    Heatmap, size and offset as detection's ``merge_flip``. Keypoint heatmaps are averaged
    as probabilities, the mirror's channels permuted by ``flip_index`` (joint j of the image
    is joint ``flip_index[j]`` of the mirror). Joint offsets are mirrored back: the mirror's
    (dy, dx) of joint ``flip_index[j]`` at mirrored cell W-1-x is (dy, 1 - dx) at cell x
    (the input flips x -> S - x, so a centre cell x maps to W-1-x and a joint at x' to
    W - x'). Keypoint offsets come from the un-mirrored image. Shapes as ``decode``'s.
    """
    flip_index = tf.constant(list(flip_index), tf.int32)
    merged = det_decode.merge_flip(maps, maps_flipped)

    def unflip(t):
        return tf.reverse(tf.cast(t, tf.float32), axis=[2])
    shape = tf.shape(maps["joints"])
    mirror = tf.reshape(unflip(maps_flipped["joints"]), tf.concat([shape[:3], [-1, 2]], 0))  # [B, H, W, J, 2]
    mirror = tf.gather(mirror, flip_index, axis=3)
    mirror = tf.stack([mirror[..., 0], 1.0 - mirror[..., 1]], axis=-1)
    joints = 0.5 * (tf.cast(maps["joints"], tf.float32) + tf.reshape(mirror, shape))
    prob = 0.5 * (tf.sigmoid(tf.cast(maps["keypoint_heatmap"], tf.float32))
                  + tf.gather(tf.sigmoid(unflip(maps_flipped["keypoint_heatmap"])), flip_index, axis=3))
    prob = tf.clip_by_value(prob, 1e-7, 1.0 - 1e-7)
    merged.update(joints=joints, keypoint_heatmap=tf.math.log(prob) - tf.math.log1p(-prob),
                  keypoint_offset=tf.cast(maps["keypoint_offset"], tf.float32))
    return merged


def to_original(keypoints_yx_abs, scale, original_hw):
    """Keypoints ``[B, N, J, 2]`` from input pixels to the original image, clipped to it."""
    kp = tf.cast(keypoints_yx_abs, tf.float32) / tf.reshape(tf.cast(scale, tf.float32), [-1, 1, 1, 1])
    return tf.clip_by_value(kp, 0.0, tf.reshape(tf.cast(original_hw, tf.float32), [-1, 1, 1, 2]))
