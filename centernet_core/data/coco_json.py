"""Read and validate a COCO instances json before anything is written.

``load_coco(path)`` returns a ``CocoIndex``: images in file order, each with its
annotations in file order, and the category table ordered by COCO id with contiguous
training indices 0..C-1 (COCO ids need not be contiguous: COCO's own run 1..90 with
gaps). Any structural problem raises one ``DataError`` line naming the offending entry,
e.g. ``instances.json: annotations[17] (id 230): bbox must be 4 numbers [x, y, width,
height], got [1, 2, 3]``. No TensorFlow, no image files are touched here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from centernet_core import storage
from centernet_core.errors import DataError


@dataclass(frozen=True)
class Category:
    index: int  # contiguous training index (image/object/class/label)
    id: int  # original COCO category id
    name: str
    # A keypoint category (COCO person_keypoints): its joint names, skeleton (1-based pairs,
    # COCO's) and optional OKS sigmas (a centernet extension key, ``sigmas``); empty otherwise.
    keypoints: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    sigmas: tuple[float, ...] = ()


@dataclass
class CocoImage:
    id: int
    file_name: str
    json_hw: tuple[int, int] | None  # (height, width) stated in the json, if any
    # One tuple per annotation, file order: (bbox xywh_coco, category index, area or None, is_crowd,
    # keypoints: the flat COCO [x, y, v] * J list of a keypoint category, else None).
    annotations: list[tuple[list[float], int, float | None, int, list[float] | None]] = field(default_factory=list)


@dataclass
class CocoIndex:
    images: list[CocoImage]
    categories: list[Category]

    @property
    def num_annotations(self) -> int:
        return sum(len(im.annotations) for im in self.images)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _entry(section: str, i: int, item) -> str:
    ident = f" (id {item['id']})" if isinstance(item, dict) and "id" in item else ""
    return f"{section}[{i}]{ident}"


def _require(source: str, section: str, i: int, item, key: str, check, what: str) -> None:
    where = _entry(section, i, item)
    if not isinstance(item, dict):
        raise DataError(f"{source}: {where} must be an object, got {item!r:.80}")
    if key not in item:
        raise DataError(f"{source}: {where} has no '{key}' key ({what} required)")
    if not check(item[key]):
        raise DataError(f"{source}: {where}: '{key}' must be {what}, got {item[key]!r:.80}")


def _categories(source: str, raw: list) -> tuple[list[Category], dict[int, int]]:
    seen: dict[int, int] = {}
    for i, c in enumerate(raw):
        _require(source, "categories", i, c, "id", _is_int, "an integer")
        _require(source, "categories", i, c, "name", lambda v: isinstance(v, str), "a string")
        if c["id"] in seen:
            raise DataError(f"{source}: categories[{i}] repeats category id {c['id']} of categories[{seen[c['id']]}]")
        seen[c["id"]] = i
    if not raw:
        raise DataError(f"{source}: 'categories' is empty; a detection dataset needs at least one category")
    for i, c in enumerate(raw):
        _keypoint_layout(source, i, c)
    ordered = sorted(raw, key=lambda c: c["id"])
    cats = [Category(index=k, id=c["id"], name=c["name"], **_keypoint_layout(source, 0, c))
            for k, c in enumerate(ordered)]
    return cats, {c.id: c.index for c in cats}


def _keypoint_layout(source: str, i: int, c: dict) -> dict:
    """A category's ``keypoints`` names, ``skeleton`` and ``sigmas``, checked (all optional)."""
    names = c.get("keypoints") or []
    where = _entry("categories", i, c)
    if not (isinstance(names, list) and all(isinstance(n, str) and n for n in names)) or len(set(names)) < len(names):
        raise DataError(f"{source}: {where}: 'keypoints' must be a list of distinct names, got {names!r:.80}")
    skeleton = c.get("skeleton") or []
    if not (isinstance(skeleton, list) and all(isinstance(e, list) and len(e) == 2 and all(
            _is_int(v) and 1 <= v <= len(names) for v in e) for e in skeleton)):
        raise DataError(f"{source}: {where}: 'skeleton' must be pairs of 1-based keypoint numbers "
                        f"(1..{len(names)}), got {skeleton!r:.80}")
    sigmas = c.get("sigmas") or []
    if sigmas and not (isinstance(sigmas, list) and len(sigmas) == len(names)
                       and all(_is_number(s) and s > 0 for s in sigmas)):
        raise DataError(f"{source}: {where}: 'sigmas' must be {len(names)} positive numbers, one per keypoint")
    return {"keypoints": tuple(names), "skeleton": tuple(tuple(e) for e in skeleton),
            "sigmas": tuple(float(s) for s in sigmas)}


