"""The evaluation report: planted errors found in report.json, pictures, all-or-nothing
writing, and index.html rendered by a real headless Chromium with every image loaded."""
import contextlib
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from centernet_core.errors import DataError
from centernet_core.inference.report import write_report
from centernet_core.inference.report_gallery import ERROR_COLOR

CIRCLE, SQUARE, TRIANGLE = 5, 12, 77  # gapped ids: index != id anywhere would show
CATEGORIES = [{"id": CIRCLE, "name": "circle"}, {"id": SQUARE, "name": "square"},
              {"id": TRIANGLE, "name": "triangle"}]
SMALL_MISSED = (103, [250.0, 150.0, 10.0, 8.0])  # image id, bbox: never detected
DUPLICATE = (105, [23.0, 22.0, 60.0, 50.0], 0.85)  # image id, bbox, score: a second circle box
CONFUSED_IMAGES = (101, 102, 103, 104)  # each has a triangle, always detected as a square
LOW_FP = (106, [200.0, 10.0, 30.0, 30.0], 0.1)  # a square far below square's best threshold


def _planted():
    """Ground truth (8 non-square images) and results with the planted errors above.

    Every other object is found by a box 1 px off: circles at scores 0.97 (image 105) and
    0.8 down to 0.6, squares 0.7 down to 0.5, confused triangles 0.9.
    """
    images = [{"id": i, "width": 320, "height": 200} if i % 2 else {"id": i, "width": 240, "height": 400}
              for i in range(101, 109)]
    anns, results = [], []

    def obj(image_id, cat, bbox, detect_as=None, score=None):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": bbox,
                     "area": bbox[2] * bbox[3], "iscrowd": 0})
        if detect_as is not None:
            results.append({"image_id": image_id, "category_id": detect_as, "score": score,
                            "bbox": [bbox[0] + 1, bbox[1] + 1, bbox[2], bbox[3]]})

    circle_scores = iter(np.linspace(0.8, 0.6, 7))
    square_scores = iter(np.linspace(0.7, 0.5, 14))
    for image in images:
        i = image["id"]
        obj(i, CIRCLE, [20.0, 20.0, 60.0, 50.0], CIRCLE, 0.97 if i == DUPLICATE[0] else float(next(circle_scores)))
        obj(i, SQUARE, [100.0, 120.0, 40.0, 40.0], SQUARE, float(next(square_scores)))
        if i in CONFUSED_IMAGES:
            obj(i, TRIANGLE, [150.0, 20.0, 50.0, 45.0], SQUARE, 0.9)
        if i == 108:  # six more squares: one image in the 8-15 objects bin
            for k in range(6):
                obj(i, SQUARE, [10.0 + 35 * k, 250.0, 30.0, 30.0], SQUARE, float(next(square_scores)))
    obj(SMALL_MISSED[0], CIRCLE, SMALL_MISSED[1])
    results.append({"image_id": DUPLICATE[0], "category_id": CIRCLE, "bbox": DUPLICATE[1], "score": DUPLICATE[2]})
    results.append({"image_id": LOW_FP[0], "category_id": SQUARE, "bbox": LOW_FP[1], "score": LOW_FP[2]})
    return {"images": images, "annotations": anns, "categories": CATEGORIES}, results


