"""COCO evaluation: results files, ground truth from records, flip / multi-scale test, the CLI."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from centernet_cli.main import main
from centernet_core import config as config_lib
from centernet_core.inference import coco_eval
from centernet_core.tasks.detection.decode import classwise_nms
from centernet_core.inference.detect import detect
from centernet_core.inference.evaluate import evaluate_checkpoint, evaluate_detections
from centernet_core.tasks.detection import DetectionTask
from tiny_run import tiny_run


def cli(args) -> int:
    """Run ``centernet ARGS`` in-process; its exit code."""
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _synthetic_gt_and_results(tmp_path):
    """Three images, non-contiguous category ids, a crowd box; noisy detections plus false positives."""
    rng = np.random.default_rng(0)
    cats = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    images = [{"id": i, "height": 200, "width": 300, "file_name": f"{i}.jpg"} for i in (11, 12, 13)]
    anns, results = [], []
    for img in images:
        for k in range(4):
            x, y, w, h = rng.uniform(0, 150), rng.uniform(0, 100), rng.uniform(8, 120), rng.uniform(8, 90)
            cat = cats[k % 2]["id"]
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h * 0.8, "iscrowd": int(k == 3 and img["id"] == 12)})
            jitter = rng.normal(0, 4, 4)
            results.append({"image_id": img["id"], "category_id": cat, "score": float(rng.uniform(0.3, 1)),
                            "bbox": [float(v) for v in np.array([x, y, w, h]) + jitter]})
        results.append({"image_id": img["id"], "category_id": 7, "bbox": [5.0, 5.0, 30.0, 30.0], "score": 0.9})
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt_path.write_text(json.dumps(results))
    return str(gt_path), str(dt_path)


def _pycocotools_stats(gt_path, dt_path):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        ev = COCOeval(gt, gt.loadRes(dt_path), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_eval_detections_equals_pycocotools(tmp_path):
    gt_path, dt_path = _synthetic_gt_and_results(tmp_path)
    ours = evaluate_detections(dt_path, gt_path, per_class=True)
    direct = _pycocotools_stats(gt_path, dt_path)
    np.testing.assert_allclose([ours[k] for k in coco_eval.STAT_NAMES], direct, rtol=0, atol=1e-9)
    assert 0.0 < ours["AP"] < 1.0 and ours["detections"] == 15
    assert set(ours["per_class"]) == {"cat", "dog"}


def test_eval_detections_cli(tmp_path, capsys):
    gt_path, dt_path = _synthetic_gt_and_results(tmp_path)
    ap50 = _pycocotools_stats(gt_path, dt_path)[1]
    assert cli(["eval", "--detections", dt_path, "--annotations", gt_path]) == 0
    assert f"{100 * ap50:.2f}" in capsys.readouterr().out
    assert cli(["eval", "--detections", dt_path]) == 2
    assert "--annotations" in capsys.readouterr().err


def test_results_and_ground_truth_conversion():
    boxes = np.array([[[10.0, 20.0, 50.0, 80.0], [0, 0, 0, 0]]])  # yxyx
    res = coco_eval.detections_to_results([42], boxes, np.array([[0.75, 0.0]]), np.array([[1, 0]]), np.array([1]),
                                          category_ids=[5, 9])
    assert res == [{"image_id": 42, "category_id": 9, "bbox": [20.0, 10.0, 60.0, 40.0], "score": 0.75}]
    gt = coco_eval.GroundTruthBuilder([{"index": 0, "id": 5, "name": "a"}, {"index": 1, "id": 9, "name": "b"}])
    gt.add_batch(np.array([42]), np.array([[100.0, 200.0]]), boxes, np.array([[1, 0]]), np.array([[1, 0]]),
                 np.array([[123.0, 0.0]]), np.array([1]))
    d = gt.dataset()
    assert d["images"] == [{"id": 42, "height": 100, "width": 200}]
    assert d["annotations"] == [{"id": 1, "image_id": 42, "category_id": 9, "bbox": [20.0, 10.0, 60.0, 40.0],
                                 "area": 123.0, "iscrowd": 1}]
    assert coco_eval.evaluate_results(d, [])["AP"] == 0.0


class _ConstantModel:
    """Ignores the image: a peak (logit 2) of class 0 at (3, 2) of the 8 x 8 map, background
    logit -4; size 2 on the left half of the map and 4 on the right half; zero offsets."""

    H = W = 8
    PEAK_Y, PEAK_X = 3, 2

    def __call__(self, images, training=False):
        b = tf.shape(images)[0]
        heat = np.full([1, self.H, self.W, 2], -4.0, np.float32)
        heat[0, self.PEAK_Y, self.PEAK_X, 0] = 2.0
        size = np.where(np.arange(self.W)[None, :, None] < self.W // 2, 2.0, 4.0) * np.ones([self.H, self.W, 2])
        tile = lambda a: tf.tile(tf.constant(a, tf.float32), [b, 1, 1, 1])  # noqa: E731
        return [{"heatmap": tile(heat), "size": tile(size[None]), "offset": tile(np.zeros([1, self.H, self.W, 2]))}]


class _MirrorModel:
    """Mirror-equivariant: heatmap and size are symmetric-kernel convolutions of the image."""

    def __call__(self, images, training=False):
        x = tf.nn.avg_pool2d(images, 4, 4, "VALID")  # [B, S/4, S/4, 3]
        kernel = tf.constant([[1.0, 2.0, 1.0]] * 3)[:, :, None, None] * tf.ones([3, 3, 3, 2]) / 12.0
        heat = tf.nn.conv2d(x, kernel, 1, "SAME")
        size = tf.abs(tf.nn.conv2d(x, kernel, 1, "SAME")) + 1.0
        return [{"heatmap": heat, "size": size, "offset": tf.zeros_like(size)}]


def _run(model, images, flip, scales=(1.0,), merge="nms"):
    n, s = images.shape[0], images.shape[1]
    det = detect(model, DetectionTask(num_classes=2, merge=merge), tf.constant(images), tf.ones([n]),
                 tf.fill([n, 2], float(s)), divisor=8, flip=flip, scales=scales, max_detections=10)
    return {k: v.numpy() for k, v in det.items()}


def test_flip_on_a_model_with_known_maps():
    images = np.zeros([1, 32, 32, 3], np.float32)
    plain, flipped = _run(_ConstantModel(), images, False), _run(_ConstantModel(), images, True)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    assert plain["scores"][0, 0] == pytest.approx(sig(2.0), abs=1e-6)
    # Centre (3, 2) x stride 4 = (12, 8) px, side 2 x 4 = 8 px.
    np.testing.assert_allclose(plain["boxes_yxyx_abs"][0, 0], [8, 4, 16, 12], atol=1e-5)
    # Flip: the peak and its mirror (column 8 - 1 - 2 = 5, x = 20 px) each get (p + p_bg) / 2,
    # and the size averages the left (2) and right (4) halves: 3 x 4 = 12 px.
    expected = (sig(2.0) + sig(-4.0)) / 2
    np.testing.assert_allclose(flipped["scores"][0, :2], [expected, expected], atol=1e-6)
    assert sorted(flipped["boxes_yxyx_abs"][0, :2, 1].tolist()) == pytest.approx([8 - 6, 20 - 6], abs=1e-4)
    np.testing.assert_allclose(flipped["boxes_yxyx_abs"][0, :2, 2] - flipped["boxes_yxyx_abs"][0, :2, 0], 12, atol=1e-4)
    assert flipped["scores"][0, 0] < plain["scores"][0, 0]  # flip changes the results


def test_flip_is_a_no_op_for_a_mirror_equivariant_model():
    images = np.random.default_rng(0).normal(size=[2, 32, 32, 3]).astype(np.float32)
    plain, flipped = _run(_MirrorModel(), images, False), _run(_MirrorModel(), images, True)
    np.testing.assert_allclose(flipped["scores"], plain["scores"], atol=1e-5)
    np.testing.assert_allclose(flipped["boxes_yxyx_abs"], plain["boxes_yxyx_abs"], atol=1e-3)


def test_classwise_nms_merges_scales_within_a_class_only():
    boxes = tf.constant([[[0, 0, 10, 10], [0, 0, 10, 10.5], [0, 0, 10, 10], [50, 50, 60, 60]]], tf.float32)
    scores = tf.constant([[0.9, 0.8, 0.7, 0.6]])
    classes = tf.constant([[0, 0, 1, 0]])
    out = classwise_nms(boxes, scores, classes, max_detections=4, iou=0.5)
    assert int(out["num_detections"][0]) == 3
    np.testing.assert_allclose(out["scores"][0, :3], [0.9, 0.7, 0.6])
    assert out["classes"][0, :3].numpy().tolist() == [0, 1, 0]


def test_multi_scale_finds_the_same_peak_once():
    """Two passes at scale 1 find the same peak twice: hard NMS removes the copy; soft-NMS (the
    config's default merge) keeps it decayed by exp(-1^2 / 0.5) (IoU 1), far below the peak."""
    images = np.zeros([1, 32, 32, 3], np.float32)
    peak = 1.0 / (1.0 + np.exp(-2.0))
    for merge in ("nms", "soft_nms"):
        det = _run(_ConstantModel(), images, False, scales=(1.0, 1.0), merge=merge)
        assert int((det["scores"][0] > 0.5).sum()) == 1, merge  # the second pass's copy is not a second find
        same = np.abs(det["boxes_yxyx_abs"][0] - [8, 4, 16, 12]).max(1) < 1e-4
        assert same[0] and det["scores"][0, 0] == pytest.approx(peak, abs=1e-6)
        copies = det["scores"][0][same][1:]
        if merge == "nms":
            assert copies.size == 0
        else:
            np.testing.assert_allclose(copies, [peak * np.exp(-1 / 0.5)], rtol=1e-5)
    assert config_lib.resolve("shapes-tiny").eval.merge == "soft_nms"
    # --scales arrives as the override eval.scales=TEXT
    assert config_lib.resolve("shapes-tiny", overrides=["eval.scales=0.5, 1,1.5"]).eval.scales == (0.5, 1.0, 1.5)


@pytest.fixture(scope="module")
def run_dir(shapes_dataset, tmp_path_factory):
    return tiny_run(shapes_dataset, tmp_path_factory.mktemp("eval-run"))


def test_evaluate_checkpoint_writes_a_results_file_pycocotools_accepts(run_dir, shapes_dataset, tmp_path):
    annotations = os.path.join(shapes_dataset, "instances_val.json")
    out = str(tmp_path / "results.json")
    from_json = evaluate_checkpoint(run_dir, annotations=annotations, output=out, overrides=["eval.per_class=true"])
    from_records = evaluate_checkpoint(run_dir)
    assert from_json["images"] == 8 and from_json["detections"] == 8 * 100
    assert set(from_json["per_class"]) == {"circle", "square", "triangle"}
    # Ground truth built from the records equals the json's (no crowd, fewer than max_objects boxes).
    for k in coco_eval.STAT_NAMES:
        assert from_records[k] == pytest.approx(from_json[k], abs=1e-9)
    direct = _pycocotools_stats(annotations, out)
    np.testing.assert_allclose([from_json[k] for k in coco_eval.STAT_NAMES], direct, atol=1e-9)
    out_tta = str(tmp_path / "results-tta.json")
    evaluate_checkpoint(run_dir, output=out_tta, overrides=["eval.flip=true", "eval.scales=0.75,1.0"])
    plain, tta = (json.loads(open(p).read()) for p in (out, out_tta))
    assert len(tta) == len(plain) == 800
    assert sorted(r["score"] for r in tta) != sorted(r["score"] for r in plain)  # the test-time augmentation acts


def test_eval_protocol_original_runs_end_to_end_and_differs_from_letterbox(run_dir, shapes_dataset, tmp_path, capsys):
    """`centernet eval --protocol original` (evaluate_checkpoint): every image at its own size,
    padded black and centred; its results are in original pixels like letterbox's but are
    other detections (another input), and the first image's are detect_original's on it."""
    from centernet_core.inference.original_protocol import detect_original, original_images
    from centernet_core.inference.trained import load_trained
    from centernet_core.strides import input_divisor
    from centernet_core.tasks import build_task

    outs = {p: str(tmp_path / f"{p}.json") for p in ("letterbox", "original")}
    for protocol, out in outs.items():
        assert cli(["eval", "--ckpt", run_dir, "--protocol", protocol, "--output", out]) == 0
    assert "AP" in capsys.readouterr().out
    letterbox, original = (json.loads(open(outs[p]).read()) for p in ("letterbox", "original"))
    assert len(original) == len(letterbox) == 8 * 100
    assert {r["image_id"] for r in original} == {r["image_id"] for r in letterbox}
    assert [r["bbox"] for r in original] != [r["bbox"] for r in letterbox]
    trained = load_trained(run_dir, ["eval.protocol=original"])
    source_id, image = next(iter(original_images(trained.cfg.data.val)))
    det = detect_original(trained.model, build_task(trained.cfg), image[0],
                          divisor=input_divisor(trained.cfg.model.backbone))
    want = sorted(det["scores"][0].numpy().tolist(), reverse=True)
    mine = sorted((r for r in original if r["image_id"] == int(source_id)), key=lambda r: -r["score"])
    np.testing.assert_allclose([r["score"] for r in mine], want, atol=1e-5)
    order = np.argsort(-det["scores"][0].numpy(), kind="stable")[:10]  # the same boxes, as COCO x y w h
    y0, x0, y1, x1 = det["boxes_yxyx_abs"][0].numpy()[order].T
    np.testing.assert_allclose([r["bbox"] for r in mine[:10]], np.stack([x0, y0, x1 - x0, y1 - y0], 1), atol=0.05)


class _ScaleEquivariantModel:
    """Ignores the pixels but not the input side s: one class-0 peak centred at (0.375 s, 0.625 s)
    with a box of 0.25 s x 0.5 s (on the cell grid, zero offsets), so each test scale sees the
    same object. The peak's logit falls with s (3 at s = 32), so the smallest scale's box wins
    the merge."""

    def __call__(self, images, training=False):
        side = int(images.shape[1])
        n = side // 4  # the map's side in cells
        heat = np.full([1, n, n, 2], -6.0, np.float32)
        heat[0, 3 * n // 8, 5 * n // 8, 0] = 3.0 - side / 64
        size = np.tile(np.array([0.25 * n, 0.5 * n], np.float32), [1, n, n, 1])
        tile = lambda a: tf.tile(tf.constant(a, tf.float32), [tf.shape(images)[0], 1, 1, 1])  # noqa: E731
        return [{"heatmap": tile(heat), "size": tile(size), "offset": tile(np.zeros_like(size))}]


def test_multi_scale_boxes_land_on_original_pixels():
    """Scales 0.5, 1, 1.5 of a 64-px input (sides 32, 64, 96): each pass's box, mapped back to
    the input frame and then to the original picture (128 px, input scale 0.5), is the same box,
    so the merge keeps one, from the 0.5 pass (its score is highest)."""
    images = tf.zeros([1, 64, 64, 3])
    for scales in ((0.5, 1.0, 1.5), (0.5,), (1.5,)):
        det = detect(_ScaleEquivariantModel(), DetectionTask(num_classes=2), images, tf.constant([0.5]),
                     tf.constant([[128.0, 128.0]]), divisor=8, scales=scales, max_detections=10)
        det = {k: v.numpy() for k, v in det.items()}
        confident = det["scores"][0] > 0.5
        assert confident.sum() == 1, (scales, det["boxes_yxyx_abs"][0, confident])
        # input frame: centre (24, 40), 16 x 32 -> (16, 24, 32, 56); original = input / 0.5
        np.testing.assert_allclose(det["boxes_yxyx_abs"][0, 0], [32, 48, 64, 112], atol=1e-3, err_msg=str(scales))
        assert det["scores"][0, 0] == pytest.approx(1 / (1 + np.exp(-(3 - 64 * min(scales) / 64))), abs=1e-5)
