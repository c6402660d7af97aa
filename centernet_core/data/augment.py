"""Graph-only image geometry, colour jitter and normalisation for the input pipeline.

Letters: h w the decoded image, S the (square) model input, K boxes.

Colour jitter and normalisation come first, as one 1x1 convolution on the decoded
image; then geometry is one resampling per image, so padding is 0 = the mean colour.
Output pixel i (centre i + 0.5) samples the source
at ``(i + 0.5) / scale - 0.5 + top`` (pixel-centre convention), i.e. a source point y
lands at ``(y - top) * scale``. ``crop_and_resize`` does it in one op; samples outside
the image are padding. Training picks a random square crop (``random_crop_window``);
evaluation uses ``top = left = 0``, ``scale = S / max(h, w)``, so input pixel = original
pixel x scale with padding at the bottom / right (docs/design.md).

Randomness is stateless: every random op takes a seed ``[2]`` int64 derived from the
per-element seed, so ``data.deterministic`` with a fixed seed repeats exactly.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

# Per-channel mean and std on [0, 1], in B, G, R order (REFERENCE.md: the original loads
# BGR with OpenCV; pretrained weights expect exactly this).
MEAN_BGR = (0.408, 0.447, 0.470)
STD_BGR = (0.289, 0.274, 0.278)


def random_crop_window(seed, image_hw, crop_scales):
    """A random square window: (top, left, side) float32 scalars in source pixels.

    side = one of ``crop_scales`` x the long side. The window lies inside the image
    along a dimension it is shorter than, and contains the image along one it is longer
    than; within that freedom its position is uniform.
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    h, w = image_hw[0], image_hw[1]
    scales = tf.constant(crop_scales, tf.float32)
    pick = tf.random.stateless_uniform([], seeds[0], 0, len(crop_scales), dtype=tf.int32)
    side = scales[pick] * tf.maximum(h, w)

    def position(s, length):
        lo, hi = tf.minimum(0.0, length - side), tf.maximum(0.0, length - side)
        return lo + tf.random.stateless_uniform([], s) * (hi - lo)

    return position(seeds[1], h), position(seeds[2], w), side


def resample(image, top, left, scale, size: int):
    """Sample ``image`` ``[h, w, 3]`` into float32 ``[S, S, 3]`` (see the module docstring).

    Args:
      image: float32 ``[h, w, 3]``, already normalised (so padding, 0, is the mean colour).
      top, left: float32 scalars, source pixel at the output's top-left edge.
      scale: float32 scalar, output pixels per source pixel.
      size: S.

    Returns:
      float32 ``[S, S, 3]``; samples outside the image are 0.
    """
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    span = (size - 1.0) / scale  # source pixels between the first and last sample
    y0 = top + 0.5 / scale - 0.5
    x0 = left + 0.5 / scale - 0.5
    dh, dw = tf.maximum(h - 1.0, 1.0), tf.maximum(w - 1.0, 1.0)
    box = tf.stack([y0 / dh, x0 / dw, (y0 + span) / dh, (x0 + span) / dw])[None]  # [1, 4]
    return tf.image.crop_and_resize(image[None], box, [0], [size, size], extrapolation_value=0.0)[0]


def transform_boxes(boxes_yxyx_abs, top, left, scale, size: int):
    """Source-pixel boxes ``[K, 4]`` -> input-pixel boxes clipped to ``[0, S]``."""
    shift = tf.stack([top, left, top, left])
    return tf.clip_by_value((boxes_yxyx_abs - shift) * scale, 0.0, float(size))


def flip_left_right(image, boxes_yxyx_abs, size: int):
    """Mirror ``[S, S, 3]`` and its ``[K, 4]`` input-pixel boxes."""
    y0, x0, y1, x1 = tf.unstack(boxes_yxyx_abs, 4, axis=-1)
    return tf.reverse(image, [1]), tf.stack([y0, size - x1, y1, size - x0], axis=-1)


# RGB -> YIQ; a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_YIQ_TO_RGB = tuple(map(tuple, np.linalg.inv(np.array(_RGB_TO_YIQ)).tolist()))
_LUMA = (0.299, 0.587, 0.114)


def color_jitter_params(seed):
    """Random colour jitter as a linear map: (matrix ``[3, 3]`` on RGB, contrast scalar).

    Brightness x[0.8, 1.2]; saturation [0.8, 1.25] (blend with the grey image, as the
    original CenterNet does); hue +-0.02 of a turn (rotation of the YIQ chroma plane);
    contrast [0.8, 1.25] (blend with the image's mean grey, applied by
    ``normalize_bgr``). All of it is affine per pixel, so ``normalize_bgr`` applies it
    together with the normalisation in one pass over the image.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    brightness = tf.random.stateless_uniform([], seeds[0], 0.8, 1.2)
    contrast = tf.random.stateless_uniform([], seeds[1], 0.8, 1.25)
    saturation = tf.random.stateless_uniform([], seeds[2], 0.8, 1.25)
    angle = tf.random.stateless_uniform([], seeds[3], -0.02, 0.02) * 2.0 * 3.141592653589793
    luma = tf.constant(_LUMA)
    sat = saturation * tf.eye(3) + (1.0 - saturation) * tf.ones([3, 1]) * luma[None, :]  # [3, 3]
    yiq = tf.constant(_RGB_TO_YIQ)
    cos, sin = tf.cos(angle), tf.sin(angle)
    rot = tf.stack([[1.0, 0.0, 0.0], tf.stack([0.0, cos, -sin]), tf.stack([0.0, sin, cos])])  # [3, 3]
    hue = tf.constant(_YIQ_TO_RGB) @ rot @ yiq
    return brightness * (sat @ hue), contrast


def normalize_bgr(image, colour=None, contrast=None):
    """RGB ``[h, w, 3]`` uint8 (0..255) -> float32 normalised B, G, R ``[h, w, 3]``.

    With ``colour`` ``[3, 3]`` and ``contrast`` (``color_jitter_params``) the jitter comes
    first: ``x' = contrast * (colour @ x) + (1 - contrast) * mean grey``. Jitter, channel
    swap, mean and std fold into one matrix and offset: a single 1x1 convolution.
    """
    pixels = tf.cast(image, tf.float32)
    colour = tf.eye(3) if colour is None else colour
    scale = 1.0 / (255.0 * tf.constant(STD_BGR))  # [3] per output channel (B, G, R)
    swap = tf.constant([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # RGB -> BGR
    if contrast is None:
        matrix, grey = swap @ colour, 0.0
    else:
        mean_rgb = tf.reduce_mean(pixels, [0, 1])  # [3]
        grey = (1.0 - contrast) * tf.tensordot(tf.constant(_LUMA), tf.linalg.matvec(colour, mean_rgb), 1)
        matrix = contrast * (swap @ colour)
    matrix = matrix * scale[:, None]  # [3 out (B, G, R), 3 in (R, G, B)]
    offset = grey * scale - tf.constant(MEAN_BGR) / tf.constant(STD_BGR)  # [3]
    out = tf.nn.conv2d(pixels[None], tf.transpose(matrix)[None, None], 1, "VALID")  # [1, h, w, 3]
    return tf.nn.bias_add(out, offset)[0]
