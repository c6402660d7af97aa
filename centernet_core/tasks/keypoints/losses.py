"""The multi_pose loss: detection's terms plus joints, keypoint heatmaps and keypoint offsets.

Letters: B batch, H W output map, K objects, J keypoints per object.

Normalisers (the original's): the detection terms are detection's (``num_objects``); the
keypoint heatmap's focal loss is divided by the global count of trained joints (its
positives), the joint and keypoint-offset L1 by twice that count (the original's
``RegWeightedL1Loss`` / ``RegL1Loss`` divide by the mask summed over both coordinates).
Counts are summed over replicas, so summing per-replica losses gives the global loss.
"""
from __future__ import annotations

import tensorflow as tf

from centernet_core.tasks.detection import losses as det_losses


def joint_l1(joint_maps, joints, indices, joint_mask):
    """Summed L1 of the regressed joints at the object centres over trained joints.

    Args:
      joint_maps: ``[B, H, W, 2J]`` predictions, (dy, dx) per joint.
      joints: ``[B, K, J, 2]`` targets; indices int32 ``[B, K]``; joint_mask ``[B, K, J]``.
    Returns: float32 scalar.
    """
    pred = det_losses.gather_at(joint_maps, indices)  # [B, K, 2J]
    pred = tf.reshape(pred, tf.shape(joints))  # [B, K, J, 2]
    diff = tf.abs(pred - tf.cast(joints, tf.float32))
    return tf.reduce_sum(diff * tf.cast(joint_mask, tf.float32)[..., None])


def multi_pose_loss(outputs, targets, num_objects, focal_alpha: float = 2.0, focal_beta: float = 4.0,
                    size_weight: float = 0.1, offset_weight: float = 1.0, joint_weight: float = 1.0,
                    keypoint_heatmap_weight: float = 1.0, keypoint_offset_weight: float = 1.0) -> dict:
    """The training loss of a (per-replica) batch.

    Args:
      outputs: list of per-stack dicts with ``heatmap``, ``size``, ``offset``, ``joints``
        ``[B, H, W, 2J]``, ``keypoint_heatmap`` ``[B, H, W, J]``, ``keypoint_offset``
        ``[B, H, W, 2]``.
      targets: ``tasks.keypoints.targets.encode``'s dict.
      num_objects: the global object count (detection's normaliser).
    Returns:
      float32 scalars ``total``, ``heatmap``, ``size``, ``offset``, ``joints``,
      ``keypoint_heatmap``, ``keypoint_offset`` (the parts unweighted).
    """
    if isinstance(outputs, dict):
        outputs = [outputs]
    out = det_losses.centernet_loss(outputs, targets, num_objects, focal_alpha, focal_beta, size_weight,
                                    offset_weight)
    n_joints = det_losses.global_num_objects(targets["joint_mask"])  # >= 1, all replicas
    terms = {"joints": 0.0, "keypoint_heatmap": 0.0, "keypoint_offset": 0.0}
    for stack in outputs:
        terms["joints"] += joint_l1(stack["joints"], targets["joints"], targets["indices"], targets["joint_mask"])
        terms["keypoint_heatmap"] += det_losses.focal_loss(stack["keypoint_heatmap"], targets["keypoint_heatmap"],
                                                           focal_alpha, focal_beta)
        terms["keypoint_offset"] += det_losses.l1_at_indices(stack["keypoint_offset"], targets["keypoint_offset"],
                                                             targets["keypoint_indices"], targets["keypoint_mask"])
    stacks = float(len(outputs))
    out["joints"] = terms["joints"] / (2.0 * n_joints * stacks)
    out["keypoint_heatmap"] = terms["keypoint_heatmap"] / (n_joints * stacks)
    out["keypoint_offset"] = terms["keypoint_offset"] / (2.0 * n_joints * stacks)
    out["total"] = (out["total"] + joint_weight * out["joints"] + keypoint_heatmap_weight * out["keypoint_heatmap"]
                    + keypoint_offset_weight * out["keypoint_offset"])
    return out
