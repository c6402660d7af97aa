"""``centernet prepare shapes``: a deterministic synthetic COCO-format detection set.

Three classes (COCO ids 1 circle, 2 square, 3 triangle; contiguous indices 0, 1, 2).
Each image has a two-colour gradient background with noise and 1-5 filled shapes of
random colour (kept clearly apart from the background), long side 10-40 % of the
image's short side (12-50 px at 128 px), aspect ratio 0.6-1.6 (circles become
ellipses, squares rectangles, triangles lean), overlapping a little (IoU < 0.2, at most
40 % of either shape covered) so every shape stays visible.

``make_shapes_dataset(output_dir, ...)`` writes::

    DIR/images/{train,val}/000001.jpg ...   JPEG images
    DIR/instances_{train,val}.json          COCO instances (eval uses the val json as GT)
    DIR/{train,val}-0000i-of-0000N.tfrecord through the same code as `prepare coco`
    DIR/{train,val}.meta.json, DIR/{train,val}.report.json

With ``keypoints=True`` the set is ``shapes_keypoints``' kites instead (one category with
four named keypoints, for the keypoints task).

Image i of a split is drawn from its own generator seeded by (seed, split, i), so the
set is identical for equal arguments, however it is produced.
"""
from __future__ import annotations

import io
import json
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from centernet_core import storage
from centernet_core.data.coco_writer import write_coco_tfrecords
from centernet_core.errors import ConfigError

CATEGORIES = ({"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"})
_SPLIT_CODE = {"train": 1, "val": 2}


def parse_size(text: str) -> tuple[int, int]:
    """``"128"`` -> (128, 128); ``"640x480"`` (width x height) -> (480, 640). Returns (height, width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 32:
        raise ConfigError(f"--size {text!r}: expected S or WxH with sides >= 32, e.g. --size 128 or --size 640x480")
    return parts[1], parts[0]


def _background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """uint8 ``[h, w, 3]`` gradient between two random colours plus noise."""
    h, w = hw
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)  # [h, w] in [0, 1]
    image = c0 + (c1 - c0) * t[..., None] + rng.normal(0, 6, (h, w, 1))  # [h, w, 3]
    return np.clip(image, 0, 255).astype(np.uint8)


def _colour_apart(rng: np.random.Generator, background_mean: np.ndarray) -> tuple[int, int, int]:
    for _ in range(50):
        c = rng.integers(0, 256, 3)
        if np.abs(c - background_mean).sum() > 180:
            break
    return tuple(int(v) for v in c)


def _overlaps_too_much(box, placed) -> bool:
    x, y, w, h = box
    for px, py, pw, ph in placed:
        iw = max(0, min(x + w, px + pw) - max(x, px))
        ih = max(0, min(y + h, py + ph) - max(y, py))
        inter = iw * ih
        if inter / (w * h + pw * ph - inter) >= 0.2 or inter >= 0.4 * min(w * h, pw * ph):
            return True
    return False


def draw_image(rng: np.random.Generator, hw: tuple[int, int]) -> tuple[Image.Image, list[dict]]:
    """One picture and its objects ``[{"bbox": [x, y, w, h], "category_id", "area"}]``."""
    h, w = hw
    pixels = _background(rng, hw)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    mean = pixels.reshape(-1, 3).mean(0)
    placed, objects = [], []
    for _ in range(int(rng.integers(1, 6))):
        for _attempt in range(20):
            long_side = rng.uniform(0.10, 0.40) * min(h, w)
            aspect = rng.uniform(0.6, 1.6)  # height / width
            bh, bw = (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)
            bh, bw = max(int(round(bh)), 4), max(int(round(bw)), 4)
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            if not _overlaps_too_much((x, y, bw, bh), placed):
                break
        else:
            continue
        category = int(rng.integers(1, 4))
        colour = _colour_apart(rng, mean)
        x1, y1 = x + bw - 1, y + bh - 1  # Pillow's shapes include their end pixels
        if category == 1:
            draw.ellipse([x, y, x1, y1], fill=colour)
            area = np.pi / 4 * bw * bh
        elif category == 2:
            draw.rectangle([x, y, x1, y1], fill=colour)
            area = float(bw * bh)
        else:
            apex_x = x + rng.uniform(0, 1) * (bw - 1)
            base_y, apex_y = (y1, y) if rng.uniform() < 0.5 else (y, y1)
            draw.polygon([(x, base_y), (x1, base_y), (apex_x, apex_y)], fill=colour)
            area = bw * bh / 2.0
        placed.append((x, y, bw, bh))
        objects.append({"bbox": [float(x), float(y), float(bw), float(bh)], "category_id": category,
                        "area": round(float(area), 2)})
    return image, objects


def write_split(output_dir: str, split: str, count: int, hw: tuple[int, int], seed: int,
                keypoints: bool = False) -> str:
    """Draw ``count`` images of ``split`` as JPEGs and write ``instances_{split}.json``; return its path."""
    from centernet_core.data import shapes_keypoints
    draw, categories = (shapes_keypoints.draw_image, shapes_keypoints.CATEGORIES) if keypoints else (
        draw_image, CATEGORIES)
    image_dir = storage.join(output_dir, "images", split)
    storage.makedirs(image_dir)
    images, annotations = [], []
    for i in range(1, count + 1):
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], i])
        image, objects = draw(rng, hw)
        name = f"{i:06d}.jpg"
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=92)
        storage.write_bytes_atomic(storage.join(image_dir, name), buf.getvalue())
        images.append({"id": i, "file_name": name, "height": hw[0], "width": hw[1]})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0, **obj})
    coco = {"info": {"description": f"centernet synthetic shapes, {split}, seed {seed}"},
            "images": images, "annotations": annotations, "categories": [dict(c) for c in categories]}
    path = storage.join(output_dir, f"instances_{split}.json")
    storage.write_text_atomic(path, json.dumps(coco))
    return path


def make_shapes_dataset(output_dir: str, train: int = 600, val: int = 100, size: str = "128", seed: int = 0,
                        workers: int = 1, shards: int = 0,
                        on_progress: Callable[[str, int, int], None] | None = None,
                        keypoints: bool = False) -> dict:
    """Write the synthetic set and its TFRecords; return ``{split: prepare-coco summary}``.

    ``size`` is ``S`` or ``WxH``; ``on_progress(split, done, total)`` follows the
    TFRecord conversion; ``keypoints`` writes the kite keypoint set (``shapes_keypoints``).
    """
    hw = parse_size(size)
    if train < 1 or val < 0:
        raise ConfigError("--train must be >= 1 and --val >= 0")
    summaries = {}
    for split, count in (("train", train), ("val", val)):
        if count == 0:
            continue
        json_path = write_split(output_dir, split, count, hw, seed, keypoints)
        progress = (lambda d, t, s=split: on_progress(s, d, t)) if on_progress else None
        summaries[split] = write_coco_tfrecords(storage.join(output_dir, "images", split), json_path,
                                                storage.join(output_dir, split), num_shards=shards,
                                                workers=workers, on_progress=progress)
        summaries[split]["annotations_file"] = json_path
    return summaries
