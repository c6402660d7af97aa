"""Graph-only image geometry, colour jitter and normalisation for the input pipeline.

Letters: h w the decoded image, S the (square) model input, K boxes, B batch.

Every image reaches the input through an axis-aligned map, source pixel coordinate
``y -> y * sy + ty`` (and ``x -> x * sx + tx``): ``affine = (sy, sx, ty, tx)``. Boxes go
through the same map (``transform_boxes``), so pixels and boxes agree. Padding is 0 =
the mean colour, because it is added after normalisation.

Training (``crop_placement``, ``decode_crop``, ``place_crop``): a random square window
(side = one of ``data.crop_scales`` x the long side) is snapped to whole source pixels
where it meets the image and to whole input pixels where that lands. Only that source
region is decoded (``decode_and_crop_jpeg`` for JPEG; other formats are decoded whole
and sliced), resized once with ``tf.image.resize``, rounded to uint8 and padded. Snapping
makes ``sy``, ``sx`` differ from S / side by less than one pixel across the crop. A flip
mirrors the decoded crop and its placement. Jitter and normalisation are one affine colour
map per image (``colour_transform``), applied with the batch on the accelerator
(``normalize_batch``, via ``model_input``), where padding stays 0.

Evaluation (``resample``): top = left = 0, scale = S / max(h, w), so input pixel =
original pixel x scale with padding at the bottom / right (docs/design.md). Output
pixel i (centre i + 0.5) samples the normalised source at ``(i + 0.5) / scale - 0.5``
(pixel-centre convention) with ``crop_and_resize``; samples outside the image are
padding. ``serving.letterbox`` reproduces this exactly.

Randomness is stateless: the pipeline draws each image's uniforms from a per-element
seed ``[2]``, so ``data.deterministic`` with a fixed seed repeats exactly.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from centernet_core.pixels import MEAN_BGR, STD_BGR

_JPEG_MAGIC = b"\xff\xd8\xff"


def random_crop_window(u, image_hw, crop_scales):
    """A random square window from uniforms ``u`` ``[3]`` in [0, 1).

    side = one of ``crop_scales`` (picked by ``u[0]``) x the long side. The window lies
    inside the image along a dimension it is shorter than, and contains the image along
    one it is longer than; within that freedom its position is uniform (``u[1:3]``).

    Returns (start float32 ``[2]`` (top, left) in source pixels, side float32 scalar).
    """
    hw = tf.cast(image_hw, tf.float32)  # [2]
    pick = tf.minimum(tf.cast(u[0] * len(crop_scales), tf.int32), len(crop_scales) - 1)
    side = tf.gather(tf.constant(crop_scales, tf.float32), pick) * tf.reduce_max(hw)
    lo, hi = tf.minimum(0.0, hw - side), tf.maximum(0.0, hw - side)
    return lo + u[1:3] * (hi - lo), side


def crop_placement(start, side, image_hw, size: int) -> dict:
    """Snap the window ``[start, start + side)`` ``[2]`` of an ``image_hw`` source to pixels.

    The part of the window inside the image, rounded to whole source pixels, is the
    region to decode; where its edges land in the S-pixel input, rounded, is where the
    resized region goes. Returns a dict:
      ``src`` int32 ``[4]`` (y, x, h, w) source region (for ``decode_and_crop_jpeg``),
      ``dst`` int32 ``[4]`` (y, x, h, w) its place in the input,
      ``affine`` float32 ``[4]`` (sy, sx, ty, tx): source -> input map of that pair.
    """
    hw = tf.cast(image_hw, tf.float32)  # [2]
    scale = size / side
    c0 = tf.clip_by_value(tf.round(tf.maximum(start, 0.0)), 0.0, hw - 1.0)  # [2]
    c1 = tf.clip_by_value(tf.round(tf.minimum(start + side, hw)), c0 + 1.0, hw)
    p0 = tf.clip_by_value(tf.round((c0 - start) * scale), 0.0, size - 1.0)
    p1 = tf.clip_by_value(tf.round((c1 - start) * scale), p0 + 1.0, float(size))
    s = (p1 - p0) / (c1 - c0)
    return {"src": tf.cast(tf.concat([c0, c1 - c0], 0), tf.int32),
            "dst": tf.cast(tf.concat([p0, p1 - p0], 0), tf.int32),
            "affine": tf.concat([s, p0 - c0 * s], 0)}


def decode_crop(encoded, placement_fn):
    """Decode only the source region ``placement_fn(image_hw)`` asks for.

    JPEG: the header gives the size, then only the region is decoded
    (``decode_and_crop_jpeg``). Other formats: ``decode_image`` (first frame) and a slice.

    Args:
      encoded: string scalar, image file bytes.
      placement_fn: int32 ``[2]`` (h, w) -> ``crop_placement`` dict.

    Returns:
      (uint8 ``[src h, src w, 3]`` RGB region, image (h, w) int32 ``[2]``, placement).
    """
    def jpeg():
        hw = tf.image.extract_jpeg_shape(encoded)[:2]
        placement = placement_fn(hw)
        return tf.io.decode_and_crop_jpeg(encoded, placement["src"], channels=3), hw, placement

    def other():
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)  # uint8 [h, w, 3]
        hw = tf.shape(image)[:2]
        placement = placement_fn(hw)
        src = placement["src"]
        return tf.slice(image, [src[0], src[1], 0], [src[2], src[3], 3]), hw, placement

    return tf.cond(tf.strings.substr(encoded, 0, 3) == _JPEG_MAGIC, jpeg, other)


def place_crop(region, placement, flip, size: int, colour=None, contrast=None):
    """The decoded region -> uint8 ``[S, S, 3]`` RGB input, its colour transform and content box.

    The pixels are resized and padded here; normalisation and colour jitter are left to
    ``normalize_batch`` on the accelerator, one fused pass per batch (the per-image pass
    they cost here was the pipeline's largest after decoding, and uint8 batches are 4x
    smaller).

    Args:
      region: uint8 ``[src h, src w, 3]`` from ``decode_crop``.
      placement: its ``crop_placement`` dict.
      flip: bool scalar; mirrors the image left-right (``flip_boxes`` does the boxes).
      size: S.
      colour, contrast: optional jitter (``color_jitter_params``), see ``normalize_bgr``.

    Returns:
      (uint8 ``[S, S, 3]`` RGB with 0 outside the content, ``colour_transform`` float32
      ``[4, 3]``, content box int32 ``[4]`` (top, left, height, width) in input pixels).
    """
    dst = placement["dst"]
    region = tf.cond(flip, lambda: tf.reverse(region, [1]), lambda: region)
    left = tf.where(flip, size - dst[1] - dst[3], dst[1])
    mean_rgb = None
    if contrast is not None:  # the region's mean colour, from about 32 x 32 of its pixels
        step = tf.maximum(tf.shape(region)[:2] // 32, 1)
        mean_rgb = tf.reduce_mean(tf.cast(region[::step[0], ::step[1]], tf.float32), [0, 1])
    pixels = tf.cast(tf.image.resize(region, dst[2:4]) + 0.5, tf.uint8)  # [h', w', 3], rounded
    # tf.pad on [h', 3 w'] (channels folded into rows) runs about twice as fast as on [h', w', 3].
    rows = tf.reshape(pixels, [dst[2], 3 * dst[3]])
    rows = tf.pad(rows, [[dst[0], size - dst[0] - dst[2]], [3 * left, 3 * (size - left - dst[3])]])
    content = tf.stack([dst[0], left, dst[2], dst[3]])
    return tf.reshape(rows, [size, size, 3]), colour_transform(colour, contrast, mean_rgb), content


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


def transform_boxes(boxes_yxyx_abs, affine, size: int):
    """Source-pixel boxes ``[..., K, 4]`` -> input-pixel boxes clipped to ``[0, S]``.

    ``affine`` ``[..., 4]`` (sy, sx, ty, tx) as in the module docstring, one per image.
    """
    affine = tf.convert_to_tensor(affine, tf.float32)[..., None, :]  # [..., 1, 4]
    sy, sx, ty, tx = tf.unstack(affine, 4, axis=-1)
    y0, x0, y1, x1 = tf.unstack(tf.cast(boxes_yxyx_abs, tf.float32), 4, axis=-1)
    out = tf.stack([y0 * sy + ty, x0 * sx + tx, y1 * sy + ty, x1 * sx + tx], axis=-1)
    return tf.clip_by_value(out, 0.0, float(size))


def flip_boxes(boxes_yxyx_abs, size: int):
    """Mirror input-pixel boxes ``[..., 4]`` left-right in an S-pixel input."""
    y0, x0, y1, x1 = tf.unstack(boxes_yxyx_abs, 4, axis=-1)
    return tf.stack([y0, size - x1, y1, size - x0], axis=-1)


# RGB -> YIQ; a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_YIQ_TO_RGB = tuple(map(tuple, np.linalg.inv(np.array(_RGB_TO_YIQ)).tolist()))
_LUMA = (0.299, 0.587, 0.114)


def color_jitter_params(u):
    """Random colour jitter from uniforms ``u`` ``[4]`` in [0, 1): (matrix ``[3, 3]`` on RGB, contrast).

    Brightness x[0.8, 1.2]; contrast [0.8, 1.25] (blend with the image's mean grey,
    applied by ``normalize_bgr``); saturation [0.8, 1.25] (blend with the grey image, as
    the original CenterNet does); hue +-0.02 of a turn (rotation of the YIQ chroma plane).
    All of it is affine per pixel, so ``normalize_bgr`` applies it together with the
    normalisation in one pass over the image.
    """
    brightness = 0.8 + 0.4 * u[0]
    contrast = 0.8 + 0.45 * u[1]
    saturation = 0.8 + 0.45 * u[2]
    angle = (u[3] - 0.5) * (0.04 * 2.0 * math.pi)
    luma = tf.constant(_LUMA)
    sat = saturation * tf.eye(3) + (1.0 - saturation) * tf.ones([3, 1]) * luma[None, :]  # [3, 3]
    cos, sin = tf.cos(angle), tf.sin(angle)
    rot = tf.stack([[1.0, 0.0, 0.0], tf.stack([0.0, cos, -sin]), tf.stack([0.0, sin, cos])])  # [3, 3]
    hue = tf.constant(_YIQ_TO_RGB) @ rot @ tf.constant(_RGB_TO_YIQ)
    return brightness * (sat @ hue), contrast


def colour_transform(colour=None, contrast=None, mean_rgb=None):
    """Jitter + channel swap + normalisation as one affine map: float32 ``[4, 3]``.

    Rows 0-2: the matrix ``[3 in (R, G, B), 3 out (B, G, R)]``; row 3: the offset. An RGB
    pixel ``x`` (0..255) becomes ``x @ T[:3] + T[3]``. With ``colour`` ``[3, 3]`` and
    ``contrast`` (``color_jitter_params``) the jitter comes first:
    ``x' = contrast * (colour @ x) + (1 - contrast) * mean grey``, the grey of ``mean_rgb``.
    """
    colour = tf.eye(3) if colour is None else colour
    scale = 1.0 / (255.0 * tf.constant(STD_BGR))  # [3] per output channel (B, G, R)
    swap = tf.constant([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # RGB -> BGR
    if contrast is None:
        matrix, grey = swap @ colour, 0.0
    else:
        grey = (1.0 - contrast) * tf.tensordot(tf.constant(_LUMA), tf.linalg.matvec(colour, mean_rgb), 1)
        matrix = contrast * (swap @ colour)
    matrix = matrix * scale[:, None]  # [3 out (B, G, R), 3 in (R, G, B)]
    offset = grey * scale - tf.constant(MEAN_BGR) / tf.constant(STD_BGR)  # [3]
    return tf.concat([tf.transpose(matrix), offset[None]], 0)


def normalize_bgr(image, colour=None, contrast=None, mean_rgb=None):
    """RGB ``[h, w, 3]`` (uint8 or float, 0..255) -> float32 normalised B, G, R ``[h, w, 3]``.

    ``colour_transform`` applied as a single 1x1 convolution; with ``contrast`` the mean
    grey is taken over ``image`` unless ``mean_rgb`` ``[3]`` gives it.
    """
    pixels = tf.cast(image, tf.float32)
    if contrast is not None and mean_rgb is None:
        mean_rgb = tf.reduce_mean(pixels, [0, 1])  # [3]
    transform = colour_transform(colour, contrast, mean_rgb)
    out = tf.nn.conv2d(pixels[None], transform[None, None, :3], 1, "VALID")  # [1, h, w, 3]
    return tf.nn.bias_add(out, transform[3])[0]


@tf.function(jit_compile=True)  # XLA fuses the whole map into one pass (an einsum is 4x slower on a CPU)
def normalize_batch(images, transform, content):
    """A training batch's model input: float32 normalised B, G, R ``[B, S, S, 3]``, 0 outside the content.

    Args:
      images: uint8 ``[B, S, S, 3]`` RGB (``place_crop``).
      transform: float32 ``[B, 4, 3]``, each image's ``colour_transform``.
      content: int32 ``[B, 4]`` (top, left, height, width) of each image's pixels; the rest
        is padding, which stays 0 (the mean colour) whatever the jitter.
    """
    pixels = tf.cast(images, tf.float32)
    out = transform[:, 3][:, None, None, :]  # [B, 1, 1, 3] offset, then + x_c * row c of the matrix
    for c in range(3):
        out = out + pixels[..., c:c + 1] * transform[:, c][:, None, None, :]
    return tf.where(content_mask(content, tf.shape(images)[1]), out, 0.0)


def content_mask(content, size):
    """bool ``[B, S, S, 1]``: True inside each image's content box ``[B, 4]`` (top, left, height, width)."""
    positions = tf.range(size)[None]  # [1, S]
    top, left, height, width = tf.unstack(content, 4, axis=1)  # [B] each
    rows = (positions >= top[:, None]) & (positions < (top + height)[:, None])  # [B, S]
    cols = (positions >= left[:, None]) & (positions < (left + width)[:, None])
    return rows[:, :, None, None] & cols[:, None, :, None]


def model_input(features: dict):
    """The model's input from a batch's ``features``: ``image`` itself when it is float
    (evaluation batches, custom datasets), ``normalize_batch`` of it when it is a training
    batch's uint8 pixels."""
    image = features["image"]
    if image.dtype != tf.uint8:
        return image
    return normalize_batch(image, features["colour_transform"], features["content"])
