"""What a written dataset holds, and what in it will hurt training (``centernet prepare check``).

Two halves:

- Statistics, gathered while the writer works (``objects_of_example`` runs in its worker
  on each serialized record, ``DatasetStats`` adds them up in record order) and stored as
  ``stats`` in ``PREFIX.meta.json``. For a dataset written before that existed,
  ``load_stats`` re-reads the shards once, parsing only the small box fields.
- ``check_dataset(meta, input_size, max_objects)``: pure; returns class rows, summary
  figures and findings (``("error" | "warning" | "info", text)``) with concrete
  suggestions. The CLI only renders them.

``stats`` (all counts over the records as written, after clipping and dropping):

- ``classes``: per training index ``{"boxes", "crowd", "images"}``; ``boxes`` excludes
  crowd/difficult boxes (training skips those), ``images`` counts images holding one.
- ``boxes_per_image``: ``{"n": images with n boxes}``, crowd included (evaluation reads
  every box and ``data.max_objects`` bounds them all).
- ``most_boxes``: the ``MOST_LISTED`` images with the most boxes, most first.
- ``object_sizes``: non-crowd boxes by ``floor(SIZE_BINS * log2(r))`` where
  ``r = sqrt(box height * box width) / max(image height, image width)`` (in pixels). The
  pipeline scales the long side to ``S``, so a box spans ``r * S / OUTPUT_STRIDE``
  output cells. Counts below a size are exact when that size is a bin edge (``S`` a
  power of two, whole octaves of cells), else interpolated inside one 1/32-octave bin.
"""
from __future__ import annotations

import heapq
import math
import struct

from centernet_core.strides import OUTPUT_STRIDE

SIZE_BINS = 32  # object-size histogram bins per octave
MOST_LISTED = 10
SUBCELL_WARN = 0.05  # warn when this share of objects is below one output cell
IMBALANCE_WARN = 10.0  # warn when the most common class has this many times the boxes of the rarest
_KEYS = {b"image/height", b"image/width", b"image/filename", b"image/source_id", b"image/object/bbox/ymin",
         b"image/object/bbox/xmin", b"image/object/bbox/ymax", b"image/object/bbox/xmax",
         b"image/object/class/label", b"image/object/is_crowd"}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes, start: int, end: int):
    """``(field number, wire type, value)`` of one message; length-delimited values as (start, end)."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 2:
            n, i = _varint(buf, i)
            yield key >> 3, wire, (i, i + n)
            i += n
        elif wire == 0:
            value, i = _varint(buf, i)
            yield key >> 3, wire, value
        else:  # 5: fixed32 (an unpacked float), 1: fixed64
            width = 4 if wire == 5 else 8
            yield key >> 3, wire, buf[i:i + width]
            i += width


def _feature_values(buf: bytes, span: tuple[int, int]) -> list:
    """The values of one serialized ``Feature`` (bytes, float32 or int64 list; packed or not)."""
    out = []
    for kind, _, (s, e) in _fields(buf, *span):
        for _, wire, v in _fields(buf, s, e):
            if kind == 1:
                out.append(buf[v[0]:v[1]])
            elif kind == 2:
                out += struct.unpack(f"<{(v[1] - v[0]) // 4}f", buf[v[0]:v[1]]) if wire == 2 else \
                    struct.unpack("<f", v)
            elif wire == 2:
                i = v[0]
                while i < v[1]:
                    n, i = _varint(buf, i)
                    out.append(n)
            else:
                out.append(v)
    return out


def parse_box_fields(raw: bytes) -> dict:
    """The box-related features of a serialized ``tf.train.Example`` (docs/design.md keys).

    Returns ``{key: list}`` for the keys in ``_KEYS`` present in the record, skipping the
    image bytes without copying them. Pure Python: runs in the writer's workers.
    """
    out = {}
    for _, _, (s, e) in _fields(raw, 0, len(raw)):  # Example.features
        for _, _, (es, ee) in _fields(raw, s, e):  # Features.feature map entries
            key, value = None, None
            for number, _, span in _fields(raw, es, ee):
                if number == 1:
                    key = raw[span[0]:span[1]]
                else:
                    value = span
            if key in _KEYS and value is not None:
                out[key.decode()] = _feature_values(raw, value)
    return out


def objects_of_example(raw: bytes) -> tuple[list[int], list[int], list[int]]:
    """``(labels, is_crowd, size bins)`` of one record's boxes (size bin per ``object_sizes``)."""
    f = parse_box_fields(raw)
    h, w = f["image/height"][0], f["image/width"][0]
    labels, crowd = f.get("image/object/class/label", []), f.get("image/object/is_crowd", [])
    bins = []
    for y0, x0, y1, x1 in zip(*(f.get(f"image/object/bbox/{k}", []) for k in ("ymin", "xmin", "ymax", "xmax"))):
        r = math.sqrt(max((y1 - y0) * h * (x1 - x0) * w, 1e-12)) / max(h, w)
        bins.append(math.floor(SIZE_BINS * math.log2(r)))
    return list(labels), list(crowd) or [0] * len(labels), bins


