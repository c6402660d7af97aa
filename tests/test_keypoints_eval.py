"""Keypoint AP (OKS): `centernet eval` equals pycocotools' COCOeval("keypoints") run directly."""
import json
import os

import numpy as np
import pytest

from centernet_core.inference import keypoint_eval


@pytest.fixture(scope="module")
def kites(tmp_path_factory) -> str:
    from centernet_core.data.shapes import make_shapes_dataset
    out = str(tmp_path_factory.mktemp("kites"))
    make_shapes_dataset(out, train=16, val=6, size="128", seed=1, shards=1, keypoints=True)
    return out


def _ground_truth_as_results(path):
    gt = json.load(open(path))
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9,
             "keypoints": a["keypoints"]} for a in gt["annotations"]]


def test_perfect_keypoints_score_one_and_moved_ones_less(kites):
    path = os.path.join(kites, "instances_val.json")
    results = _ground_truth_as_results(path)
    assert keypoint_eval.evaluate_keypoints(path, results, [0.08] * 4)["kp_AP"] == pytest.approx(1.0)
    for r in results:  # every joint 4 px to the right: OKS drops, and more with smaller sigmas
        r["keypoints"] = [v + 4 if i % 3 == 0 else v for i, v in enumerate(r["keypoints"])]
    loose = keypoint_eval.evaluate_keypoints(path, results, [0.2] * 4)["kp_AP"]
    tight = keypoint_eval.evaluate_keypoints(path, results, [0.02] * 4)["kp_AP"]
    assert 1.0 > loose > tight


@pytest.mark.slow
def test_eval_prints_keypoint_ap_equal_to_cocoeval(kites, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from centernet_core import config as config_lib
    from centernet_core.inference.evaluate import evaluate_checkpoint
    from centernet_core.training.loop import train

    cfg = config_lib.resolve("shapes-keypoints-tiny", profile="cpu", overrides=[
        "train.steps=30", "train.warmup_steps=3", "train.log_every=15", "train.checkpoint_every=15",
        f"data.train={kites}/train-*.tfrecord", f"data.val={kites}/val-*.tfrecord", "data.deterministic=true"])
    run = str(tmp_path / "run")
    train(cfg, run, show_progress=False)
    annotations = os.path.join(kites, "instances_val.json")
    out = str(tmp_path / "results.json")
    metrics = evaluate_checkpoint(run, annotations=annotations, output=out)
    assert metrics["detections"] > 0 and "kp_AP" in metrics and "AP" in metrics
    gt = COCO(annotations)
    ev = COCOeval(gt, gt.loadRes(out), "keypoints")
    ev.params.kpt_oks_sigmas = np.array([0.08] * 4)
    ev.evaluate(), ev.accumulate(), ev.summarize()
    for name, value in zip(keypoint_eval.STAT_NAMES, ev.stats):
        assert metrics[name] == pytest.approx(value, abs=1e-9)
    # ground truth rebuilt from the records (no json): the same numbers
    from_records = evaluate_checkpoint(run)
    for name in keypoint_eval.STAT_NAMES:
        assert from_records[name] == pytest.approx(metrics[name], abs=1e-6)


def test_eval_detections_scores_keypoint_results_as_cocoeval(kites, tmp_path):
    """`centernet eval --detections` on a results json with keypoints (predict's detections.json
    format): keypoint AP beside box AP, equal to COCOeval("keypoints") with the json's sigmas."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from centernet_core.inference.evaluate import evaluate_detections
    annotations = os.path.join(kites, "instances_val.json")
    results = _ground_truth_as_results(annotations)
    rng = np.random.default_rng(0)
    for r in results:  # joints moved by up to 3 px, v written as 1 (COCO's results)
        xyv = np.asarray(r["keypoints"], np.float64).reshape(-1, 3)
        xyv[:, :2] += rng.uniform(-3, 3, (len(xyv), 2))
        xyv[:, 2] = 1
        r["keypoints"] = [round(float(v), 2) for v in xyv.reshape(-1)]
    path = str(tmp_path / "detections.json")
    json.dump(results, open(path, "w"))
    metrics = evaluate_detections(path, annotations)
    assert metrics["AP"] == pytest.approx(1.0) and 0.0 < metrics["kp_AP"] < 1.0
    gt = COCO(annotations)
    ev = COCOeval(gt, gt.loadRes(path), "keypoints")
    ev.params.kpt_oks_sigmas = np.array([0.08] * 4)  # the kite json's category states them
    ev.evaluate(), ev.accumulate(), ev.summarize()
    for name, value in zip(keypoint_eval.STAT_NAMES, ev.stats):
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    tight = evaluate_detections(path, annotations, keypoint_sigmas=[0.02] * 4)["kp_AP"]
    assert tight < metrics["kp_AP"]  # the sigmas are used
    boxes_only = str(tmp_path / "boxes.json")
    json.dump([{k: v for k, v in r.items() if k != "keypoints"} for r in results], open(boxes_only, "w"))
    assert "kp_AP" not in evaluate_detections(boxes_only, annotations)  # detection results: box AP only
