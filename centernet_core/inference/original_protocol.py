"""The original CenterNet's test protocol (``eval.protocol: original``), for imported weights.

What its 40.3 / 42.2 / 45.1 AP are measured with (``--keep_res``, ``--flip_test``,
``--test_scales``), per image, at the image's own size:

1. for each test scale s: resize the *original* image to ``(int(h s), int(w s))``
   (bilinear, pixel centres, rounded to uint8 as OpenCV's ``cv2.resize`` returns);
2. pad it black, centred, to ``(side | (divisor - 1)) + 1`` per axis (the next multiple of
   the divisor strictly above ``side``: 640 -> 768 for Hourglass's 128), at the integer
   offset ``(padded // 2 - side // 2)`` of the original's affine transform; normalise;
3. the model, with the flip test as in ``detect.head_maps`` when asked;
4. decode the top 100 peaks; map back: ``(4 x - offset) / s`` (no clipping, as the original);
5. one scale: those 100. Several: concatenate and merge with the task's merge
   (``eval.merge``; the original's is Gaussian soft-NMS, sigma 0.5), top 100.

Images differ in size, so this runs one image at a time (batch 1); the graph takes any
size. Known differences from the original: OpenCV's fixed-point bilinear resize (11-bit
weights) can differ by one grey level where this float one rounds the other way, and the
normalisation constants are ``pixels``' three-digit ones (docs/import.md).

Letters: h w the image, N detections.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from centernet_core import pixels as pixels_lib
from centernet_core import storage
from centernet_core.inference.detect import head_maps


def padded_side(side, divisor: int):
    """The original's input side for a resized side: ``(side | (divisor - 1)) + 1`` (int32)."""
    return tf.bitwise.bitwise_or(side, divisor - 1) + 1


def original_input(image, scale: float, divisor: int):
    """One test scale of uint8 ``image`` ``[h, w, 3]`` RGB -> (normalised B, G, R float32
    ``[1, H', W', 3]``, offset float32 ``[2]`` (top, left) of the resized image in it)."""
    hw = tf.shape(image)[:2]
    new_hw = tf.cast(tf.floor(tf.cast(hw, tf.float32) * scale), tf.int32)  # int(h * s), int(w * s)
    pixels = tf.cast(image, tf.float32)
    if scale != 1.0:
        pixels = tf.image.resize(pixels, new_hw, method="bilinear")
        pixels = tf.clip_by_value(tf.round(pixels), 0.0, 255.0)  # uint8, as cv2.resize returns
    padded = padded_side(new_hw, divisor)  # [2]
    offset = padded // 2 - new_hw // 2  # [2] (top, left)
    rest = padded - new_hw - offset
    canvas = tf.pad(pixels, [[offset[0], rest[0]], [offset[1], rest[1]], [0, 0]])  # black
    return pixels_lib.normalize_rgb(canvas)[None], tf.cast(offset, tf.float32)


def detect_original(model, task, image, *, divisor: int, flip: bool = False, scales: Sequence[float] = (1.0,),
                    max_detections: int = 100, score_threshold: float = 0.0) -> dict:
    """Detections of ``model`` on one uint8 RGB ``image`` ``[h, w, 3]`` by the original's protocol.

    Returns the task's detections with a batch of 1: ``boxes_yxyx_abs`` ``[1, N, 4]`` in
    original pixels (not clipped), ``scores`` ``[1, N]``, ``classes`` int32 ``[1, N]``,
    ``num_detections`` int32 ``[1]``.
    """
    parts = []
    for s in scales:
        x, offset = original_input(image, float(s), divisor)
        det = task.decode(head_maps(model, task, x, flip), max_detections=max_detections,
                          score_threshold=score_threshold if len(scales) == 1 else 0.0)
        shift = tf.tile(offset, [2])[None, None]  # [1, 1, 4]
        boxes = (det["boxes_yxyx_abs"] - shift) / float(s)
        live = tf.range(max_detections)[None] < det["num_detections"][:, None]  # [1, N]
        parts.append(dict(det, boxes_yxyx_abs=tf.where(live[..., None], boxes, 0.0)))
    if len(parts) == 1:
        return parts[0]
    return task.merge_scales(parts, max_detections, 0.0, score_threshold)


def make_detect_fn(model, task, divisor: int, eval_cfg):
    """A ``tf.function`` of one uint8 image ``[1, h, w, 3]`` (any size) -> ``detect_original``
    with the ``eval`` section's flip, scales, max_detections and score_threshold."""
    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
    def run(image):
        return detect_original(model, task, image[0], divisor=divisor, flip=eval_cfg.flip, scales=eval_cfg.scales,
                               max_detections=eval_cfg.max_detections, score_threshold=eval_cfg.score_threshold)
    return run


def original_images(pattern: str) -> tf.data.Dataset:
    """The records of ``pattern`` in the eval pipeline's order and with its skips: elements
    (source_id int64, uint8 ``[1, h, w, 3]`` RGB image)."""
    from centernet_core.data.pipeline import _check_record

    def parse(rec):
        ex = tf.io.parse_single_example(rec["serialized"], {
            "image/source_id": tf.io.FixedLenFeature([], tf.string, default_value="0")})
        image = tf.io.decode_image(rec["encoded"], channels=3, expand_animations=False)
        return tf.strings.to_number(ex["image/source_id"], tf.int64), image[None]

    ds = tf.data.TFRecordDataset(storage.glob(pattern))
    ds = ds.scan(tf.constant(0, tf.int64), _check_record).filter(lambda rec: rec["ok"])
    return ds.map(parse).ignore_errors()


def batches(eval_batches, pattern: str):
    """Pair each batch-of-1 ``features`` of the eval pipeline with its original image.

    Yields ``(features, image [1, h, w, 3])``; raises RuntimeError if the two orders ever
    disagree (they read the same files in the same order with the same skips).
    """
    for (features, _), (source_id, image) in zip(eval_batches, original_images(pattern)):
        if int(features["source_id"][0]) != int(source_id):
            raise RuntimeError(f"original-protocol eval: image {int(source_id)} paired with "
                               f"record {int(features['source_id'][0])}")
        yield features, image