class DatasetStats:
    """Adds up ``objects_of_example`` results image by image into the ``stats`` dict."""

    def __init__(self, num_classes: int):
        self.classes = [{"boxes": 0, "crowd": 0, "images": 0} for _ in range(num_classes)]
        self.per_image: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self._most: list[tuple[int, int, str, str]] = []  # heap of (boxes, -order, file_name, image_id)

    def add(self, file_name: str, image_id, objects: tuple[list[int], list[int], list[int]]) -> None:
        labels, crowd, bins = objects
        for label in set(labels):
            self.classes[label]["images"] += 1
        for label, is_crowd, b in zip(labels, crowd, bins):
            self.classes[label]["crowd" if is_crowd else "boxes"] += 1
            if not is_crowd:
                self.sizes[b] = self.sizes.get(b, 0) + 1
        n = len(labels)
        self.per_image[n] = self.per_image.get(n, 0) + 1
        item = (n, -sum(self.per_image.values()), file_name, str(image_id))
        (heapq.heappush if len(self._most) < MOST_LISTED else heapq.heappushpop)(self._most, item)

    def to_dict(self) -> dict:
        most = sorted(self._most, reverse=True)
        return {"classes": [{"index": i, **c} for i, c in enumerate(self.classes)],
                "boxes_per_image": {str(k): v for k, v in sorted(self.per_image.items())},
                "most_boxes": [{"file_name": f, "image_id": i, "boxes": n} for n, _, f, i in most],
                "object_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


def load_stats(meta: dict) -> dict:
    """``meta["stats"]``, or the same figures read from the shards (older datasets; TensorFlow)."""
    if "stats" in meta:
        return meta["stats"]
    from centernet_core.tf_setup import require_tensorflow

    tf = require_tensorflow(quiet=True)
    acc = DatasetStats(len(meta["categories"]))
    for raw in tf.data.TFRecordDataset(meta["shards"]).as_numpy_iterator():
        f = parse_box_fields(raw)
        name = f.get("image/filename", [b""])[0].decode("utf-8")
        acc.add(name, f.get("image/source_id", [b""])[0].decode(), objects_of_example(raw))
    return acc.to_dict()


def _below(sizes: dict, rel: float) -> float:
    """How many objects have relative size below ``rel`` (interpolated inside one bin)."""
    edge = SIZE_BINS * math.log2(rel)
    whole = math.floor(edge)
    count = sum(v for k, v in sizes.items() if int(k) < whole)
    return count + sizes.get(str(whole), 0) * (edge - whole)


def size_table(sizes: dict, input_size: int) -> list[tuple[str, int]]:
    """Objects by size in output cells at ``input_size``: ``[("<1", n), ("1-2", n), ...]``."""
    cell = OUTPUT_STRIDE / input_size  # one output cell as a share of the image's long side
    edges = [2 ** k for k in range(6)]  # 1, 2, 4, ..., 32 cells
    below = [round(_below(sizes, e * cell)) for e in edges] + [sum(sizes.values())]
    labels = ["<1"] + [f"{a}-{b}" for a, b in zip(edges, edges[1:])] + [f">={edges[-1]}"]
    return [(label, below[i] - (below[i - 1] if i else 0)) for i, label in enumerate(labels)]


def _suggest_input_size(sizes: dict, input_size: int, total: int) -> str:
    for s in range(input_size // 128 * 128 + 128, 2049, 128):  # multiples of every backbone's divisor
        if _below(sizes, OUTPUT_STRIDE / s) < SUBCELL_WARN * total:
            return (f"--set model.input_size={s} puts {1 - _below(sizes, OUTPUT_STRIDE / s) / total:.0%} "
                    "of the objects at one cell or more")
    return "even 2048 leaves them below one cell: crop the images into tiles before preparing them"


def check_dataset(meta: dict, stats: dict, input_size: int = 512, max_objects: int = 128) -> dict:
    """Figures and findings for a dataset at one input size and ``data.max_objects``.

    Args:
      meta: the metadata dict (``load_metadata`` or a writer summary): categories, counts.
      stats: ``load_stats(meta)``.

    Returns:
      ``{"classes": [{"index", "id", "name", "boxes", "crowd", "images", "share"}],
      "summary": {...}, "sizes": size_table(...), "findings": [(level, text)]}``; level is
      ``"error"`` (training or evaluation will fail), ``"warning"`` or ``"info"``.
    """
    cats = sorted(meta["categories"], key=lambda c: c["index"])
    total = sum(c["boxes"] for c in stats["classes"])
    classes = [{**{k: c[k] for k in ("index", "id", "name")}, **{k: s[k] for k in ("boxes", "crowd", "images")},
                "share": s["boxes"] / total if total else 0.0} for c, s in zip(cats, stats["classes"])]
    per_image = {int(k): v for k, v in stats["boxes_per_image"].items()}
    images = sum(per_image.values())
    most = max(per_image, default=0)
    sizes = stats["object_sizes"]
    summary = {"images": images, "negatives": per_image.get(0, 0), "boxes": total,
               "crowd": sum(c["crowd"] for c in stats["classes"]),
               "boxes_per_image_mean": sum(k * v for k, v in per_image.items()) / images if images else 0.0,
               "boxes_per_image_max": most, "input_size": input_size, "max_objects": max_objects}
    findings = []
    over = sum(v for k, v in per_image.items() if k > max_objects)
    if over:
        worst = ", ".join(f"{m['file_name']!r} ({m['boxes']})" for m in stats["most_boxes"][:3]
                          if m["boxes"] > max_objects)
        findings.append(("error", f"{over} images have more than data.max_objects={max_objects} boxes (most: "
                                  f"{worst}); training stops on them: --set data.max_objects={most}"))
    elif most and most * 4 <= max_objects:
        findings.append(("info", f"no image has more than {most} boxes; --set data.max_objects="
                                 f"{max(8, -(-most // 8) * 8)} gives smaller targets (if other splits agree)"))
    if total:
        small = _below(sizes, OUTPUT_STRIDE / input_size)
        if small >= SUBCELL_WARN * total:
            findings.append(("warning", f"{small / total:.0%} of the objects ({round(small)}) are smaller than one "
                                        f"output cell ({OUTPUT_STRIDE} px) at input size {input_size}; "
                                        + _suggest_input_size(sizes, input_size, total)))
    for c in classes:
        if c["boxes"] == 0:
            findings.append(("warning", f"class {c['name']!r} (id {c['id']}) has no boxes, so it cannot be learned: "
                                        "add examples or remove it from the categories (--classes for VOC)"))
    present = [c for c in classes if c["boxes"]]
    if len(present) > 1:
        big = max(present, key=lambda c: c["boxes"])
        rare = min(present, key=lambda c: c["boxes"])
        if big["boxes"] >= IMBALANCE_WARN * rare["boxes"]:
            findings.append(("warning", f"class imbalance {big['boxes'] / rare['boxes']:.0f}:1 ({big['name']!r} "
                                        f"{big['boxes']} boxes, {rare['name']!r} {rare['boxes']}); expect a lower "
                                        f"AP on {rare['name']!r}: add examples of the rare classes"))
    if summary["negatives"]:
        findings.append(("info", f"{summary['negatives']} of {images} images have no boxes (kept as negatives)"))
    return {"classes": classes, "summary": summary, "sizes": size_table(sizes, input_size), "findings": findings}
