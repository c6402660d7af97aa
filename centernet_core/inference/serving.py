"""The serving graph: raw images in, detections in original pixels and category ids out.

``Detector`` wraps a trained model with everything between a picture and its boxes:
letterbox (keep aspect, long side to S, pad bottom / right), RGB -> normalised B, G, R,
the model, ``detect`` (decode, optional flip / multi-scale) and the category table. It is
what ``centernet export`` saves and what ``centernet predict`` runs on a checkpoint.

Letters: N images, h w an image's size, S input size, D ``max_detections``.

Outputs (the TF detection serving convention; all float32):
``detection_boxes`` [N, D, 4] (ymin, xmin, ymax, xmax) original pixels,
``detection_scores`` [N, D], ``detection_classes`` [N, D] original category ids (0 on
rows past the count), ``num_detections`` [N]. The keypoints task adds
``detection_keypoints`` [N, D, J, 2] ((y, x) original pixels) and
``detection_keypoint_scores`` [N, D, J].
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from centernet_core import pixels as pixels_lib
from centernet_core import strides
from centernet_core.tasks import build_task
from centernet_core.inference.detect import detect

OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def _axis_samples(length, size: int, scale):
    """Bilinear taps along one axis: output i samples source (i + 0.5) / scale - 0.5.

    Returns (lo [S] int32, hi [S] int32, frac [S], inside [S]): ``inside`` is 0 where the
    sample falls outside [0, length - 1], where ``tf.image.crop_and_resize`` (the input
    pipeline's resampler) extrapolates 0.
    """
    pos = (tf.range(size, dtype=tf.float32) + 0.5) / scale - 0.5  # [S]
    last = length - 1.0
    lo = tf.floor(pos)
    frac = pos - lo
    inside = tf.cast((pos >= 0.0) & (pos <= last), tf.float32)
    last_i = tf.cast(last, tf.int32)
    lo_i = tf.clip_by_value(tf.cast(lo, tf.int32), 0, last_i)
    hi_i = tf.clip_by_value(tf.cast(lo, tf.int32) + 1, 0, last_i)
    return lo_i, hi_i, frac, inside


def _lerp(images, lo, hi, frac, axis: int):
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    frac = tf.reshape(frac, shape)
    a, b = tf.gather(images, lo, axis=axis), tf.gather(images, hi, axis=axis)
    return a + (b - a) * frac


def letterbox(images, size: int):
    """Letterbox a batch of equally sized images as the eval pipeline does, with TFLite ops.

    The same result as ``data.augment.resample(normalize_bgr(image), 0, 0, S / max(h, w), S)``
    (normalise, then sample; samples outside the image are 0, the mean colour) written with
    gathers instead of ``crop_and_resize``, which TFLite lacks. Normalising is affine and
    the taps' weights sum to 1, so sampling first and normalising after is the same; a
    test pins the two together.

    Args:
      images: uint8 or float [N, h, w, 3] RGB in 0..255.
      size: S.
    Returns: (normalised B, G, R float32 [N, S, S, 3], 0 outside the image, scale [N],
      original_hw [N, 2]).
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    scale = size / tf.maximum(h, w)
    y_lo, y_hi, y_frac, y_inside = _axis_samples(h, size, scale)
    x_lo, x_hi, x_frac, x_inside = _axis_samples(w, size, scale)
    rows = _lerp(images, y_lo, y_hi, y_frac, axis=1)  # [N, S, w, 3]
    pixels = _lerp(rows, x_lo, x_hi, x_frac, axis=2)  # [N, S, S, 3]
    inside = y_inside[:, None, None] * x_inside[None, :, None]  # [S, S, 1]
    normalised = pixels_lib.normalize_rgb(pixels) * inside
    n = shape[0]
    return normalised, tf.fill([n], scale), tf.tile(tf.stack([h, w])[None], [n, 1])


class _Untracked:
    """Holds an object where tf.Module's automatic tracking does not look."""

    def __init__(self, obj):
        self.obj = obj


class Detector(tf.Module):
    """A model plus preprocessing, decoding and category table (see module docstring).

    Args:
      model: the Keras CenterNet model (``build_model(cfg)``, weights restored).
      task: the model's task (``tasks.build_task(cfg)``): decoding and test-time augmentation.
      input_size: S; divisor: the backbone's input divisor.
      category_ids: training index -> original category id (length C).
      flip, scales, max_detections, score_threshold, nms_iou: passed to ``detect``.
    """

    def __init__(self, model, task, input_size: int, category_ids: Sequence[int], *,
                 divisor: int = 32, flip: bool = False, scales: Sequence[float] = (1.0,),
                 max_detections: int = 100, score_threshold: float = 0.0, nms_iou: float = 0.0):
        super().__init__(name="centernet_detector")
        if len(category_ids) != task.num_classes:
            raise ValueError(f"{len(category_ids)} category ids for {task.num_classes} classes")
        # The Keras model stays out of TF's object tracking; its variables are tracked as the
        # plain tf.Variables under them. Tracking the Keras model itself saves each variable
        # twice, and TF1-style loaders (saved_model_cli, TF Serving) then read the copy that
        # the restore never fills ("Could not find variable ...").
        self._held = _Untracked(model)
        self._task = _Untracked(task)
        self.model_variables = [getattr(v, "value", v) for v in model.variables]
        self.input_size = int(input_size)
        self._detect_kwargs = dict(divisor=int(divisor), flip=bool(flip),
                                   scales=tuple(float(s) for s in scales), max_detections=int(max_detections),
                                   score_threshold=float(score_threshold), nms_iou=float(nms_iou))
        self.category_ids = tf.constant([int(c) for c in category_ids], tf.float32)

    def detect_normalized(self, images, scale, original_hw) -> dict:
        """[N, S, S, 3] letterboxed input, [N] scale, [N, 2] sizes -> the serving outputs."""
        det = detect(self._held.obj, self._task.obj, images, scale, original_hw, **self._detect_kwargs)
        live = tf.range(tf.shape(det["scores"])[1])[None, :] < det["num_detections"][:, None]  # [N, D]
        classes = tf.where(live, tf.gather(self.category_ids, det["classes"]), 0.0)
        out = {"detection_boxes": det["boxes_yxyx_abs"], "detection_scores": det["scores"],
               "detection_classes": classes, "num_detections": tf.cast(det["num_detections"], tf.float32)}
        if "keypoints_yx_abs" in det:  # the keypoints task: [N, D, J, 2] (y, x) original pixels, [N, D, J]
            out.update(detection_keypoints=det["keypoints_yx_abs"], detection_keypoint_scores=det["keypoint_scores"])
        return out

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def image_tensor(self, images):
        """uint8 [N, h, w, 3] RGB (one size per batch) -> outputs."""
        return self.detect_normalized(*letterbox(images, self.input_size))

    def _decode_one(self, encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)  # uint8 [h, w, 3]
        pixels, scale, hw = letterbox(image[None], self.input_size)
        return pixels[0], scale[0], hw[0]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="encoded")])
    def encoded_image(self, encoded):
        """string [N] JPEG / PNG / GIF / BMP / WebP bytes (any sizes) -> outputs."""
        pixels, scale, hw = tf.map_fn(
            self._decode_one, encoded, fn_output_signature=(
                tf.TensorSpec([self.input_size, self.input_size, 3], tf.float32),
                tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.float32)))
        return self.detect_normalized(pixels, scale, hw)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def tf_example(self, serialized):
        """string [N] serialized tf.Example with ``image/encoded`` -> outputs."""
        parsed = tf.io.parse_example(serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
        return self.encoded_image(parsed["image/encoded"])

    def signatures(self) -> dict:
        """Concrete functions for ``tf.saved_model.save(..., signatures=...)``."""
        return {"serving_default": self.image_tensor.get_concrete_function(),
                "image_tensor": self.image_tensor.get_concrete_function(),
                "encoded_image": self.encoded_image.get_concrete_function(),
                "tf_example": self.tf_example.get_concrete_function()}


def build_detector(trained):
    """The ``serving.Detector`` of a ``trained.TrainedModel`` with its config's ``eval`` settings:
    ``eval.flip`` and ``eval.scales`` (test-time augmentation) are built into the graph, as
    are ``max_detections``, ``score_threshold`` and ``nms_iou``."""
    cfg = trained.cfg
    e = cfg.eval
    return Detector(trained.model, build_task(cfg), cfg.model.input_size, trained.category_ids,
                    divisor=strides.input_divisor(cfg.model.backbone), flip=e.flip, scales=e.scales,
                    max_detections=e.max_detections, score_threshold=e.score_threshold, nms_iou=e.nms_iou)
