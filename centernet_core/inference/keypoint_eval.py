"""COCO keypoint evaluation (OKS) for the keypoints task, beside the box metrics.

No TensorFlow: NumPy arrays in, pycocotools out, so ``centernet eval`` equals running
``COCOeval(gt, dt, "keypoints")`` by hand on the same files with the same sigmas.

The results json holds one dict per detection with both ``bbox`` and ``keypoints``
(``[x, y, v] * J`` in original pixels, v = 1; the original CenterNet's format), so one file
serves both evaluations. Letters: B batch, N detections, K ground-truth rows, J keypoints.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from centernet_core.data.metadata import COCO_SIGMAS
from centernet_core.inference import coco_eval

# The 10 numbers of COCOeval("keypoints").summarize(), in its order, prefixed "kp_".
STAT_NAMES = ("kp_AP", "kp_AP50", "kp_AP75", "kp_APm", "kp_APl", "kp_AR", "kp_AR50", "kp_AR75", "kp_ARm", "kp_ARl")
STAT_LABELS = (
    "AP @[OKS=0.50:0.95 | area=all | maxDets=20]", "AP @[OKS=0.50 | area=all | maxDets=20]",
    "AP @[OKS=0.75 | area=all | maxDets=20]", "AP @[OKS=0.50:0.95 | area=medium | maxDets=20]",
    "AP @[OKS=0.50:0.95 | area=large | maxDets=20]", "AR @[OKS=0.50:0.95 | area=all | maxDets=20]",
    "AR @[OKS=0.50 | area=all | maxDets=20]", "AR @[OKS=0.75 | area=all | maxDets=20]",
    "AR @[OKS=0.50:0.95 | area=medium | maxDets=20]", "AR @[OKS=0.50:0.95 | area=large | maxDets=20]")


def sigmas_for(num_keypoints: int, configured: Sequence[float] = ()) -> list[float]:
    """``eval.keypoint_sigmas`` when set, else COCO's 17 (for J = 17) or 0.05 each."""
    if configured:
        return [float(s) for s in configured]
    return list(COCO_SIGMAS) if num_keypoints == len(COCO_SIGMAS) else [0.05] * num_keypoints


def attach_keypoints(results: list[dict], det: dict) -> None:
    """Add ``keypoints`` to the last ``sum(num_detections)`` result dicts (one batch's, in
    ``coco_eval.detections_to_results`` order) from ``det["keypoints_yx_abs"]`` ``[B, N, J, 2]``."""
    counts = np.asarray(det["num_detections"]).astype(int)
    start = len(results) - int(counts.sum())
    i = start
    for b, n in enumerate(counts):
        for k in range(n):
            yx = np.asarray(det["keypoints_yx_abs"][b, k], np.float64)  # [J, 2]
            flat = np.stack([yx[:, 1], yx[:, 0], np.ones(len(yx))], axis=1).reshape(-1)
            results[i]["keypoints"] = [round(float(v), 2) for v in flat]
            i += 1


def add_ground_truth(gt: coco_eval.GroundTruthBuilder, gt_keypoints: np.ndarray, gt_count: np.ndarray) -> None:
    """Give the batch just added to ``gt`` (``add_batch``) its keypoints: ``[B, K, J, 3]`` (y, x, v),
    original pixels, as COCO's ``keypoints`` and ``num_keypoints``."""
    counts = np.asarray(gt_count).astype(int)
    anns = gt.annotations[len(gt.annotations) - int(counts.sum()):]
    rows = [gt_keypoints[b, k] for b, n in enumerate(counts) for k in range(n)]
    for ann, kp in zip(anns, rows):
        flat = np.stack([kp[:, 1], kp[:, 0], kp[:, 2]], axis=1)
        ann["keypoints"] = [float(v) for v in flat.reshape(-1)]
        ann["num_keypoints"] = int((kp[:, 2] > 0).sum())


def evaluate_keypoints(gt, results: list[dict], sigmas: Sequence[float]) -> dict:
    """COCOeval("keypoints") of ``results`` (with ``keypoints``) against ``gt`` (json path, dict or
    COCO) with the per-keypoint OKS ``sigmas``; the 10 numbers as ``STAT_NAMES``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    coco_gt = gt if isinstance(gt, COCO) else coco_eval.load_ground_truth(gt)
    results = [r for r in results if "keypoints" in r]
    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    with coco_eval._quiet():
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}


def stats_rows(metrics: dict) -> Iterable[tuple[str, str, float]]:
    """(short name, COCOeval label, value) of the keypoint numbers present in ``metrics``."""
    for name, label in zip(STAT_NAMES, STAT_LABELS):
        if name in metrics:
            yield name, label, metrics[name]