def _images(source: str, raw: list) -> tuple[list[CocoImage], dict[int, int]]:
    images, where = [], {}
    for i, im in enumerate(raw):
        _require(source, "images", i, im, "id", _is_int, "an integer")
        _require(source, "images", i, im, "file_name", lambda v: isinstance(v, str) and v, "a non-empty string")
        if im["id"] in where:
            raise DataError(f"{source}: images[{i}] repeats image id {im['id']} of images[{where[im['id']]}] "
                            f"({im['file_name']!r})")
        for key in ("height", "width"):
            if key in im and not (_is_int(im[key]) and im[key] > 0):
                raise DataError(f"{source}: {_entry('images', i, im)}: '{key}' must be a positive integer, "
                                f"got {im[key]!r}")
        hw = (im["height"], im["width"]) if "height" in im and "width" in im else None
        where[im["id"]] = i
        images.append(CocoImage(id=im["id"], file_name=im["file_name"], json_hw=hw))
    return images, where


def validate_coco(data, source: str = "annotations") -> CocoIndex:
    """Check a parsed COCO instances dict and index it; raise DataError at the first problem."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: expected a COCO json object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{source}: missing top-level key '{key}' (a COCO instances file has images, "
                            "annotations and categories)")
        if not isinstance(data[key], list):
            raise DataError(f"{source}: '{key}' must be a list, got {type(data[key]).__name__}")
    categories, cat_index = _categories(source, data["categories"])
    images, image_pos = _images(source, data["images"])
    for i, a in enumerate(data["annotations"]):
        _require(source, "annotations", i, a, "image_id", _is_int, "an integer")
        _require(source, "annotations", i, a, "category_id", _is_int, "an integer")
        _require(source, "annotations", i, a, "bbox",
                 lambda v: isinstance(v, list) and len(v) == 4 and all(_is_number(x) for x in v),
                 "4 numbers [x, y, width, height]")
        where = _entry("annotations", i, a)
        if a["image_id"] not in image_pos:
            raise DataError(f"{source}: {where} refers to image_id {a['image_id']}, which is not in 'images'")
        if a["category_id"] not in cat_index:
            raise DataError(f"{source}: {where} refers to category_id {a['category_id']}, which is not in "
                            f"'categories' (ids: {', '.join(str(c.id) for c in categories[:20])})")
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1, True, False):
            raise DataError(f"{source}: {where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
        area = a.get("area")
        if area is not None and not _is_number(area):
            raise DataError(f"{source}: {where}: 'area' must be a number, got {area!r:.40}")
        joints = len(categories[cat_index[a["category_id"]]].keypoints)
        keypoints = a.get("keypoints") if joints else None
        if keypoints is not None and not (isinstance(keypoints, list) and len(keypoints) == 3 * joints
                                          and all(_is_number(v) for v in keypoints)):
            raise DataError(f"{source}: {where}: 'keypoints' must be {3 * joints} numbers (x, y, v per "
                            f"keypoint of its category), got {keypoints!r:.60}")
        images[image_pos[a["image_id"]]].annotations.append(
            ([float(x) for x in a["bbox"]], cat_index[a["category_id"]],
             None if area is None else float(area), int(crowd),
             None if keypoints is None else [float(v) for v in keypoints]))
    return CocoIndex(images=images, categories=categories)


def load_coco(path: str) -> CocoIndex:
    """Read ``path`` (any storage path), parse and validate it."""
    if not storage.exists(path):
        raise DataError(f"annotations file not found: {path}")
    try:
        data = json.loads(storage.read_text(path))
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None
    return validate_coco(data, source=storage.basename(path))
