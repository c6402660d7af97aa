"""The evaluation report's numbers, read from pycocotools' accumulated COCOeval arrays.

No TensorFlow and no model: ground truth is a COCO instances dict, detections are COCO
result rows. Every per-class figure and curve comes from ``COCOeval.eval`` after
``accumulate()`` (never recomputed by hand), so a class's AP here is the AP pycocotools
prints when evaluated on that class alone.

Letters of COCOeval's arrays: T IoU thresholds (0.50:0.05:0.95), R recall points
(0:0.01:1), K categories (sorted ids), A area ranges (all, small, medium, large),
M max detections (1, 10, 100; the last is used throughout).
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from centernet_core.errors import DataError
from centernet_core.inference.coco_eval import STAT_NAMES

AREA_NAMES = ("all", "small", "medium", "large")  # COCOeval's areaRngLbl, in its order
IOU_50, IOU_75 = 0, 5  # indices into T
# Objects (non-crowd ground truth) per image: bins in powers of two; "lo-hi" inclusive.
OBJECT_BINS = ((1, 1), (2, 3), (4, 7), (8, 15), (16, None))
# A class with no true positive at IoU 0.5 has no best-F1 score; its detections are
# counted (confusion matrix, galleries) from this score up.
FALLBACK_THRESHOLD = 0.5


@contextlib.contextmanager
def quiet():
    """pycocotools prints progress on stdout; the report's caller owns stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_results(coco_gt, results: list[dict]):
    """``results`` as a pycocotools COCO object; DataError on unknown image or category ids.

    The rows are copied first (``loadRes`` adds keys to the dicts it is given). An empty
    list gives an empty detection set (``loadRes`` itself fails on one).
    """
    from pycocotools.coco import COCO

    unknown = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if unknown:
        raise DataError(f"{len(unknown)} image ids in the detections are not in the ground truth "
                        f"(e.g. {sorted(unknown)[:3]}); report against the annotations of the same split")
    bad_cats = {r["category_id"] for r in results} - set(coco_gt.getCatIds())
    if bad_cats:
        raise DataError(f"category ids {sorted(bad_cats)[:5]} in the detections are not in the "
                        f"ground truth's categories {sorted(coco_gt.getCatIds())[:10]}")
    with quiet():
        if results:
            return coco_gt.loadRes([dict(r) for r in results])
        empty = COCO()
        empty.dataset = {"images": list(coco_gt.dataset["images"]),
                         "categories": list(coco_gt.dataset["categories"]), "annotations": []}
        empty.createIndex()
        return empty