def _pycocotools(gt: dict, results: list, cat_ids=None, img_ids=None):
    """pycocotools' own stats, as a user would run it (optionally on some classes or images)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(results))), "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _loader(image_id):
    """A flat colour the size the ground truth records, so pixels can be checked."""
    h, w = (200, 320) if image_id % 2 else (400, 240)
    return np.full((h, w, 3), (30, 60, 90), np.uint8)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    gt, results = _planted()
    calls = []

    def heatmap(image_id, category_id):
        calls.append((image_id, category_id))
        return np.full((50, 80), 0.5)

    out = str(tmp_path_factory.mktemp("report") / "report")
    write_report(out, gt, results, image_loader=_loader, heatmap_fn=heatmap)
    return out, calls


def _json(report_dir):
    with open(os.path.join(report_dir[0], "report.json")) as f:
        return json.load(f)


def test_per_class_metrics_are_pycocotools_own(report_dir):
    gt, results = _planted()
    report = _json(report_dir)
    assert [c["category_id"] for c in report["classes"]] == [CIRCLE, SQUARE, TRIANGLE]
    for c in report["classes"]:
        stats = _pycocotools(gt, results, cat_ids=[c["category_id"]])
        assert (c["AP"], c["AP50"], c["AP75"], c["AR"]) == pytest.approx(stats[[0, 1, 2, 8]], abs=1e-12)
    by_name = {c["name"]: c for c in report["classes"]}
    assert by_name["triangle"]["AP"] == 0.0 and by_name["triangle"]["num_detections"] == 0
    assert by_name["circle"]["num_gt"] == 9 and by_name["circle"]["AR"] < 1.0  # the small miss
    stats = _pycocotools(gt, results)
    assert [report["overall"][k] for k in ("AP", "AP50", "APs")] == pytest.approx(stats[[0, 1, 3]], abs=1e-12)
    small = next(r for r in report["by_size"] if r["area"] == "small")
    assert small["AP"] == pytest.approx(stats[3], abs=1e-12)
    by_size = {c["name"]: c["AP_small"] for c in report["classes"]}
    assert by_size == {"circle": 0.0, "square": pytest.approx(_pycocotools(gt, results, [SQUARE])[3]),
                       "triangle": None}  # the missed circle is the only small one; no small triangles


def test_best_thresholds_and_confusion_matrix(report_dir):
    report = _json(report_dir)
    thresholds = report["confusion"]["thresholds"]
    # F1 grows with each true positive: the best threshold is the class's lowest TP score.
    assert thresholds[str(CIRCLE)] == pytest.approx(0.6) and thresholds[str(SQUARE)] == pytest.approx(0.5)
    assert report["confusion"]["labels"] == ["circle", "square", "triangle", "background"]
    # rows ground truth, columns prediction; background last
    assert report["confusion"]["matrix"] == [
        [8, 0, 0, 1],   # circles: 8 found, the small one missed
        [0, 14, 0, 0],  # squares all found
        [0, 4, 0, 0],   # triangles always called squares
        [1, 0, 0, 0],   # the duplicated circle box; the 0.1 square is below threshold
    ]
    with open(os.path.join(report_dir[0], "confusion.json")) as f:
        assert json.load(f) == report["confusion"]
    assert report["errors"] == {"tp": 22, "missed": 1, "false_positive": 1, "wrong_class": 4}


def test_galleries_name_each_planted_error(report_dir):
    galleries = _json(report_dir)["galleries"]
    missed, = galleries["missed"]
    assert (missed["image_id"], missed["category_id"], missed["count"]) == (SMALL_MISSED[0], CIRCLE, 1)
    assert missed["errors"][0]["gt_bbox"] == SMALL_MISSED[1] and missed["errors"][0]["bbox"] is None
    duplicate, = galleries["false_positive"]
    assert (duplicate["image_id"], duplicate["category_id"]) == (DUPLICATE[0], CIRCLE)
    assert duplicate["errors"][0]["bbox"] == DUPLICATE[1] and duplicate["errors"][0]["score"] == DUPLICATE[2]
    wrong = galleries["wrong_class"]
    assert [e["image_id"] for e in wrong] == list(CONFUSED_IMAGES)
    assert all(e["category_id"] == SQUARE and e["errors"][0]["gt_category_id"] == TRIANGLE for e in wrong)
    for entry in galleries["missed"] + galleries["false_positive"] + wrong:
        assert os.path.isfile(os.path.join(report_dir[0], entry["image"]))


def test_gallery_picture_styles_and_heatmap(report_dir):
    out, calls = report_dir
    galleries = _json(report_dir)["galleries"]
    entries = [e for kind in galleries.values() for e in kind]
    assert sorted(calls) == sorted((e["image_id"], e["category_id"]) for e in entries)
    missed = galleries["missed"][0]
    picture = np.asarray(Image.open(os.path.join(out, missed["image"])).convert("RGB"))
    assert picture.shape == (200, 320 + 8 + 320, 3)  # the image, a gap, the heatmap beside it
    x, y, w, h = (int(v) for v in SMALL_MISSED[1])
    assert tuple(picture[y + h // 2, x]) == ERROR_COLOR  # the missed object outlined in red
    assert tuple(picture[5, 5]) == (30, 60, 90)  # the loaded image's pixels
    magma = tuple(int(v * 255) for v in colormaps["magma"](0.5)[:3])
    assert tuple(picture[150, 328 + 160]) == magma  # the heatmap panel, coloured by value


def test_objects_per_image_bins(report_dir):
    gt, results = _planted()
    bins = {r["objects"]: r for r in _json(report_dir)["by_objects_per_image"]}
    assert {k: (r["num_images"], r["num_objects"]) for k, r in bins.items()} == {
        "1": (0, 0), "2-3": (6, 15), "4-7": (1, 4), "8-15": (1, 8), "16+": (0, 0)}
    assert bins["1"]["AP"] is None
    two_three = [101, 102, 104, 105, 106, 107]
    assert bins["2-3"]["AP"] == pytest.approx(_pycocotools(gt, results, img_ids=two_three)[0], abs=1e-12)


def test_failure_leaves_nothing_and_reports_are_replaced(tmp_path):
    gt, results = _planted()
    out = str(tmp_path / "rep")

    def broken_loader(image_id):
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        write_report(out, gt, results, image_loader=broken_loader)
    assert os.listdir(tmp_path) == []  # neither the report nor its staging directory
    write_report(out, gt, results)
    first = os.path.getmtime(os.path.join(out, "report.json"))
    write_report(out, gt, results[:-1])  # a previous report is replaced whole
    assert os.path.getmtime(os.path.join(out, "report.json")) >= first
    assert _json((out,))["num_detections"] == len(results) - 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        write_report(str(other), gt, results)
    assert os.listdir(other) == ["notes.txt"]
    with pytest.raises(DataError, match="not in the ground truth"):
        write_report(str(tmp_path / "x"), gt, results + [dict(results[0], image_id=999)])


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); under CI=true this fails")


def _browser(chromium: str, tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=180, check=True)


def _loaded_images(chromium: str, tmp_path, index: str) -> tuple[str, str, list[str]]:
    """(images checked, images broken, srcs marked broken) from the page's DOM after load."""
    dom = _browser(chromium, tmp_path, "--dump-dom", f"file://{index}").stdout
    body = re.search(r'<body[^>]*data-images-checked="(\d+)"[^>]*data-images-broken="(\d+)"', dom)
    assert body, "the page's image check did not run"
    return body.group(1), body.group(2), re.findall(r'<img src="([^"]+)"[^>]*data-loaded="no"', dom)


def test_index_html_in_headless_chromium(report_dir, tmp_path):
    chromium = _chromium()
    out = str(tmp_path / "report")
    shutil.copytree(report_dir[0], out)
    index = os.path.join(out, "index.html")
    with open(index) as f:
        page = f.read()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 5 + 6 and "gallery/missed-01-103.png" in srcs  # 5 charts, 6 gallery pictures
    assert not re.search(r'(src|href)="(https?:)?//', page)  # offline: nothing fetched
    shot = tmp_path / "page.png"
    _browser(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", f"file://{index}")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (3000, 1200, 3) and pixels.std() > 10  # drawn, not a blank page
    assert _loaded_images(chromium, tmp_path, index) == (str(len(srcs)), "0", [])
    os.remove(os.path.join(out, "confusion.png"))  # the check must see a missing file
    assert _loaded_images(chromium, tmp_path, index) == (str(len(srcs)), "1", ["confusion.png"])
