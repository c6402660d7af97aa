"""The evaluation report (`centernet eval ... --report DIR`): numbers, plots, galleries, one page.

``write_report`` needs no model and no TensorFlow (only for remote output paths):
ground truth is a COCO instances dict, detections are COCO result rows, and pictures and
heatmaps come through two optional callables, so a checkpoint, an export and a results
file all report the same way. What it writes into DIR:

- ``report.json``: every number below, and the gallery entries;
- ``per_class.txt``: the per-class table (AP, AP50, AP75, AR, AP by size, counts, threshold);
- ``pr_curves.png``, ``f1.png``: precision-recall per class at IoU 0.5 and 0.75, F1 against
  score threshold with each class's best threshold (COCOeval's accumulated arrays);
- ``confusion.png``, ``confusion.json``: classes + background at IoU 0.5, best thresholds;
- ``by_size.png``, ``by_objects.png``: AP by COCO area range and by objects per image;
- ``gallery/<kind>-<rank>-<image id>.png``: the worst images (missed objects, false
  positives, wrong class), ground truth and detections drawn, the class's heatmap beside;
- ``index.html``: all of it on one page, relative links only (readable offline).
"""
from __future__ import annotations

import copy
import json
from typing import Callable

import numpy as np

from centernet_core import storage
from centernet_core.errors import DataError
from centernet_core.inference import report_errors, report_html, report_metrics
from centernet_core.inference.coco_eval import load_ground_truth

ImageLoader = Callable[[int], "np.ndarray | None"]
HeatmapFn = Callable[[int, int], "np.ndarray | None"]
REPORT_JSON = "report.json"
FILES = {"pr_curves": "pr_curves.png", "f1": "f1.png", "confusion": "confusion.png",
         "confusion_json": "confusion.json", "by_size": "by_size.png", "by_objects": "by_objects.png",
         "per_class": "per_class.txt", "index": "index.html"}


def _check_inputs(ground_truth: dict, results: list) -> None:
    missing = [k for k in ("images", "annotations", "categories") if k not in ground_truth]
    if missing:
        raise DataError(f"ground truth is not a COCO instances dataset: no {', '.join(missing)}")
    if not isinstance(results, list):
        raise DataError("detections must be a list of COCO result rows {image_id, category_id, bbox, score}")


def _check_output(output_dir: str) -> None:
    """DIR may be absent, empty, or a previous report (replaced); anything else is refused."""
    if not storage.exists(output_dir):
        return
    if not storage.isdir(output_dir):
        raise DataError(f"report directory {output_dir} is a file; give a directory path")
    previous = storage.exists(storage.join(output_dir, REPORT_JSON))
    if storage.glob(storage.join(output_dir, "*")) and not previous:
        raise DataError(f"report directory {output_dir} is not empty and holds no previous report; "
                        "give a new or empty directory")


def compute_report(ground_truth: dict, results: list[dict], gallery_size: int = 8) -> dict:
    """All the report's numbers and gallery entries (no files): the content of report.json
    less its ``files`` table and the gallery entries' ``image`` paths. See ``write_report``."""
    return _evaluate(ground_truth, results, gallery_size)[0]


def _evaluate(ground_truth: dict, results: list[dict], gallery_size: int):
    """(the report dict, (COCO ground truth, COCO detections, category id -> threshold))."""
    _check_inputs(ground_truth, results)
    coco_gt = load_ground_truth(copy.deepcopy(ground_truth))  # COCOeval adds keys to annotations
    coco_dt = report_metrics.load_results(coco_gt, results)
    ev = report_metrics.run_cocoeval(coco_gt, coco_dt)
    classes = report_metrics.per_class(ev, coco_gt, coco_dt)
    category_ids = [c["category_id"] for c in classes]
    thresholds = {c["category_id"]: c["best_threshold"] for c in classes}
    events = report_errors.match_all(coco_gt, coco_dt, thresholds)
    report = {
        "num_images": len(coco_gt.getImgIds()),
        "num_gt": sum(c["num_gt"] for c in classes),
        "num_detections": len(results),
        "overall": report_metrics.overall(ev),
        "recall_points": [float(v) for v in ev.params.recThrs],
        "classes": classes,
        "by_size": report_metrics.by_size(ev),
        "by_objects_per_image": report_metrics.by_objects_per_image(coco_gt, coco_dt),
        "confusion": {"iou": 0.5, "category_ids": category_ids + [None],
                      "labels": [c["name"] for c in classes] + ["background"],
                      "thresholds": {str(k): v for k, v in thresholds.items()},
                      "rows": "ground truth", "columns": "prediction",
                      "matrix": report_errors.confusion_matrix(events, category_ids)},
        "errors": report_errors.totals(events),
        "galleries": report_errors.galleries(events, gallery_size),
    }
    return report, (coco_gt, coco_dt, thresholds)


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# per_class.txt's columns: (header, width, a class's value as text); the name follows the id.
TABLE_COLUMNS = (
    ("id", 6, lambda c: str(c["category_id"])), ("AP", 6, lambda c: _num(c["AP"])),
    ("AP50", 6, lambda c: _num(c["AP50"])), ("AP75", 6, lambda c: _num(c["AP75"])),
    ("AR", 6, lambda c: _num(c["AR"])), ("APs", 6, lambda c: _num(c["AP_small"])),
    ("APm", 6, lambda c: _num(c["AP_medium"])), ("APl", 6, lambda c: _num(c["AP_large"])),
    ("objects", 8, lambda c: str(c["num_gt"])), ("images", 7, lambda c: str(c["num_images"])),
    ("dets", 7, lambda c: str(c["num_detections"])),
    ("thresh", 6, lambda c: _num(c["best_threshold"], 2)),
)


