"""One COCO image -> one serialized ``tf.Example`` (runs in worker processes, no TensorFlow).

``convert_image(task)`` reads the file, decodes it fully with Pillow, decides whether the
bytes can pass through (JPEG that is not CMYK, PNG: TensorFlow decodes those, grayscale
with ``channels=3``) or must be re-encoded as JPEG (CMYK JPEG, GIF, BMP, TIFF, WebP, ...),
turns the annotations into normalised boxes in the decoded image and serializes the
example with the TF detection keys (docs/design.md, "Dataset files").

Verification is a full decode (``Image.load``): missing, empty, non-image and truncated
files fail, and so do files whose header and end marker look right but whose data does
not decode (a JPEG without its quantisation tables, say). Like TensorFlow's decoder,
Pillow accepts a JPEG whose scan stops early at an end marker (the rest comes out grey),
so such a file passes here and in training alike.

Box rules (counts returned in ``stats``): boxes are clipped to the decoded image
(``clipped`` counts those that changed); boxes with zero width or height after clipping
are dropped (``dropped_empty``); crowd boxes are kept with ``is_crowd`` 1.

Keypoints (``num_keypoints`` J > 0, a keypoint dataset): every kept object gets J rows of
``image/object/keypoint/{y,x,v}`` (flattened object-major, y and x normalised like the
boxes, v COCO's visibility 0 / 1 / 2); objects without keypoints get v = 0 rows.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from centernet_core import boxes as box_lib
from centernet_core import storage
from centernet_core.data import example_proto as ep


@dataclass(frozen=True)
class ImageTask:
    """What a worker needs for one image; picklable."""
    path: str
    file_name: str
    image_id: int
    json_hw: tuple[int, int] | None
    annotations: tuple  # of (bbox xywh_coco, category index, area or None, is_crowd)
    category_names: tuple[str, ...]  # by contiguous index
    num_keypoints: int = 0  # J: write image/object/keypoint/* (a keypoint dataset)


def _open(data: bytes) -> tuple[str, str, tuple[int, int], bytes, bool]:
    """(format, mode, (height, width), bytes to store, re-encoded?); raises on a bad image."""
    image = Image.open(io.BytesIO(data))
    fmt, mode, (width, height) = image.format, image.mode, image.size
    image.load()  # full decode: raises on truncated or corrupt data
    if (fmt == "JPEG" and mode != "CMYK") or fmt == "PNG":
        return fmt.lower(), mode, (height, width), data, False
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=95)
    return "jpeg", mode, (height, width), out.getvalue(), True


def _boxes(task: ImageTask, hw: tuple[int, int], stats: dict) -> dict:
    """Normalised boxes and their attributes after clipping and dropping empties."""
    if not task.annotations:
        return {"boxes_yxyx_norm": np.zeros((0, 4)), "labels": [], "areas": [], "crowd": []}
    boxes_xywh_coco = np.array([a[0] for a in task.annotations], dtype=np.float64)  # [n, 4]
    boxes_yxyx_abs = box_lib.convert(boxes_xywh_coco, "xywh_coco", "yxyx_abs")
    clipped = box_lib.clip_yxyx_abs(boxes_yxyx_abs, hw)  # [n, 4]
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = np.any(np.abs(clipped - boxes_yxyx_abs) > 1e-9, axis=1)
    stats["dropped_empty"] += int((~keep).sum())
    stats["clipped"] += int((changed & keep).sum())
    kept = [a for a, k in zip(task.annotations, keep) if k]
    box_area = box_lib.area_yxyx(clipped[keep])
    stats["crowd"] += sum(a[3] for a in kept)
    stats["boxes"] += len(kept)
    return {"boxes_yxyx_norm": box_lib.convert(clipped[keep], "yxyx_abs", "yxyx_norm", hw),
            "keypoints": [a[4] if len(a) > 4 else None for a in kept],
            "labels": [a[1] for a in kept],
            "areas": [a[2] if a[2] is not None else float(ba) for a, ba in zip(kept, box_area)],
            "crowd": [a[3] for a in kept]}


def convert_image(task: ImageTask) -> tuple[str, object, dict]:
    """Convert one image.

    Returns ``("ok", serialized Example bytes, stats)`` or ``("bad", reason, stats)``
    where reason is one short line (missing file, unreadable image and why).
    ``stats`` counts: boxes, crowd, clipped, dropped_empty, reencoded, size_mismatch.
    """
    stats = {"boxes": 0, "crowd": 0, "clipped": 0, "dropped_empty": 0, "reencoded": 0, "size_mismatch": 0}
    try:
        data = storage.read_bytes(task.path)
    except Exception as e:  # FileNotFoundError locally, tf NotFoundError remotely
        return "bad", f"cannot read file ({type(e).__name__})", stats
    try:
        fmt, mode, hw, encoded, reencoded = _open(data)
    except Exception as e:  # PIL.UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        return "bad", f"not a decodable image ({type(e).__name__}: {str(e)[:80]})", stats
    stats["reencoded"] = int(reencoded)
    if task.json_hw is not None and tuple(task.json_hw) != hw:
        stats["size_mismatch"] = 1
        stats["json_hw"] = list(task.json_hw)
        stats["decoded_hw"] = list(hw)
    b = _boxes(task, hw, stats)
    y = b["boxes_yxyx_norm"]  # [n, 4]
    features = {
        "image/encoded": ep.bytes_feature([encoded]),
        "image/format": ep.bytes_feature([fmt]),
        "image/height": ep.int64_feature([hw[0]]),
        "image/width": ep.int64_feature([hw[1]]),
        "image/source_id": ep.bytes_feature([str(task.image_id)]),
        "image/filename": ep.bytes_feature([task.file_name]),
        "image/object/bbox/ymin": ep.float_feature(y[:, 0]),
        "image/object/bbox/xmin": ep.float_feature(y[:, 1]),
        "image/object/bbox/ymax": ep.float_feature(y[:, 2]),
        "image/object/bbox/xmax": ep.float_feature(y[:, 3]),
        "image/object/class/label": ep.int64_feature(b["labels"]),
        "image/object/class/text": ep.bytes_feature([task.category_names[i] for i in b["labels"]]),
        "image/object/area": ep.float_feature(b["areas"]),
        "image/object/is_crowd": ep.int64_feature(b["crowd"]),
    }
    if task.num_keypoints:
        features.update(_keypoint_features(b["keypoints"], task.num_keypoints, hw))
    return "ok", ep.serialize_example(features), stats


def _keypoint_features(keypoints: list, num_keypoints: int, hw: tuple[int, int]) -> dict:
    """``image/object/keypoint/{y,x,v}``: J rows per object, normalised y / x, v (0 where absent)."""
    rows = np.zeros((len(keypoints), num_keypoints, 3))  # [n, J, (x, y, v)]
    for i, flat in enumerate(keypoints):
        if flat is not None and len(flat) == 3 * num_keypoints:
            rows[i] = np.asarray(flat, np.float64).reshape(num_keypoints, 3)
    rows = rows.reshape(-1, 3)
    return {"image/object/keypoint/y": ep.float_feature(rows[:, 1] / hw[0]),
            "image/object/keypoint/x": ep.float_feature(rows[:, 0] / hw[1]),
            "image/object/keypoint/v": ep.int64_feature(rows[:, 2].astype(np.int64).tolist())}
