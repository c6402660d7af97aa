"""COCO bookkeeping for evaluation: detections -> results json, records' GT -> COCO GT, COCOeval.

No TensorFlow here: everything takes NumPy arrays, so `centernet eval --detections` and the
tests run pycocotools exactly as a user would run it by hand.

Letters: B batch, N detections per image, K ground-truth rows per image.
"""
from __future__ import annotations

import contextlib
import io
import json
from typing import Iterable, Sequence

import numpy as np

from centernet_core import storage
from centernet_core.errors import DataError

# The 12 numbers of COCOeval.summarize(), in its order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
STAT_LABELS = (
    "AP @[IoU=0.50:0.95 | area=all | maxDets=100]", "AP @[IoU=0.50 | area=all | maxDets=100]",
    "AP @[IoU=0.75 | area=all | maxDets=100]", "AP @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]", "AP @[IoU=0.50:0.95 | area=large | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=1]", "AR @[IoU=0.50:0.95 | area=all | maxDets=10]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=100]", "AR @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]", "AR @[IoU=0.50:0.95 | area=large | maxDets=100]",
)


def _xywh(boxes_yxyx_abs: np.ndarray) -> np.ndarray:
    """[..., 4] (ymin, xmin, ymax, xmax) pixels -> [..., 4] COCO (x, y, width, height)."""
    from centernet_core import boxes
    return np.asarray(boxes.convert(np.asarray(boxes_yxyx_abs, np.float64), "yxyx_abs", "xywh_coco"))


def image_results(image_id: int, boxes_yxyx_abs: np.ndarray, scores: np.ndarray,
                  category_ids: np.ndarray, keypoints_yx_abs: np.ndarray | None = None) -> list[dict]:
    """One image's detections as COCO result dicts.

    Args: boxes_yxyx_abs [n, 4] original-image pixels; scores [n]; category_ids [n] original ids;
      keypoints_yx_abs [n, J, 2] (y, x) original pixels (the keypoints task) or None.
    Returns: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``, rounded to
      0.01 px and 1e-5 in score (as written to the json); with keypoints each also holds
      COCO's keypoint result ``"keypoints": [x, y, v] * J`` (v = 1, as the original writes).
    """
    xywh = _xywh(boxes_yxyx_abs).reshape(-1, 4)
    rows = [{"image_id": int(image_id), "category_id": int(c), "bbox": [round(float(v), 2) for v in box],
             "score": round(float(s), 5)} for box, s, c in zip(xywh, scores, category_ids)]
    for row, yx in zip(rows, [] if keypoints_yx_abs is None else keypoints_yx_abs):
        row["keypoints"] = keypoint_triplets(yx)
    return rows


def keypoint_triplets(keypoints_yx_abs: np.ndarray) -> list[float]:
    """[J, 2] (y, x) pixels -> COCO's flat ``[x, y, v] * J`` (v = 1), rounded to 0.01 px."""
    yx = np.asarray(keypoints_yx_abs, np.float64).reshape(-1, 2)
    flat = np.stack([yx[:, 1], yx[:, 0], np.ones(len(yx))], axis=1).reshape(-1)
    return [round(float(v), 2) for v in flat]


def detections_to_results(image_ids: Sequence[int], boxes_yxyx_abs: np.ndarray, scores: np.ndarray,
                          classes: np.ndarray, num_detections: np.ndarray,
                          category_ids: Sequence[int]) -> list[dict]:
    """One batch of detections as COCO result dicts (``image_results`` of each image).

    Args:
      image_ids: [B] COCO image ids.
      boxes_yxyx_abs: [B, N, 4] in original-image pixels.
      scores: [B, N]; classes: [B, N] contiguous training indices; num_detections: [B].
      category_ids: training index -> original COCO category id.
    """
    ids = np.asarray(category_ids)
    out = []
    for b, image_id in enumerate(image_ids):
        n = int(num_detections[b])
        out += image_results(image_id, np.asarray(boxes_yxyx_abs)[b, :n], np.asarray(scores)[b, :n],
                             ids[np.asarray(classes)[b, :n].astype(np.int64)])
    return out


