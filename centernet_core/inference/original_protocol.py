"""The original CenterNet's test protocol (``eval.protocol: original``), for imported weights.

What its 40.3 / 42.2 / 45.1 AP are measured with (``--keep_res``, ``--flip_test``,
``--test_scales``), per image, at the image's own size:

1. for each test scale s: resize the *original* image to ``(int(h s), int(w s))`` as
   OpenCV's ``cv2.resize`` (``INTER_LINEAR`` on uint8) does: ``cv_resize_linear``;
2. pad it black, centred, to ``(side | (divisor - 1)) + 1`` per axis (the next multiple of
   the divisor strictly above ``side``: 640 -> 768 for Hourglass's 128), at the integer
   offset ``(padded // 2 - side // 2)`` of the original's affine transform; normalise;
3. the model, with the flip test as in ``detect.head_maps`` when asked;
4. decode the top 100 peaks; map back: ``(4 x - offset) / s`` (no clipping, as the original);
5. one scale: those 100. Several: concatenate and merge with the task's merge
   (``eval.merge``; the original's is Gaussian soft-NMS, sigma 0.5), top 100.

Images differ in size, so this runs one image at a time (batch 1); the graph takes any
size. Known differences from the original: OpenCV's x86 SIMD path rounds the vertical pass
of its resize in steps (``VResizeLinearVec_32s8u``) where its scalar path, re-written here,
rounds once, so a near-tie pixel can differ by one grey level; the normalisation constants
are ``pixels``' three-digit ones (docs/import.md). The resize matters: a float bilinear
resize that breaks the many exact half-grey-level ties of scale 1.5 the other way moved
random-weight scores by 3e-4 (tests/test_original_protocol.py).

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


CV_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights in 1/2048


def _cv_taps(n_in, n_out):
    """OpenCV's INTER_LINEAR taps along one axis of ``n_in`` -> ``n_out`` samples: first and
    second source index and their integer weights (summing to 2048), each int32 ``[n_out]``.

    As ``cv::resize``: ``scale = 1 / (n_out / n_in)`` in double, the source position
    ``(d + 0.5) scale - 0.5`` rounded to float, its fraction zeroed outside the image, the
    first weight ``cvRound((1 - f) 2048)`` in float (half to even, as ``tf.round``).
    """
    scale = 1.0 / (tf.cast(n_out, tf.float64) / tf.cast(n_in, tf.float64))
    pos = tf.cast((tf.range(n_out, dtype=tf.float64) + 0.5) * scale - 0.5, tf.float32)
    lo = tf.floor(pos)
    edge = (lo < 0.0) | (lo >= tf.cast(n_in - 1, tf.float32))
    frac = tf.where(edge, 0.0, pos - lo)
    lo = tf.clip_by_value(tf.cast(lo, tf.int32), 0, n_in - 1)
    w0 = tf.cast(tf.round((1.0 - frac) * float(1 << CV_COEF_BITS)), tf.int32)
    return lo, tf.minimum(lo + 1, n_in - 1), w0, (1 << CV_COEF_BITS) - w0


def cv_resize_linear(image, new_hw):
    """``cv2.resize(image, (w', h'))`` (``INTER_LINEAR``) of uint8 ``image`` ``[h, w, 3]`` to
    ``new_hw`` ``[2]`` (h', w'): uint8 ``[h', w', 3]``, bit-exact with OpenCV's scalar path.

    Separable fixed point: a horizontal pass with 11-bit weights, a vertical one, then
    ``(v + 2^21) >> 22`` (round half up). At exactly half the size this is also OpenCV's
    ``INTER_AREA`` shortcut, ``(a + b + c + d + 2) >> 2``. The largest value, 255 x 2^22,
    fits int32.
    """
    hw = tf.shape(image)[:2]
    pixels = tf.cast(image, tf.int32)
    x0, x1, a0, a1 = _cv_taps(hw[1], new_hw[1])
    rows = (tf.gather(pixels, x0, axis=1) * a0[None, :, None]
            + tf.gather(pixels, x1, axis=1) * a1[None, :, None])  # [h, w', 3], x 2^11
    y0, y1, b0, b1 = _cv_taps(hw[0], new_hw[0])
    out = tf.gather(rows, y0) * b0[:, None, None] + tf.gather(rows, y1) * b1[:, None, None]  # x 2^22
    out = tf.bitwise.right_shift(out + (1 << (2 * CV_COEF_BITS - 1)), 2 * CV_COEF_BITS)
    return tf.cast(tf.clip_by_value(out, 0, 255), tf.uint8)


def original_input(image, scale: float, divisor: int):
    """One test scale of uint8 ``image`` ``[h, w, 3]`` RGB -> (normalised B, G, R float32
    ``[1, H', W', 3]``, offset float32 ``[2]`` (top, left) of the resized image in it)."""
    hw = tf.shape(image)[:2]
    new_hw = tf.cast(tf.floor(tf.cast(hw, tf.float64) * scale), tf.int32)  # int(h * s), int(w * s)
    if scale != 1.0:  # at 1, cv2.resize copies
        image = cv_resize_linear(image, new_hw)
    pixels = tf.cast(image, tf.float32)
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
