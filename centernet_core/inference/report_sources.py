"""What ``centernet eval --report`` shows beside the numbers: the original pictures and heatmaps.

``record_pictures(pattern)`` reads the encoded images of the evaluation records by COCO image
id (``image/source_id``), decoded only when the report asks for one. ``model_heatmaps``
runs a model on one picture, letterboxed as the serving graph does, and returns the class's
heatmap probabilities over the picture's own pixels.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image


def record_pictures(pattern: str) -> Callable[[int], np.ndarray | None]:
    """``image_id -> RGB uint8 [H, W, 3]`` (None for an id the records do not hold)."""
    import tensorflow as tf
    from centernet_core import storage

    keys = {"image/source_id": tf.io.FixedLenFeature([], tf.string),
            "image/encoded": tf.io.FixedLenFeature([], tf.string)}
    encoded = {}
    for record in tf.data.TFRecordDataset(sorted(storage.glob(pattern))):
        ex = tf.io.parse_single_example(record, keys)
        encoded[int(ex["image/source_id"].numpy())] = ex["image/encoded"].numpy()

    def load(image_id: int) -> np.ndarray | None:
        data = encoded.get(int(image_id))
        return None if data is None else np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.uint8)
    return load


def model_heatmaps(model, cfg, categories, pictures: Callable[[int], np.ndarray | None]):
    """``(image_id, category_id) -> [h, w]`` class probabilities over the picture's content."""
    import tensorflow as tf
    from centernet_core.inference.serving import letterbox
    from centernet_core.strides import OUTPUT_STRIDE

    index = {int(c["id"]): int(c["index"]) for c in categories}
    size = cfg.model.input_size

    def heatmap(image_id: int, category_id: int) -> np.ndarray | None:
        rgb = pictures(image_id)
        if rgb is None or int(category_id) not in index:
            return None
        images, scale, _ = letterbox(tf.constant(rgb[None]), size)
        heat = tf.sigmoid(tf.cast(model(images, training=False)[-1]["heatmap"], tf.float32))[0]
        h = max(1, int(round(rgb.shape[0] * float(scale[0]) / OUTPUT_STRIDE)))
        w = max(1, int(round(rgb.shape[1] * float(scale[0]) / OUTPUT_STRIDE)))
        return heat[:h, :w, index[int(category_id)]].numpy()
    return heatmap
