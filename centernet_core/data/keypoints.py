"""Keypoints in the input pipeline (the keypoints task): parse, map like the boxes, flip.

Records of a keypoint dataset hold ``image/object/keypoint/{y,x,v}``: J rows per object,
flattened object-major, y and x normalised like the boxes, v COCO's visibility
(``coco_example``). Letters: B batch, N objects in the record, K ``data.max_objects``,
J keypoints per object, S input size.

The pipeline chooses the same K objects for the keypoints as for the boxes (its
``select_objects``, keyed by box area) and maps them with the same crop/resize affine and
horizontal flip. A flip also swaps left and right joints: joint j of the flipped image is
joint ``flip_index[j]`` of the original (``model.keypoint_flip``, from the names).
"""
from __future__ import annotations

import tensorflow as tf

FEATURES = {f"image/object/keypoint/{k}": tf.io.RaggedFeature(t)
            for k, t in (("y", tf.float32), ("x", tf.float32), ("v", tf.int64))}


def parse(serialized, num_keypoints: int, original_hw, num_objects):
    """Keypoints of a batch of records in original pixels.

    Args:
      serialized: string ``[B]`` records; num_keypoints: J; original_hw: ``[B, 2]``;
      num_objects: N, the object lists' padded length (records lacking keypoints get v = 0).
    Returns: float32 ``[B, N, J, 3]`` (y, x, v).
    """
    ex = tf.io.parse_example(serialized, FEATURES)
    batch = tf.shape(serialized)[0]

    def dense(key):
        values = tf.cast(ex[f"image/object/keypoint/{key}"], tf.float32).to_tensor()  # [B, <= N * J]
        length = num_objects * num_keypoints
        values = tf.pad(values, [[0, 0], [0, tf.maximum(length - tf.shape(values)[1], 0)]])[:, :length]
        return tf.reshape(values, [batch, num_objects, num_keypoints])
    hw = tf.cast(original_hw, tf.float32)
    return tf.stack([dense("y") * hw[:, 0, None, None], dense("x") * hw[:, 1, None, None], dense("v")], axis=-1)


def to_input(keypoints_yxv, affine, flip, size: int, flip_index):
    """Original-pixel keypoints ``[B, K, J, 3]`` -> input pixels: the boxes' affine
    (``augment.transform_boxes``: y * sy + ty, x * sx + tx), then, where ``flip`` ``[B]``,
    x -> S - x with the joints permuted by ``flip_index``. v is kept (the targets mask
    joints that leave the map)."""
    a = tf.cast(affine, tf.float32)[:, None, None, :]  # [B, 1, 1, 4] (sy, sx, ty, tx)
    y, x, v = tf.unstack(tf.cast(keypoints_yxv, tf.float32), 3, axis=-1)
    mapped = tf.stack([y * a[..., 0] + a[..., 2], x * a[..., 1] + a[..., 3], v], axis=-1)
    mirrored = tf.gather(mapped, list(flip_index), axis=2)
    mirrored = tf.stack([mirrored[..., 0], float(size) - mirrored[..., 1], mirrored[..., 2]], axis=-1)
    return tf.where(tf.reshape(flip, [-1, 1, 1, 1]), mirrored, mapped)
