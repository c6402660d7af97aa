"""Keypoints through serving, export and predict: every format carries the keypoints, agreeing
with the SavedModel within 1 px; the skeleton travels with the run and the export; predict
draws it and writes COCO keypoint results."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from centernet_core.data import shapes_keypoints
from centernet_core.inference import exported

KITE_EDGES = {("top", "left_wing"), ("left_wing", "bottom"), ("bottom", "right_wing"), ("right_wing", "top"),
              ("top", "bottom")}  # the kite set's skeleton, by name (stated here, not read from the code)


@pytest.fixture(scope="module")
def kite(tmp_path_factory):
    """(data dir, run dir, export dir, export summary): 30 steps (the formats are compared, not
    accuracy), exported as SavedModel, TFLite and ONNX."""
    from centernet_core import config as config_lib
    from centernet_core.data.shapes import make_shapes_dataset
    from centernet_core.inference.export import export_checkpoint
    from centernet_core.training.loop import train

    root = tmp_path_factory.mktemp("kite-export")
    data = str(root / "kites")
    make_shapes_dataset(data, train=8, val=2, size="128", seed=2, shards=1, keypoints=True)
    cfg = config_lib.resolve("shapes-keypoints-tiny", profile="cpu", overrides=[
        "train.steps=30", "train.warmup_steps=3", "train.log_every=15", "train.checkpoint_every=30",
        f"data.train={data}/train-*.tfrecord", "data.deterministic=true"])
    run, out = str(root / "run"), str(root / "export")
    train(cfg, run, show_progress=False)
    summary = export_checkpoint(run, out, overrides=["export.formats=[saved_model,tflite,onnx]",
                                                     "export.tflite_float16=false"])
    return data, run, out, summary


def _val_image(data, hw=None):
    image = Image.open(os.path.join(data, "images", "val", "000001.jpg")).convert("RGB")
    return np.asarray(image if hw is None else image.resize(hw[::-1]), np.uint8)


@pytest.mark.slow
def test_saved_model_outputs_keypoints(kite):
    import tensorflow as tf
    from centernet_core.inference.serving import build_detector
    from centernet_core.inference.trained import load_trained
    data, run, out, _ = kite
    image = _val_image(data)[None]
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    got = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=tf.constant(image)).items()}
    assert got["detection_keypoints"].shape == (1, 100, 4, 2)
    assert got["detection_keypoint_scores"].shape == (1, 100, 4)
    detector = build_detector(load_trained(run))  # held: its tf.functions refer to it weakly
    want = detector.image_tensor(tf.constant(image))
    np.testing.assert_allclose(got["detection_keypoints"], want["detection_keypoints"].numpy(), atol=1e-3)
    assert got["detection_keypoints"].max() <= 128.0 and got["detection_keypoints"].min() >= 0.0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_tflite_and_onnx_keypoints_agree_with_the_saved_model(kite, fmt):
    data, _, out, summary = kite
    check = summary["checks"][fmt]  # the export's own check: keypoints paired with the boxes
    assert check["ok"] and check["checked"] > 0 and check["max_keypoint_diff"] <= 1.0, check
    saved, other = exported.open_runner(out, "saved_model"), exported.open_runner(out, fmt)
    checked = 0
    for hw in ((128, 128), (77, 190), (203, 61)):  # odd sizes: the keypoints' scale back to the picture
        image = _val_image(data, hw)[None]
        ref, got = saved(image), other(image)
        assert got["detection_keypoints"].shape == ref["detection_keypoints"].shape == (1, 100, 4, 2)
        result = exported.match_detections(ref, got, box_tol=1.0, score_tol=1e-3)
        assert result["ok"] and result["max_keypoint_diff"] <= 1.0, result
        checked += result["checked"]
        live = ref["detection_scores"][0] > 0
        assert ref["detection_keypoints"][0, live, :, 0].max() <= hw[0]  # (y, x) in the picture's pixels
        assert ref["detection_keypoints"][0, live, :, 1].max() <= hw[1]
        assert ref["detection_keypoints"][0, live].max() > 0.5 * min(hw)
    assert checked > 0


def test_match_detections_pairs_keypoints_too():
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 40, 40]]], np.float64)
    kp = np.arange(16, dtype=np.float64).reshape(1, 2, 4, 2)
    ref = {"detection_scores": np.array([[0.9, 0.5]]), "detection_classes": np.array([[1.0, 1.0]]),
           "detection_boxes": boxes, "detection_keypoints": kp}
    assert exported.match_detections(ref, {k: v.copy() for k, v in ref.items()})["ok"]
    moved = {k: v.copy() for k, v in ref.items()}
    moved["detection_keypoints"][0, 0, 2, 1] += 1.5  # one joint 1.5 px off: the box still matches
    result = exported.match_detections(ref, moved)
    assert not result["ok"] and result["unmatched"] == 1
    lost = {k: v for k, v in ref.items() if k != "detection_keypoints"}
    assert not exported.match_detections(ref, lost)["ok"]


def _edges_by_name(layout):
    names = layout["names"]
    return {tuple(sorted((names[a - 1], names[b - 1]))) for a, b in layout["skeleton"]}


@pytest.mark.slow
def test_the_skeleton_travels_with_the_run_and_the_export(kite):
    from centernet_core import run_dir
    from centernet_core.inference.predict import Predictor
    _, run, out, summary = kite
    want = {tuple(sorted(e)) for e in KITE_EDGES}
    assert _edges_by_name(run_dir.read_metadata(run)["keypoints"]) == want
    assert summary["keypoints"]["names"] == list(shapes_keypoints.NAMES)
    assert _edges_by_name(json.load(open(os.path.join(out, "export.json")))["keypoints"]) == want
    for table in (os.path.join(out, "categories.json"), os.path.join(out, "saved_model", "assets", "categories.json")):
        (kite_category,) = json.load(open(table))
        assert _edges_by_name({"names": kite_category["keypoints"], "skeleton": kite_category["skeleton"]}) == want
    for model in (run, out, os.path.join(out, "model.tflite"), os.path.join(out, "model.onnx")):
        assert _edges_by_name(Predictor(model).keypoint_layout) == want, model


@pytest.mark.slow
def test_predict_writes_coco_keypoint_results_from_every_format(kite, tmp_path):
    data, run, out, _ = kite
    from centernet_core.inference.predict import predict_images
    picture = os.path.join(data, "images", "val", "000001.jpg")
    reference = exported.open_runner(out, "saved_model")(_val_image(data)[None])
    top = int(np.argmax(reference["detection_scores"][0]))
    threshold = float(reference["detection_scores"][0, top]) - 1e-3  # the top detection only
    want_yx = reference["detection_keypoints"][0, top]  # [4, 2] (y, x)
    for k, model in enumerate((run, out, os.path.join(out, "model.tflite"), os.path.join(out, "model.onnx"))):
        dest = str(tmp_path / f"pred{k}")
        predict_images([picture], model, dest, threshold=threshold)
        (result,) = json.load(open(os.path.join(dest, "detections.json")))
        kps = np.asarray(result["keypoints"]).reshape(4, 3)  # COCO: [x, y, v] per joint
        np.testing.assert_allclose(kps[:, 0], want_yx[:, 1], atol=1.0)
        np.testing.assert_allclose(kps[:, 1], want_yx[:, 0], atol=1.0)
        assert (kps[:, 2] == 1).all() and result["image_id"] == 1
        (row,) = json.load(open(os.path.join(dest, "000001.jpg.json")))["detections"]
        assert row["keypoints"] == result["keypoints"]
        drawn = np.asarray(Image.open(os.path.join(dest, "000001.jpg")).convert("RGB"), np.int32)
        assert np.abs(drawn - _val_image(data).astype(np.int32)).max() > 100  # something was drawn


class _FixedPredictor:
    """A Predictor stand-in with one kite detection at known pixels (predict_images takes any)."""

    def __init__(self, keypoints_yx):
        from centernet_core.tasks.keypoints import layout
        self.categories = layout.annotate([{"index": 0, "id": 1, "name": "kite"}],
                                          {"names": list(shapes_keypoints.NAMES),
                                           "skeleton": [list(e) for e in shapes_keypoints.SKELETON]})
        self.names, self.keypoint_layout = {1: "kite"}, layout.of_categories(self.categories)
        self.det = {"boxes_yxyx_abs": np.array([[20.0, 20.0, 180.0, 180.0]]), "scores": np.array([0.9]),
                    "category_ids": np.array([1]), "keypoints_yx_abs": np.asarray([keypoints_yx], np.float32),
                    "keypoint_scores": np.ones((1, 4), np.float32)}

    def __call__(self, encoded):
        return [dict(self.det) for _ in encoded]


def test_predict_draws_the_skeleton_lines_between_the_right_joints(tmp_path, monkeypatch):
    from centernet_core.draw import color_for
    from centernet_core.inference import predict as predict_lib
    grey = (128, 128, 128)
    Image.new("RGB", (200, 200), grey).save(tmp_path / "grey.png")
    joints = {"top": (40.0, 100.0), "left_wing": (90.0, 50.0), "right_wing": (90.0, 150.0), "bottom": (160.0, 100.0)}
    fake = _FixedPredictor([joints[n] for n in shapes_keypoints.NAMES])
    monkeypatch.setattr(predict_lib, "Predictor", _FixedPredictor)  # isinstance(model, Predictor) holds
    predict_lib.predict_images([str(tmp_path / "grey.png")], fake, str(tmp_path / "out"), threshold=0.5)
    drawn = np.asarray(Image.open(tmp_path / "out" / "grey.png").convert("RGB"))

    def colours_near(y, x):
        patch = drawn[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2]
        return {tuple(int(c) for c in p) for p in patch.reshape(-1, 3)}

    line = color_for(1)
    for a, b in KITE_EDGES:  # a quarter, half and three quarters along every edge: the line's colour
        for t in (0.25, 0.5, 0.75):
            y, x = (1 - t) * np.asarray(joints[a]) + t * np.asarray(joints[b])
            assert line in colours_near(y, x), (a, b, t)
    for t in (0.25, 0.75):  # the wings are not joined (their midpoint lies on the spine)
        y, x = (1 - t) * np.asarray(joints["left_wing"]) + t * np.asarray(joints["right_wing"])
        assert colours_near(y, x) == {grey}, t
    for y, x in joints.values():  # joints: white dots
        assert (255, 255, 255) in colours_near(y, x)
    (result,) = json.load(open(tmp_path / "out" / "detections.json"))
    assert result["keypoints"] == [100.0, 40.0, 1.0, 50.0, 90.0, 1.0, 150.0, 90.0, 1.0, 100.0, 160.0, 1.0]


def test_the_checks_table_shows_the_keypoint_difference():
    """`centernet export` prints the keypoints' agreement beside boxes and scores (only for keypoint exports)."""
    import io

    from rich.console import Console

    from centernet_cli.export import checks_table

    def render(checks):
        files = {fmt: f"/x/{fmt}" for fmt in (*checks, "tflite_int8")}
        out = io.StringIO()
        Console(file=out, width=200).print(checks_table({"files": files, "checks": checks}))
        return out.getvalue()

    check = {"ok": True, "checked": 3, "unmatched": 0, "max_box_diff": 0.25, "max_score_diff": 1e-4}
    with_kp = render({"tflite": dict(check, max_keypoint_diff=0.75)})
    assert "max keypoint diff (px)" in with_kp and "0.75" in with_kp
    assert "keypoint" not in render({"tflite": check})
