"""A YOLO dataset (``data.yaml`` + images + labels) -> a COCO-format dict (``prepare yolo``).

The dict goes through ``coco_json.validate_coco`` and the COCO writer, like ``prepare voc``.
The layout is Ultralytics':

- ``data.yaml``: ``path`` (dataset root, relative to the yaml's folder; default that
  folder), one key per split (``train``, ``val``, ``test``) naming an image folder, a
  ``.txt`` list of image paths, or a list of those (relative to the root), and ``names``
  as a list or as ``{index: name}``.
- Each image ``.../images/.../NAME.EXT`` has its labels in ``.../labels/.../NAME.txt``
  (the last ``/images/`` of the path becomes ``/labels/``), one object per line:
  ``class cx cy w h``, the centre and size as shares of the image's width and height.

Conversion (``yolo_to_coco``):

- Category ids are ``index + 1``; class index ``k`` must be one of ``names`` (else a
  DataError naming the label file and line).
- Images are those of the split with an image extension (folders are not searched
  below their top level), sorted by path; image ids are 1..N in that order.
- An image without a label file (or with an empty one) is a negative.
- Boxes become pixels with the image's size read from its header (EXIF orientation is
  not applied, as in ``prepare coco``). An image whose header cannot be read keeps no
  boxes here; the writer then reports it as bad (``--skip-bad`` leaves it out).
"""
from __future__ import annotations

import math

import yaml
from PIL import Image

from centernet_core import storage
from centernet_core.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_data_yaml(data_yaml: str) -> tuple[str, dict, list[str]]:
    """``(root, parsed yaml, class names by index)``; names given as a dict may skip indices ("")."""
    if not storage.exists(data_yaml):
        raise DataError(f"dataset yaml not found: {data_yaml}")
    where = storage.basename(data_yaml)
    try:
        data = yaml.safe_load(storage.read_text(data_yaml))
    except yaml.YAMLError as e:
        raise DataError(f"{where}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DataError(f"{where}: expected a YOLO data.yaml with 'names' and the split folders")
    names = data["names"]
    if isinstance(names, dict):
        if not all(isinstance(k, int) and k >= 0 for k in names):
            raise DataError(f"{where}: 'names' keys must be class indices 0, 1, ..., got {list(names)[:8]}")
        names = [str(names.get(k, "")) for k in range(max(names) + 1)] if names else []
    if not isinstance(names, list) or not any(str(n) for n in names):
        raise DataError(f"{where}: 'names' must be a non-empty list of class names or {{index: name}}")
    here = storage.dirname(data_yaml)
    root = str(data.get("path") or "")
    if "://" not in root and not root.startswith("/"):
        root = storage.join(here, root) if root else (here or ".")
    return root, data, [str(n) for n in names]


def _split_images(root: str, data: dict, split: str, where: str) -> list[str]:
    """Image paths of ``split``, sorted."""
    entries = data.get(split)
    if not entries:
        splits = [k for k in ("train", "val", "test") if data.get(k)]
        raise ConfigError(f"{where} has no '{split}' split; pass --split with one of: {', '.join(splits) or 'none'}")
    paths = []
    for entry in entries if isinstance(entries, list) else [entries]:
        entry = str(entry)
        full = entry if "://" in entry or entry.startswith("/") else storage.join(root, entry)
        if entry.endswith(".txt"):
            if not storage.exists(full):
                raise DataError(f"{where}: image list {full} of split '{split}' not found")
            lines = [line.strip() for line in storage.read_text(full).splitlines() if line.strip()]
            paths += [p if "://" in p or p.startswith("/") else storage.join(root, p) for p in lines]
        elif storage.isdir(full):
            paths += [p for p in storage.glob(storage.join(full, "*")) if p.lower().endswith(IMAGE_EXTENSIONS)]
        else:
            raise DataError(f"{where}: split '{split}' names {full}, which is neither a folder nor a .txt list")
    return sorted(paths)


def label_path(image_path: str) -> str:
    """``.../images/a/b.jpg`` -> ``.../labels/a/b.txt`` (Ultralytics' rule)."""
    head, sep, tail = image_path.rpartition("/images/")
    path = head + "/labels/" + tail if sep else image_path
    return path.rsplit(".", 1)[0] + ".txt"


def _labels(path: str, names: list[str]) -> list[tuple[int, float, float, float, float]]:
    """``[(class index, cx, cy, w, h), ...]`` of one label file; none when it is missing."""
    if not storage.exists(path):
        return []
    out = []
    for n, line in enumerate(storage.read_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        at = f"{path}:{n}"
        if len(parts) != 5:
            raise DataError(f"{at}: expected 5 values 'class cx cy w h', got {len(parts)}; fix the line "
                            "(segment polygons are not read)")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise DataError(f"{at}: expected numbers 'class cx cy w h', got {line.strip()!r}") from None
        k = values[0]
        if k != int(k) or not 0 <= k < len(names) or not names[int(k)]:
            raise DataError(f"{at}: class index {parts[0]} is not in the names of data.yaml (0..{len(names) - 1}); "
                            "fix the label or add the class to 'names'")
        if not all(math.isfinite(v) for v in values[1:]) or values[3] < 0 or values[4] < 0:
            raise DataError(f"{at}: cx cy w h must be finite with w, h >= 0, got {' '.join(parts[1:])}")
        out.append((int(k), *values[1:]))
    return out


def _image_hw(path: str) -> tuple[int, int] | None:
    """(height, width) from the image header, or None when it cannot be read."""
    try:
        with storage.open_file(path, "rb") as f:
            width, height = Image.open(f).size
    except Exception:  # missing, not an image: the writer reports it with its reason
        return None
    return height, width


def yolo_to_coco(data_yaml: str, split: str) -> tuple[str, dict]:
    """``(images root, COCO instances dict)`` of one split of a YOLO dataset.

    ``file_name`` values are relative to the root where the images lie below it.
    Raises DataError / ConfigError with one line naming the file (and line) at fault.
    """
    root, data, names = read_data_yaml(data_yaml)
    where = storage.basename(data_yaml)
    paths = _split_images(root, data, split, where)
    if not paths:
        raise DataError(f"{where}: split '{split}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    prefix = root.rstrip("/") + "/"
    images, annotations = [], []
    for image_id, path in enumerate(paths, 1):
        labels = _labels(label_path(path), names)
        image = {"id": image_id, "file_name": path[len(prefix):] if path.startswith(prefix) else path}
        images.append(image)
        hw = _image_hw(path) if labels else None
        if hw is None:
            continue
        image["height"], image["width"] = h, w = hw
        for k, cx, cy, bw, bh in labels:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": k + 1,
                                "bbox": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h], "iscrowd": 0})
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(names) if n]
    return root, {"images": images, "annotations": annotations, "categories": categories}
