"""The keypoint layout that travels with a keypoints run: names and skeleton, for drawing.

The training data's metadata holds ``keypoints: {names, skeleton, flip, sigmas}``
(``data.metadata``); training copies it into the run directory (``dataset.meta.json``) and
``centernet export`` writes the names and skeleton into each category of ``categories.json``
as COCO's categories hold them (``keypoints``: names, ``skeleton``: 1-based joint pairs) and
the whole layout into ``export.json``. ``predict`` reads it back from either, so a picture
drawn from a run directory or from any export format shows the same skeleton.
Plain dicts, no TensorFlow.
"""
from __future__ import annotations

from typing import Sequence

from centernet_core import run_dir
from centernet_core.errors import ConfigError


def of_metadata(metadata: dict | None) -> dict | None:
    """``{"names", "skeleton", ...}`` of a metadata dict (``dataset.meta.json``), or None."""
    layout = (metadata or {}).get("keypoints") or None
    return dict(layout) if layout and layout.get("names") else None


def of_run(path: str) -> dict | None:
    """The layout in the run directory of ``path`` (a run directory or a checkpoint in one), or None."""
    try:
        return of_metadata(run_dir.read_metadata(run_dir.find(path)))
    except ConfigError:  # not inside a run directory: nothing to tell
        return None


def annotate(categories: Sequence[dict], layout: dict | None) -> list[dict]:
    """Copies of ``categories`` carrying COCO's ``keypoints`` (names) and ``skeleton`` fields."""
    if not layout:
        return [dict(c) for c in categories]
    skeleton = [[int(a), int(b)] for a, b in layout.get("skeleton", [])]
    return [dict(c, keypoints=list(layout["names"]), skeleton=skeleton) for c in categories]


def of_categories(categories: Sequence[dict]) -> dict | None:
    """``{"names", "skeleton"}`` from the first category carrying ``keypoints``, or None."""
    for c in categories:
        if c.get("keypoints"):
            return {"names": list(c["keypoints"]), "skeleton": [list(e) for e in c.get("skeleton", [])]}
    return None


def edges(layout: dict | None) -> list[tuple[int, int]]:
    """The skeleton as 0-based joint index pairs (COCO's is 1-based)."""
    return [(int(a) - 1, int(b) - 1) for a, b in (layout or {}).get("skeleton", [])]
