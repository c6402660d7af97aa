"""The one pixel vocabulary: channel order, normalisation constants, uint8 <-> model input.

Images arrive as RGB, 0..255 (decoded JPEG / PNG, uint8 or float). The model's input is
float32 B, G, R, each channel normalised as ``(x / 255 - MEAN_BGR) / STD_BGR``: the
original loads BGR with OpenCV, and pretrained weights (imported or trained here) expect
exactly this (REFERENCE.md). Padding outside an image's content is 0 after normalisation,
the mean colour.

Everything that turns pixels into model input or back (the training pipeline's colour
transform, the serving graph, pictures of eval batches, Keras-application trunks' own
preprocessing) takes the constants from here.
"""
from __future__ import annotations

import numpy as np

# Per-channel mean and std on [0, 1], in B, G, R order.
MEAN_BGR = (0.408, 0.447, 0.470)
STD_BGR = (0.289, 0.274, 0.278)


def normalize_rgb(images):
    """RGB ``[..., 3]`` in 0..255 (uint8 or float) -> normalised B, G, R float32 (graph-safe)."""
    import tensorflow as tf

    bgr = tf.reverse(tf.cast(images, tf.float32) / 255.0, axis=[-1])
    return (bgr - tf.constant(MEAN_BGR)) / tf.constant(STD_BGR)


def to_rgb_uint8(images) -> np.ndarray:
    """Model input (normalised B, G, R ``[..., 3]``) back to RGB uint8 (NumPy)."""
    bgr = np.asarray(images, np.float32) * np.asarray(STD_BGR, np.float32) + np.asarray(MEAN_BGR, np.float32)
    return np.clip(bgr[..., ::-1] * 255.0 + 0.5, 0, 255).astype(np.uint8)
