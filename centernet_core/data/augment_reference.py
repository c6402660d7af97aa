"""The original CenterNet's training augmentation (``data.augmentation: reference``).

Letters: h w the decoded image, S the (square) model input.

Crop: side = one of ``data.crop_scales`` x the long side (the original's
``np.arange(0.6, 1.4, 0.1)``), centre drawn as the original's ``randint(border, size -
border)`` per axis, where ``border`` is 128 halved until ``size - border > border``
(``_get_border``). The window is centred on that pixel (continuous coordinate
``c + 0.5``), so it often cuts the image and shows padding; ``augment.crop_placement``
snaps it to pixels exactly as for the ``inside`` rule, so boxes and targets follow the
same map.

Padding is black: the pixels outside the crop are RGB 0 *before* jitter and
normalisation (the original warps, then jitters, then normalises the whole input), so the
content box covers the whole input and ``normalize_batch`` masks nothing.

Colour (``reference_colour_transform``): the original's ``color_aug``: brightness,
contrast and saturation, each ``alpha = 1 + U(-0.4, 0.4)``, in a random order, then PCA
lighting noise ``eigvec @ (eigval * N(0, 0.1))``. Saturation blends with the grey of the
*un-jittered* image and contrast with the grey mean of the whole (padded) input, as in the
original; every step is affine in the input pixel, so the whole jitter is one
``colour_transform``-shaped ``[4, 3]`` map.
"""
from __future__ import annotations

import itertools

import tensorflow as tf

from centernet_core.pixels import MEAN_BGR, STD_BGR

BORDER = 128
JITTER = 0.4  # alpha = 1 + U(-JITTER, JITTER) for brightness, contrast, saturation
LIGHTING_STD = 0.1
# PCA of COCO pixel colours in B, G, R order on [0, 1] (CornerNet's / the original's values).
EIG_VAL = (0.2141788, 0.01817699, 0.00340571)
EIG_VEC = ((-0.58752847, -0.69563484, 0.41340352),
           (-0.5832747, 0.00994535, -0.81221408),
           (-0.56089297, 0.71832671, 0.41158938))
_LUMA_RGB = (0.299, 0.587, 0.114)  # cv2.COLOR_BGR2GRAY's weights, here for R, G, B
_ORDERS = tuple(itertools.permutations(range(3)))  # 6 orders of (brightness, contrast, saturation)


def border(size):
    """The original's ``_get_border(128, size)`` for int32 ``size`` (any shape): 128 halved
    until ``size - b > b`` (0 for sizes of 1 or 2)."""
    candidates = tf.constant([BORDER >> i for i in range(8)] + [0], tf.int32)  # 128, 64, ..., 1, 0
    fits = tf.cast(size, tf.int32)[..., None] > 2 * candidates  # [..., 9]
    return tf.gather(candidates, tf.argmax(tf.cast(fits, tf.int32), axis=-1, output_type=tf.int32))


def reference_crop_window(u, image_hw, crop_scales):
    """The original's random crop from uniforms ``u`` ``[..., 3]`` in [0, 1).

    ``u[..., 0]`` picks the scale, ``u[..., 1:3]`` the centre pixel (y, x), each uniform
    over the integers ``[border, size - border)``.

    Returns (start float32 ``[..., 2]`` (top, left) in source pixels, side float32 ``[...]``),
    the window ``[start, start + side)`` centred on the centre pixel's middle.
    """
    hw_int = tf.cast(image_hw, tf.int32)  # [2]
    hw = tf.cast(hw_int, tf.float32)
    n = len(crop_scales)
    pick = tf.minimum(tf.cast(u[..., 0] * n, tf.int32), n - 1)
    side = tf.gather(tf.constant(crop_scales, tf.float32), pick) * tf.reduce_max(hw)
    b = tf.cast(border(hw_int), tf.float32)  # [2]
    centre = b + tf.floor(u[..., 1:3] * (hw - 2.0 * b))  # integer pixel index in [b, size - b)
    return centre + 0.5 - side[..., None] / 2.0, side


def region_mean_rgb(region):
    """float32 ``[3]``: the mean colour of uint8 ``region`` ``[h, w, 3]`` from about 32 x 32 pixels."""
    step = tf.maximum(tf.shape(region)[:2] // 32, 1)
    return tf.reduce_mean(tf.cast(region[::step[0], ::step[1]], tf.float32), [0, 1])


def reference_colour_transform(seed, mean_rgb, jitter: bool = True):
    """The original's colour augmentation + channel swap + normalisation: float32 ``[4, 3]``.

    Same convention as ``augment.colour_transform``: an RGB pixel ``x`` (0..255) becomes
    ``x @ T[:3] + T[3]`` (normalised B, G, R). ``mean_rgb`` ``[3]``: the mean colour of the
    whole S x S input, black padding included (the contrast step's grey mean). ``seed``
    ``[2]``: the draws (order, three alphas, three lighting normals). ``jitter=False``:
    normalisation only.

    Jittered pixel ``= M x + o``; each step ``alpha`` maps ``(M, o)`` to
    ``(alpha M + (1 - alpha) K, alpha o + (1 - alpha) k)`` with ``K, k`` = 0, 0 (brightness),
    0, grey mean (contrast), ``1 L^T``, 0 (saturation: the grey ``L^T x`` of the original pixel).
    """
    eye = tf.eye(3)
    matrix, offset = eye, tf.zeros([3])
    if jitter:
        u = tf.random.stateless_uniform([4], seed)
        normal = tf.random.stateless_normal([3], tf.random.experimental.stateless_fold_in(seed, 1))
        luma = tf.constant(_LUMA_RGB)
        grey_mean = tf.tensordot(luma, mean_rgb, 1)
        targets_m = tf.stack([tf.zeros([3, 3]), tf.zeros([3, 3]), tf.ones([3, 1]) * luma[None]])  # [3 ops, 3, 3]
        targets_o = tf.stack([tf.zeros([3]), tf.fill([3], grey_mean), tf.zeros([3])])  # [3 ops, 3]
        alphas = 1.0 + JITTER * (2.0 * u[:3] - 1.0)  # [3], per op
        order = tf.gather(tf.constant(_ORDERS, tf.int32), tf.minimum(tf.cast(u[3] * 6, tf.int32), 5))
        for step in range(3):
            op = order[step]
            a = alphas[op]
            matrix = a * matrix + (1.0 - a) * targets_m[op]
            offset = a * offset + (1.0 - a) * targets_o[op]
        light_bgr = tf.linalg.matvec(tf.constant(EIG_VEC), tf.constant(EIG_VAL) * LIGHTING_STD * normal)
        offset = offset + 255.0 * tf.reverse(light_bgr, [0])  # B, G, R on [0, 1] -> R, G, B on 0..255
    scale = 1.0 / (255.0 * tf.constant(STD_BGR))  # [3] per output channel (B, G, R)
    swap = tf.constant([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # RGB -> BGR
    out_matrix = (swap @ matrix) * scale[:, None]  # [3 out (B, G, R), 3 in (R, G, B)]
    out_offset = tf.linalg.matvec(swap, offset) * scale - tf.constant(MEAN_BGR) / tf.constant(STD_BGR)
    return tf.concat([tf.transpose(out_matrix), out_offset[None]], 0)
