"""CenterNet losses as pure functions of (outputs, targets, num_objects).

Letters: B batch, H W output map, C classes, K ``max_objects``.

Every term is a *sum* over the given (per-replica) batch divided by ``num_objects``, the
object count of the *global* batch (at least 1), then averaged over stacks. Summing the
per-replica values therefore gives the single-device loss whatever the replica count.
All arithmetic is float32, whatever the precision policy of the model outputs.
"""
from __future__ import annotations

import tensorflow as tf

PROB_CLIP = 1e-4  # sigmoid probabilities are clipped to [1e-4, 1 - 1e-4] (the original's _sigmoid)


def focal_loss(heatmap_logits, heatmap_target, alpha: float = 2.0, beta: float = 4.0):
    """Penalty-reduced pixel-wise focal loss (CornerNet), summed (not normalised).

    ``-(1 - p)^alpha log(p)`` where the target is 1 (object centres) and
    ``-(1 - y)^beta p^alpha log(1 - p)`` elsewhere, with ``p`` the clipped sigmoid.

    Args:
      heatmap_logits: ``[B, H, W, C]`` logits, any float dtype.
      heatmap_target: ``[B, H, W, C]`` gaussian targets in [0, 1], exactly 1 at centres.
    Returns:
      float32 scalar sum over the batch.
    """
    p = tf.clip_by_value(tf.sigmoid(tf.cast(heatmap_logits, tf.float32)), PROB_CLIP, 1.0 - PROB_CLIP)
    y = tf.cast(heatmap_target, tf.float32)
    positive = tf.cast(tf.equal(y, 1.0), tf.float32)
    pos = tf.math.log(p) * tf.pow(1.0 - p, alpha) * positive
    neg = tf.math.log(1.0 - p) * tf.pow(p, alpha) * tf.pow(1.0 - y, beta) * (1.0 - positive)
    return -tf.reduce_sum(pos + neg)


def gather_at(maps, indices):
    """Values of ``maps`` ``[B, H, W, D]`` at flat positions ``indices`` ``[B, K]`` (y * W + x).

    Returns float32 ``[B, K, D]``.
    """
    maps = tf.cast(maps, tf.float32)
    shape = tf.shape(maps)
    flat = tf.reshape(maps, [shape[0], shape[1] * shape[2], shape[3]])  # [B, H*W, D]
    return tf.gather(flat, tf.cast(indices, tf.int32), batch_dims=1)


def l1_at_indices(pred_maps, target, indices, mask):
    """Summed L1 between ``pred_maps`` at ``indices`` and ``target``, over masked rows.

    Args:
      pred_maps: ``[B, H, W, D]`` predictions.
      target: ``[B, K, D]``.
      indices: int32 ``[B, K]`` flat positions y * W + x (padded rows may hold 0).
      mask: ``[B, K]``, 1 for real objects, 0 for padding.
    Returns:
      float32 scalar sum over the batch.
    """
    diff = tf.abs(gather_at(pred_maps, indices) - tf.cast(target, tf.float32))  # [B, K, D]
    return tf.reduce_sum(diff * tf.cast(mask, tf.float32)[..., None])


def global_num_objects(mask):
    """Object count of the global batch (summed over replicas inside a replica context), >= 1.

    ``mask``: ``[B, K]`` of this replica. Returns a float32 scalar to pass as ``num_objects``.
    """
    n = tf.reduce_sum(tf.cast(mask, tf.float32))
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        n = ctx.all_reduce(tf.distribute.ReduceOp.SUM, n)
    return tf.maximum(n, 1.0)


REGRESSION_NORMALIZERS = {"objects": 1.0, "channels": 2.0}  # size / offset L1 divided by N or 2N


def centernet_loss(outputs, targets, num_objects, focal_alpha: float = 2.0, focal_beta: float = 4.0,
                   size_weight: float = 0.1, offset_weight: float = 1.0,
                   regression_normalizer: str = "objects") -> dict:
    """The CenterNet training loss of a (per-replica) batch.

    Args:
      outputs: list of per-stack dicts ``{"heatmap": [B, H, W, C], "size": [B, H, W, 2],
        "offset": [B, H, W, 2]}`` (the model's output; a single dict is accepted too).
      targets: dict with ``heatmap`` ``[B, H, W, C]``, ``size`` ``[B, K, 2]``, ``offset``
        ``[B, K, 2]``, ``indices`` int32 ``[B, K]``, ``mask`` ``[B, K]``.
      num_objects: the global batch's object count (see ``global_num_objects``); clamped to >= 1.
      focal_alpha, focal_beta, size_weight, offset_weight: ``TrainConfig`` values.
      regression_normalizer: ``objects``: the size and offset L1 sums are divided by the
        object count N (Model Garden); ``channels``: by the mask summed over both channels,
        2N (the original's ``RegL1Loss``, which halves the effective weights).
    Returns:
      float32 scalars ``{"total", "heatmap", "size", "offset"}``; ``size`` and ``offset`` are
      unweighted, ``total = heatmap + size_weight * size + offset_weight * offset``.
    """
    if isinstance(outputs, dict):
        outputs = [outputs]
    n = tf.maximum(tf.cast(num_objects, tf.float32), 1.0)
    terms = {"heatmap": 0.0, "size": 0.0, "offset": 0.0}
    for stack in outputs:
        terms["heatmap"] += focal_loss(stack["heatmap"], targets["heatmap"], focal_alpha, focal_beta)
        terms["size"] += l1_at_indices(stack["size"], targets["size"], targets["indices"], targets["mask"])
        terms["offset"] += l1_at_indices(stack["offset"], targets["offset"], targets["indices"], targets["mask"])
    scale = 1.0 / (n * len(outputs))
    losses = {k: tf.cast(v, tf.float32) * scale for k, v in terms.items()}
    for k in ("size", "offset"):
        losses[k] = losses[k] / REGRESSION_NORMALIZERS[regression_normalizer]
    losses["total"] = losses["heatmap"] + size_weight * losses["size"] + offset_weight * losses["offset"]
    return losses
