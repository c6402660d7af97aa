"""Pascal VOC XML annotations -> a COCO-format dataset dict (``centernet prepare voc``).

The dict goes through ``coco_json.validate_coco`` and the COCO writer, so VOC data gets
the same checks, quirks handling, records and report as ``prepare coco``. Two layouts:

- a VOC root (``voc_root_files``): ``ROOT/ImageSets/Main/SPLIT.txt`` lists image ids,
  annotations are ``ROOT/Annotations/ID.xml``, images live in ``ROOT/JPEGImages``;
- two folders (``folder_files``): every ``*.xml`` of an annotation folder, by name, with
  the images in an image folder.

Conversion (``voc_to_coco``):

- Coordinates are 1-based pixel indices, both ends inside the box: pixels ``xmin..xmax``
  cover ``[xmin - 1, xmax]`` in COCO's continuous pixels, so
  ``bbox = [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`` (Detectron2's reading).
  Fractional coordinates are taken as they are.
- ``<difficult>1</difficult>`` objects are kept and flagged ``iscrowd`` 1: training skips
  them, evaluation ignores detections on them, as for COCO crowd boxes.
- ``<size>`` gives the json ``height``/``width``; when it is missing or zero the writer
  takes the size from the decoded image. Boxes reaching outside the image are clipped by
  the writer (counted as ``clipped``).
- Image ids are 1..N in list order; ``file_name`` is ``<filename>``, else ``ID.jpg``.
- Categories: ids 1..C in the order of ``classes`` when given (an object of another
  class is an error), else of the sorted class names found.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from centernet_core import storage
from centernet_core.errors import DataError


def voc_root_files(root: str, split: str) -> tuple[str, list[tuple[str, str]]]:
    """``(images_dir, [(xml path, image id), ...])`` of one split of a VOC root."""
    listing = storage.join(root, "ImageSets", "Main", f"{split}.txt")
    if not storage.exists(listing):
        found = [storage.basename(p)[:-4] for p in storage.glob(storage.join(root, "ImageSets", "Main", "*.txt"))]
        raise DataError(f"no split list {listing}; pass --split with one of: {', '.join(found[:12]) or 'none found'} "
                        "(or use --images and --annotations folders)")
    ids = [line.split()[0] for line in storage.read_text(listing).splitlines() if line.strip()]
    return (storage.join(root, "JPEGImages"),
            [(storage.join(root, "Annotations", f"{i}.xml"), i) for i in ids])


def folder_files(annotations_dir: str) -> list[tuple[str, str]]:
    """``[(xml path, stem), ...]`` for every ``*.xml`` in ``annotations_dir``, by name."""
    if not storage.isdir(annotations_dir):
        raise DataError(f"annotation folder not found: {annotations_dir}")
    paths = storage.glob(storage.join(annotations_dir, "*.xml"))
    if not paths:
        raise DataError(f"no .xml files in {annotations_dir}; pass the folder of VOC annotation files")
    return [(p, storage.basename(p)[:-4]) for p in paths]


def _number(obj, tag: str, where: str) -> float:
    node = obj.find(tag)
    try:
        value = float(node.text)
    except (AttributeError, TypeError, ValueError):
        text = None if node is None else node.text
        raise DataError(f"{where}: <{tag}> must be a number, got {text!r}; fix the annotation file") from None
    return value


def _size(tree, where: str) -> tuple[int, int] | None:
    """(height, width) from ``<size>``, or None when missing or zero."""
    size = tree.find("size")
    if size is None or size.find("width") is None or size.find("height") is None:
        return None
    h, w = _number(size, "height", f"{where}: <size>"), _number(size, "width", f"{where}: <size>")
    if h <= 0 or w <= 0:
        return None
    if h != int(h) or w != int(w):
        raise DataError(f"{where}: <size> must be whole pixels, got {h} x {w}")
    return int(h), int(w)


def _objects(tree, where: str) -> list[tuple[str, list[float], int]]:
    """``[(class name, bbox xywh_coco, difficult), ...]`` of one file."""
    out = []
    for k, obj in enumerate(tree.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        at = f"{where}: object {k}" + (f" ({name!r})" if name else "")
        if not name:
            raise DataError(f"{at} has no <name>; give every object its class")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{at} has no <bndbox>; give every object its box")
        x0, y0, x1, y1 = (_number(box, t, at) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:
            raise DataError(f"{at}: max below min (xmin {x0:g}, xmax {x1:g}, ymin {y0:g}, ymax {y1:g}); "
                            "fix the box")
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise DataError(f"{at}: <difficult> must be 0 or 1, got {difficult!r}")
        out.append((name, [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1], int(difficult)))
    return out


def _parse(path: str) -> ET.Element:
    if not storage.exists(path):
        raise DataError(f"annotation file not found: {path}; fix the split list or add the file")
    try:
        return ET.fromstring(storage.read_bytes(path))
    except ET.ParseError as e:
        raise DataError(f"{storage.basename(path)}: not valid XML ({e}); fix or remove the file") from None


def voc_to_coco(files: list[tuple[str, str]], classes: list[str] | None = None) -> dict:
    """A COCO instances dict (images, annotations, categories) from VOC XML files.

    Args:
      files: ``[(xml path, image id stem), ...]`` in image order.
      classes: category order (ids 1..C); None: the sorted class names found.

    Raises DataError naming the file and object for anything unreadable.
    """
    if classes is not None and len(set(classes)) != len(classes):
        raise DataError(f"--classes repeats a name: {', '.join(classes)}")
    images, objects = [], []
    for image_id, (path, stem) in enumerate(files, 1):
        tree, where = _parse(path), storage.basename(path)
        image = {"id": image_id, "file_name": (tree.findtext("filename") or "").strip() or f"{stem}.jpg"}
        hw = _size(tree, where)
        if hw:
            image["height"], image["width"] = hw
        images.append(image)
        for k, (name, bbox, difficult) in enumerate(_objects(tree, where), 1):
            if classes is not None and name not in classes:
                raise DataError(f"{where}: object {k} has class {name!r}, which is not in --classes "
                                f"({', '.join(classes)}); add it there")
            objects.append((image_id, name, bbox, difficult))
    names = classes if classes is not None else sorted({o[1] for o in objects})
    if not names:
        raise DataError("no objects in any annotation file and no --classes given; nothing to learn")
    ids = {n: i for i, n in enumerate(names, 1)}
    annotations = [{"id": k, "image_id": image_id, "category_id": ids[name], "bbox": bbox, "iscrowd": difficult}
                   for k, (image_id, name, bbox, difficult) in enumerate(objects, 1)]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in ids.items()]}