def per_class_table(report: dict) -> str:
    """The per-class numbers as fixed-width text: a header line, then one line per class
    (name after the id; "-" where a value is undefined)."""
    width = max([4] + [len(c["name"]) for c in report["classes"]])

    def line(cells: list[str], name: str) -> str:
        right = [f"{v:>{w}}" for v, (_, w, _) in zip(cells, TABLE_COLUMNS)]
        return " ".join([right[0], f"{name:<{width}}", *right[1:]])

    lines = [line([h for h, _, _ in TABLE_COLUMNS], "name")]
    lines += [line([cell(c) for _, _, cell in TABLE_COLUMNS], c["name"]) for c in report["classes"]]
    return "\n".join(lines) + "\n"


def _write(path: str, data: bytes | str) -> None:
    with storage.open_file(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def _write_galleries(staging: str, report: dict, coco, image_loader, heatmap_fn) -> None:
    """Draw each gallery entry into gallery/ and record its relative path as ``entry["image"]``."""
    from centernet_core.inference.report_gallery import gallery_picture  # matplotlib's colormaps

    coco_gt, coco_dt, thresholds = coco
    names = {c["category_id"]: c["name"] for c in report["classes"]}
    storage.makedirs(storage.join(staging, "gallery"))
    for kind, entries in report["galleries"].items():
        for rank, entry in enumerate(entries, start=1):
            image_id = entry["image_id"]
            record = coco_gt.imgs[image_id]
            image = image_loader(image_id) if image_loader else None
            heatmap = heatmap_fn(image_id, entry["category_id"]) if heatmap_fn else None
            png = gallery_picture(
                image, (record["height"], record["width"]), coco_gt.imgToAnns.get(image_id, []),
                report_errors.kept_detections(coco_dt, image_id, thresholds), entry, names, heatmap)
            entry["image"] = f"gallery/{kind}-{rank:02d}-{image_id}.png"
            _write(storage.join(staging, entry["image"]), png)


def _write_charts(staging: str, report: dict) -> None:
    """The PNG charts and confusion.json (matplotlib imported only here)."""
    from centernet_core.inference import report_plots

    def put(key: str, data) -> None:
        _write(storage.join(staging, FILES[key]), data)

    classes, confusion = report["classes"], report["confusion"]
    put("pr_curves", report_plots.pr_curves(classes, np.asarray(report["recall_points"])))
    put("f1", report_plots.f1_curves(classes))
    put("confusion", report_plots.confusion(confusion["matrix"], confusion["labels"]))
    put("confusion_json", json.dumps(confusion, indent=1))
    put("by_size", report_plots.bars(report["by_size"], "area", "AP by object size (COCO area ranges)",
                                     "area"))
    with_images = [r for r in report["by_objects_per_image"] if r["num_images"]]
    put("by_objects", report_plots.bars(with_images, "objects", "AP by objects per image",
                                        "objects (non-crowd) in the image"))


def write_report(output_dir: str, ground_truth: dict, results: list[dict],
                 image_loader: ImageLoader | None = None, heatmap_fn: HeatmapFn | None = None,
                 gallery_size: int = 8) -> dict:
    """Write the evaluation report into ``output_dir``, all or nothing.

    Args:
      output_dir: absent, empty, or a previous report (replaced); else DataError.
      ground_truth: a COCO instances dataset dict (``images`` with id/height/width,
        ``annotations``, ``categories``); not modified.
      results: COCO result rows ``{image_id, category_id, bbox: [x, y, w, h], score}`` with
        original category ids; not modified. Unknown image or category ids: DataError.
      image_loader: image id -> RGB uint8 [H, W, 3] of the original image, or None (the
        gallery then draws on a grey canvas of the recorded size).
      heatmap_fn: (image id, category id) -> 2-D float array in [0, 1] covering the image (any
        resolution), or None; drawn beside each gallery picture for its entry's class.
      gallery_size: at most this many images per gallery kind.
    Returns: the dict written as report.json: ``overall`` (COCOeval's 12 numbers), ``classes``
      (per class: AP, AP50, AP75, AR, AP_small/medium/large, counts, pr50/pr75 curves, f1,
      best_threshold), ``confusion`` (``matrix[gt][pred]``, background last), ``by_size``,
      ``by_objects_per_image``, ``errors`` (totals), ``galleries`` (kind -> entries with
      image_id, kind, count, category_id, errors, image) and ``files`` (relative paths).
    Everything is written into a sibling staging directory (``storage.staged_directory``, so
    ``output_dir`` is any path storage.py can stage) that replaces ``output_dir`` only when
    complete; on any failure ``output_dir`` is left as it was.
    """
    _check_output(output_dir)
    report, coco = _evaluate(ground_truth, results, gallery_size)
    with storage.staged_directory(output_dir) as staging:
        _write_galleries(staging, report, coco, image_loader, heatmap_fn)
        report["files"] = dict(FILES)
        _write_charts(staging, report)
        _write(storage.join(staging, FILES["per_class"]), per_class_table(report))
        _write(storage.join(staging, REPORT_JSON), json.dumps(report, indent=1))
        _write(storage.join(staging, FILES["index"]), report_html.render(report))
        if storage.exists(storage.join(output_dir, REPORT_JSON)):  # a previous report: replaced
            storage.remove_tree(output_dir)
    return report
