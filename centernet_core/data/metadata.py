"""The dataset metadata file ``PREFIX.meta.json`` written last by ``centernet prepare``.

Contents (a JSON object):

- ``format``: ``"centernet-tfrecord/1"``.
- ``images``, ``boxes``: how many images and boxes (crowd included) the shards hold;
  ``counts``: the finer counts of the conversion (crowd, clipped, dropped, negatives,
  re-encoded, size mismatches, skipped images).
- ``shards``: shard file names, relative to the metadata file's directory.
- ``categories``: ``[{"index": 0, "id": <COCO id>, "name": ...}, ...]`` ordered by
  contiguous training index; ``index`` is ``image/object/class/label`` in the records.
- ``source``: where the shards came from (the COCO json and image directory; for
  ``prepare voc`` / ``prepare yolo`` their root or folders and split).
- ``keypoints`` (keypoint datasets only): ``{"names": [...], "skeleton": [[a, b], ...]
  (1-based, COCO's), "flip": [...] (joint j's mirror image, from left_/right_ names),
  "sigmas": [...] (OKS sigmas: the json's, COCO's 17 for COCO's names, else 0.05)}``;
  every keypoint category shares this one layout. Records then hold
  ``image/object/keypoint/{y,x,v}``.
- ``stats``: box statistics for ``centernet prepare check`` (classes, boxes per image,
  object sizes; described in ``check``). Absent in datasets written before it existed.

Its presence means the shards are complete: the writer renames shards into place first
and writes this file atomically after them.
"""
from __future__ import annotations

import json
import re

from centernet_core import storage
from centernet_core.errors import DataError

FORMAT = "centernet-tfrecord/1"
SUFFIX = ".meta.json"
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.tfrecord$")


def shard_name(prefix: str, index: int, count: int) -> str:
    """``PREFIX-00003-of-00008.tfrecord``."""
    return f"{prefix}-{index:05d}-of-{count:05d}.tfrecord"


def shard_pattern(prefix: str) -> str:
    """The glob pattern matching every shard of ``prefix``."""
    return f"{prefix}-*-of-*.tfrecord"


def prefix_of(pattern_or_prefix: str) -> str:
    """The dataset prefix of a prefix, a shard file, a shard glob or a metadata path.

    ``data/train``, ``data/train-*.tfrecord``, ``data/train-00000-of-00004.tfrecord``
    and ``data/train.meta.json`` all give ``data/train``.
    """
    p = pattern_or_prefix
    if p.endswith(SUFFIX):
        return p[: -len(SUFFIX)]
    m = _SHARD.search(p)
    if m:
        return p[: m.start()]
    glob_at = min((p.index(c) for c in "*?[" if c in p), default=-1)
    if glob_at >= 0:
        return p[:glob_at].rstrip("-_.")
    return p[: -len(".tfrecord")] if p.endswith(".tfrecord") else p


def metadata_path(pattern_or_prefix: str) -> str:
    return prefix_of(pattern_or_prefix) + SUFFIX


def write_metadata(prefix: str, meta: dict) -> str:
    """Write ``meta`` (plus ``format``) to ``PREFIX.meta.json`` atomically; return its path."""
    path = prefix + SUFFIX
    storage.write_text_atomic(path, json.dumps({"format": FORMAT, **meta}, indent=1, ensure_ascii=False))
    return path


def load_metadata(pattern_or_prefix: str) -> dict:
    """Read the metadata of a dataset given its prefix, a shard, a shard glob or the file.

    Returns the dict described in the module docstring, with ``shards`` turned into full
    paths. Raises DataError when the file is missing (the dataset is absent or was never
    finished) or is not a metadata file.
    """
    path = metadata_path(pattern_or_prefix)
    if not storage.exists(path):
        raise DataError(f"no dataset metadata at {path} (from {pattern_or_prefix!r}); write the dataset with "
                        "`centernet prepare coco --output PREFIX` (or `prepare shapes`) and pass its shard pattern")
    try:
        meta = json.loads(storage.read_text(path))
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}); re-run `centernet prepare`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "categories" not in meta:
        raise DataError(f"{path} is not a centernet dataset metadata file (format {FORMAT}); re-run `centernet prepare`")
    parent = storage.dirname(path)
    meta["shards"] = [storage.join(parent, s) if parent else s for s in meta.get("shards", [])]
    return meta


def category_names(meta: dict) -> list[str]:
    """Names ordered by contiguous training index."""
    return [c["name"] for c in sorted(meta["categories"], key=lambda c: c["index"])]


def index_to_coco_id(categories) -> dict[int, int]:
    """Contiguous training index -> original COCO category id, in index order.

    ``categories`` is a metadata dict (its ``categories``) or the list itself
    (``[{"index", "id", ...}]``, any order). The indices must be 0..C-1, so
    ``list(index_to_coco_id(c).values())`` is the id of each training index; DataError otherwise.
    """
    if isinstance(categories, dict):
        categories = categories["categories"]
    mapping = dict(sorted((int(c["index"]), int(c["id"])) for c in categories))
    if list(mapping) != list(range(len(categories))):
        raise DataError(f"category indices {sorted(int(c['index']) for c in categories)[:8]}... are not "
                        f"0..{len(categories) - 1} (one per category); re-run `centernet prepare`")
    return mapping


# COCO's per-keypoint OKS sigmas (pycocotools' defaults) for its 17 person keypoints.
COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
COCO_SIGMAS = (.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089)
DEFAULT_SIGMA = 0.05  # a custom keypoint whose json states no sigma


def keypoint_names(categories) -> tuple[str, ...]:
    """The one keypoint layout of ``categories`` (``coco_json.Category`` objects); () when none
    has keypoints. DataError when two categories name different keypoints."""
    layouts = {tuple(c.keypoints) for c in categories if c.keypoints}
    if len(layouts) > 1:
        raise DataError(f"categories name different keypoint sets ({' / '.join(', '.join(k) for k in layouts)}); "
                        "the keypoints task takes one layout: give every keypoint category the same names")
    return layouts.pop() if layouts else ()


def flip_from_names(names) -> list[int]:
    """Joint j's mirror image: ``left_X`` <-> ``right_X`` (also ``X_left`` <-> ``X_right``); others map to themselves."""
    index = {n: i for i, n in enumerate(names)}
    swaps = (("left_", "right_"), ("right_", "left_"))
    out = []
    for i, name in enumerate(names):
        mirror = name
        for a, b in swaps:
            if name.startswith(a):
                mirror = b + name[len(a):]
            elif name.endswith("_" + a[:-1]):
                mirror = name[: -len(a) + 1] + b[:-1]
        out.append(index.get(mirror, i))
    return out


def keypoint_metadata(categories) -> dict:
    """``{"keypoints": {names, skeleton, flip, sigmas}}`` for the metadata, or {} (no keypoints)."""
    names = keypoint_names(categories)
    if not names:
        return {}
    first = next(c for c in categories if c.keypoints)
    sigmas = next((list(c.sigmas) for c in categories if c.sigmas), None)
    if sigmas is None:
        sigmas = list(COCO_SIGMAS) if tuple(names) == COCO_KEYPOINTS else [DEFAULT_SIGMA] * len(names)
    return {"keypoints": {"names": list(names), "skeleton": [list(e) for e in first.skeleton],
                          "flip": flip_from_names(names), "sigmas": sigmas}}