class GroundTruthBuilder:
    """Accumulates the eval pipeline's ground truth into a COCO dataset dict.

    Crowd boxes are kept (flagged ``iscrowd``) so COCOeval ignores detections on them, and the
    records' ``area`` is used, as in the original annotations.
    """

    def __init__(self, categories: Sequence[dict]):
        from centernet_core.data.metadata import index_to_coco_id
        self.categories = [{"id": int(c["id"]), "name": str(c["name"])} for c in categories]
        self._ids = index_to_coco_id(categories)  # training index -> original id
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add_batch(self, source_id: np.ndarray, original_hw: np.ndarray, gt_boxes_yxyx_abs: np.ndarray,
                  gt_classes: np.ndarray, gt_is_crowd: np.ndarray, gt_area: np.ndarray,
                  gt_count: np.ndarray) -> None:
        """Arrays as the eval pipeline yields them: [B], [B, 2], [B, K, 4], [B, K] x3, [B]."""
        xywh = _xywh(gt_boxes_yxyx_abs)
        for b, image_id in enumerate(np.asarray(source_id).tolist()):
            h, w = (float(v) for v in original_hw[b])
            self.images.append({"id": int(image_id), "height": round(h), "width": round(w)})
            for k in range(int(gt_count[b])):
                self.annotations.append({
                    "id": len(self.annotations) + 1, "image_id": int(image_id),
                    "category_id": self._ids[int(gt_classes[b, k])],
                    "bbox": [float(v) for v in xywh[b, k]], "area": float(gt_area[b, k]),
                    "iscrowd": int(gt_is_crowd[b, k])})

    def dataset(self) -> dict:
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories}


@contextlib.contextmanager
def _quiet():
    """pycocotools prints progress on stdout; keep the CLI's output ours."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def load_ground_truth(gt: str | dict):
    """A pycocotools COCO object from a json path or an in-memory dataset dict."""
    from pycocotools.coco import COCO
    if isinstance(gt, str):
        gt = _read_json(gt, "annotations")
    coco = COCO()
    coco.dataset = gt
    with _quiet():
        coco.createIndex()
    return coco


def _read_json(path: str, what: str):
    """The parsed json at ``path``; DataError naming ``what`` when it is missing or not JSON."""
    if not storage.exists(path):
        raise DataError(f"{what} file not found: {path}")
    try:
        return json.loads(storage.read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None


def read_results(path: str) -> list[dict]:
    """A COCO results json (``[{image_id, category_id, bbox, score}, ...]``)."""
    results = _read_json(path, "detections")
    if not isinstance(results, list):
        raise DataError(f"{path}: expected a COCO results list [{{image_id, category_id, bbox, score}}, ...]")
    return results


def write_results(path: str, results: list[dict]) -> None:
    """Write a COCO results json atomically (readers never see half a file)."""
    storage.write_text_atomic(path, json.dumps(results))


def evaluate_results(gt, results: list[dict], per_class: bool = False) -> dict:
    """Run COCOeval (bbox) on ``results`` against ``gt`` (COCO object, dataset dict or json path).

    Returns ``{"AP": ..., ..., "ARl": ...}`` (the 12 numbers of ``summarize()``, unrounded) and,
    with ``per_class``, ``"per_class": {category name: AP}``. With no detections every number is 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    coco_gt = gt if isinstance(gt, COCO) else load_ground_truth(gt)
    if not results:
        metrics = {name: 0.0 for name in STAT_NAMES}
        if per_class:
            metrics["per_class"] = {c["name"]: 0.0 for c in coco_gt.loadCats(coco_gt.getCatIds())}
        return metrics
    unknown = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if unknown:
        raise DataError(f"{len(unknown)} image ids in the detections are not in the ground truth "
                        f"(e.g. {sorted(unknown)[:3]}); evaluate against the annotations of the same split")
    with _quiet():
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
    if per_class:
        metrics["per_class"] = per_class_ap(ev, coco_gt)
    return metrics


def per_class_ap(ev, coco_gt) -> dict[str, float]:
    """AP@[.5:.95] per category from an accumulated COCOeval (area all, maxDets 100)."""
    precision = ev.eval["precision"]  # [T IoUs, R recalls, K cats, A areas, M maxDets]
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[coco_gt.cats[int(cat_id)]["name"]] = float(p.mean()) if p.size else float("nan")
    return out


def stats_rows(metrics: dict) -> Iterable[tuple[str, str, float]]:
    """(short name, COCOeval label, value) for printing the 12 numbers."""
    for name, label in zip(STAT_NAMES, STAT_LABELS):
        yield name, label, metrics[name]
