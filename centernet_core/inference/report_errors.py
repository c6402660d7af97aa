"""Where a detector goes wrong: one-to-one matching per image, the confusion matrix, galleries.

Each class keeps its detections scoring at least its threshold (the report uses each
class's best-F1 score). In each image, detections are then matched to ground truth at
IoU >= 0.5 (pycocotools' box IoU), highest score first, in two passes:
1. to an unmatched object of the same class (as COCOeval matches);
2. what is left, to an unmatched object of any other class: a *wrong class*.
A detection still unmatched is a *false positive*, unless it covers a crowd region of
its class (COCOeval's crowd IoU >= 0.5), where it is ignored; an object still
unmatched is *missed*. A second detection of one object is thus a false positive.

Confusion matrix: rows are ground truth, columns predictions, both in category order
followed by "background". ``matrix[i][j]`` counts objects of class i detected as class
j; the background row counts false positives, the background column missed objects.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

KINDS = ("missed", "false_positive", "wrong_class")


def _iou(dets: list[dict], gts: list[dict], crowd: bool) -> np.ndarray:
    """[D, G] pycocotools box IoU; with ``crowd`` the intersection over the detection's area."""
    from pycocotools import mask as mask_utils

    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_utils.iou([d["bbox"] for d in dets], [g["bbox"] for g in gts],
                                     [int(crowd)] * len(gts))).reshape(len(dets), len(gts))


def match_image(gts: list[dict], dets: list[dict], iou_threshold: float = 0.5) -> list[dict]:
    """Match one image's detections (already thresholded) to its ground truth.

    Args:
      gts: COCO annotations of the image (crowd ones flagged ``iscrowd``).
      dets: COCO result rows of the image.
    Returns: one event per real object and per non-ignored detection,
      ``{"kind": "tp" | "wrong_class" | "false_positive" | "missed", "gt": ann | None,
      "det": row | None}``.
    """
    real = [g for g in gts if not g.get("iscrowd", 0)]
    crowd = [g for g in gts if g.get("iscrowd", 0)]
    dets = sorted(dets, key=lambda d: -float(d["score"]))
    ious = _iou(dets, real, crowd=False)  # [D, G]
    gt_taken = np.zeros(len(real), bool)
    det_match: list[int | None] = [None] * len(dets)
    for same_class in (True, False):
        for d, det in enumerate(dets):
            if det_match[d] is not None:
                continue
            best, best_iou = None, iou_threshold
            for g, gt in enumerate(real):
                if gt_taken[g] or (gt["category_id"] == det["category_id"]) != same_class:
                    continue
                if ious[d, g] >= best_iou:
                    best, best_iou = g, ious[d, g]
            if best is not None:
                det_match[d], gt_taken[best] = best, True
    crowd_ious = _iou(dets, crowd, crowd=True)  # [D, crowd]
    events = []
    for d, det in enumerate(dets):
        g = det_match[d]
        if g is not None:
            kind = "tp" if real[g]["category_id"] == det["category_id"] else "wrong_class"
            events.append({"kind": kind, "gt": real[g], "det": det})
        elif not any(crowd_ious[d, c] >= iou_threshold and crowd[c]["category_id"] == det["category_id"]
                     for c in range(len(crowd))):
            events.append({"kind": "false_positive", "gt": None, "det": det})
    events += [{"kind": "missed", "gt": gt, "det": None} for g, gt in enumerate(real) if not gt_taken[g]]
    return events


def match_all(coco_gt, coco_dt, thresholds: dict[int, float], iou_threshold: float = 0.5) -> dict:
    """``match_image`` on every ground-truth image; ``thresholds``: category id -> min score.

    Returns: image id -> its events.
    """
    return {image_id: match_image(coco_gt.imgToAnns.get(image_id, []),
                                  kept_detections(coco_dt, image_id, thresholds), iou_threshold)
            for image_id in sorted(coco_gt.getImgIds())}


def kept_detections(coco_dt, image_id: int, thresholds: dict[int, float]) -> list[dict]:
    """The image's detections scoring at least their class's threshold."""
    return [d for d in coco_dt.imgToAnns.get(image_id, [])
            if float(d["score"]) >= thresholds[int(d["category_id"])]]


def confusion_matrix(events_by_image: dict, category_ids: list[int]) -> list[list[int]]:
    """[C + 1, C + 1] counts, rows ground truth, columns predictions, background last."""
    index = {int(c): i for i, c in enumerate(category_ids)}
    bg = len(category_ids)
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    for events in events_by_image.values():
        for e in events:
            row = index[int(e["gt"]["category_id"])] if e["gt"] is not None else bg
            col = index[int(e["det"]["category_id"])] if e["det"] is not None else bg
            matrix[row, col] += 1
    return matrix.tolist()


def _error(event: dict) -> dict:
    """An event as json: classes, boxes (COCO x, y, w, h) and score of what was involved."""
    gt, det = event["gt"], event["det"]
    return {"gt_category_id": int(gt["category_id"]) if gt else None,
            "gt_bbox": [float(v) for v in gt["bbox"]] if gt else None,
            "category_id": int(det["category_id"]) if det else None,
            "bbox": [float(v) for v in det["bbox"]] if det else None,
            "score": float(det["score"]) if det else None}


def galleries(events_by_image: dict, size: int = 8) -> dict[str, list[dict]]:
    """The worst images of each kind in KINDS: most errors of that kind first (ties: image id).

    Each entry: ``{"image_id", "kind", "count", "category_id", "errors": [...]}``, where
    ``category_id`` is the class involved (most frequent in the image's errors of that kind,
    ties to the smaller id): the missed objects' class for "missed", the detected class for
    "false_positive" and "wrong_class" (the class whose heatmap fired). ``errors`` lists each
    error (``gt_category_id``, ``gt_bbox``, ``category_id``, ``bbox``, ``score``).
    """
    out = {}
    for kind in KINDS:
        entries = []
        for image_id, events in events_by_image.items():
            errors = [_error(e) for e in events if e["kind"] == kind]
            if not errors:
                continue
            key = "gt_category_id" if kind == "missed" else "category_id"
            counts = Counter(e[key] for e in errors)
            category = min(counts, key=lambda c: (-counts[c], c))
            entries.append({"image_id": int(image_id), "kind": kind, "count": len(errors),
                            "category_id": category, "errors": errors})
        entries.sort(key=lambda e: (-e["count"], e["image_id"]))
        out[kind] = entries[:size]
    return out


def totals(events_by_image: dict) -> dict[str, int]:
    """How many events of each kind (tp, wrong_class, false_positive, missed) in all images."""
    counts = Counter(e["kind"] for events in events_by_image.values() for e in events)
    return {kind: int(counts.get(kind, 0)) for kind in ("tp", *KINDS)}