def run_cocoeval(coco_gt, coco_dt, image_ids=None):
    """An evaluated, accumulated and summarised bbox COCOeval, on ``image_ids`` if given."""
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(coco_gt, coco_dt, "bbox")
    if image_ids is not None:
        ev.params.imgIds = sorted(int(i) for i in image_ids)
    with quiet():
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _mean_valid(values: np.ndarray) -> float | None:
    """Mean of the entries > -1 (COCOeval's "undefined" marker); None when there are none."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def overall(ev) -> dict:
    """The 12 numbers of ``summarize()`` by STAT_NAMES; None where COCOeval gives -1."""
    return {name: (float(v) if v > -1 else None) for name, v in zip(STAT_NAMES, ev.stats)}


def f1_curve(ev, k: int, t: int = IOU_50) -> dict:
    """F1 against score threshold for class index ``k`` at IoU index ``t``, from the arrays.

    Each recall point r of ``eval['precision'][t, :, k, 0, -1]`` carries the score at which
    that recall is first reached (``eval['scores']``); F1 = 2 p r / (p + r) there. Points
    with no precision (recall never reached) are left out.

    Returns ``{"score": [...], "f1": [...], "best_threshold", "best_f1"}`` with the lists in
    falling score order; ``best_threshold`` is FALLBACK_THRESHOLD when no F1 is above 0.
    """
    precision = ev.eval["precision"][t, :, k, 0, -1]  # [R]
    scores = ev.eval["scores"][t, :, k, 0, -1]  # [R]
    recall = np.asarray(ev.params.recThrs)  # [R]
    keep = precision > 0
    p, r, s = precision[keep], recall[keep], scores[keep]
    f1 = 2 * p * r / np.maximum(p + r, 1e-12)
    if not f1.size or f1.max() <= 0:
        return {"score": [], "f1": [], "best_threshold": FALLBACK_THRESHOLD, "best_f1": 0.0}
    best = int(np.argmax(f1))  # the first maximum: the highest score reaching the best F1
    return {"score": [float(v) for v in s], "f1": [float(v) for v in f1],
            "best_threshold": float(s[best]), "best_f1": float(f1[best])}


def per_class(ev, coco_gt, coco_dt) -> list[dict]:
    """One dict per category, in ``ev.params.catIds`` order (sorted COCO ids).

    Keys: ``category_id``, ``name``, ``AP`` (IoU .50:.95), ``AP50``, ``AP75``, ``AR``
    (IoU .50:.95, 100 detections), ``AP_small/medium/large`` (None where undefined, e.g.
    a class with no ground truth), ``num_gt`` (non-crowd), ``num_images`` (with that class),
    ``num_detections``, ``pr50``/``pr75`` (precision at each of ``recall_points``),
    ``f1`` (``f1_curve`` at IoU 0.5) and ``best_threshold``.
    """
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    recall = ev.eval["recall"]  # [T, K, A, M]
    rows = []
    for k, cat_id in enumerate(ev.params.catIds):
        gt_ids = coco_gt.getAnnIds(catIds=[cat_id], iscrowd=False)
        curve = f1_curve(ev, k)
        row = {
            "category_id": int(cat_id), "name": coco_gt.cats[cat_id]["name"],
            "AP": _mean_valid(precision[:, :, k, 0, -1]),
            "AP50": _mean_valid(precision[IOU_50, :, k, 0, -1]),
            "AP75": _mean_valid(precision[IOU_75, :, k, 0, -1]),
            "AR": _mean_valid(recall[:, k, 0, -1]),
            "num_gt": len(gt_ids),
            "num_images": len(coco_gt.getImgIds(catIds=[cat_id])),
            "num_detections": len(coco_dt.getAnnIds(catIds=[cat_id])),
            "pr50": [float(v) for v in precision[IOU_50, :, k, 0, -1]],
            "pr75": [float(v) for v in precision[IOU_75, :, k, 0, -1]],
            "f1": curve, "best_threshold": curve["best_threshold"],
        }
        for a, area in enumerate(AREA_NAMES[1:], start=1):
            row[f"AP_{area}"] = _mean_valid(precision[:, :, k, a, -1])
        rows.append(row)
    return rows


def by_size(ev) -> list[dict]:
    """AP, AP50 and AR for each COCO area range (all, small, medium, large), all classes."""
    precision, recall = ev.eval["precision"], ev.eval["recall"]
    return [{"area": name, "range": [float(v) for v in ev.params.areaRng[a]],
             "AP": _mean_valid(precision[:, :, :, a, -1]),
             "AP50": _mean_valid(precision[IOU_50, :, :, a, -1]),
             "AR": _mean_valid(recall[:, :, a, -1])} for a, name in enumerate(AREA_NAMES)]


def objects_per_image(coco_gt) -> dict[int, int]:
    """image id -> number of non-crowd ground-truth objects."""
    counts = {int(i): 0 for i in coco_gt.getImgIds()}
    for ann in coco_gt.dataset["annotations"]:
        if not ann.get("iscrowd", 0):
            counts[int(ann["image_id"])] += 1
    return counts


def by_objects_per_image(coco_gt, coco_dt) -> list[dict]:
    """AP (IoU .50:.95), AP50 and AR on the images of each OBJECT_BINS bin (COCOeval re-run).

    A bin with no images is listed with ``num_images`` 0 and None for the metrics.
    """
    counts = objects_per_image(coco_gt)
    out = []
    for lo, hi in OBJECT_BINS:
        ids = [i for i, n in counts.items() if n >= lo and (hi is None or n <= hi)]
        label = f"{lo}+" if hi is None else (str(lo) if lo == hi else f"{lo}-{hi}")
        row = {"objects": label, "num_images": len(ids), "num_objects": sum(counts[i] for i in ids),
               "AP": None, "AP50": None, "AR": None}
        if ids:
            stats = overall(run_cocoeval(coco_gt, coco_dt, ids))
            row.update(AP=stats["AP"], AP50=stats["AP50"], AR=stats["AR100"])
        out.append(row)
    return out
