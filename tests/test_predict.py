"""Predict: folders with good, grayscale, corrupt and unicode-named pictures; outputs never next to inputs."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from centernet_core.draw import color_for, draw_detections
from centernet_core.errors import ConfigError
from centernet_core.inference.export import export_trained
from centernet_core.inference.predict import predict_images
from centernet_core.inference.trained import load_trained
from test_cli_foundation import run_cli
from test_evaluate import cli
from tiny_run import tiny_run

UNICODE_NAME = "fleur-été 花.png"


@pytest.fixture(scope="module")
def models(shapes_dataset, tmp_path_factory):
    run_dir = tiny_run(shapes_dataset, tmp_path_factory.mktemp("predict-run"))
    export_dir = str(tmp_path_factory.mktemp("predict-export") / "exp")
    export_trained(load_trained(run_dir), export_dir, formats=("saved_model",))
    return run_dir, export_dir


@pytest.fixture()
def photos(shapes_dataset, tmp_path):
    """A folder: an RGBA PNG, a grayscale JPEG, a corrupt .jpg and a unicode-named PNG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    val = os.path.join(shapes_dataset, "images", "val")
    first, second = (Image.open(os.path.join(val, n)) for n in sorted(os.listdir(val))[:2])
    first.convert("RGBA").save(folder / "colour.png")
    second.convert("L").resize((100, 140)).save(folder / "grey.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    first.resize((90, 61)).save(folder / UNICODE_NAME)
    return folder


@pytest.mark.parametrize("which", ["export", "checkpoint"])
def test_predict_a_folder(models, photos, tmp_path, which):
    model = models[1] if which == "export" else models[0]
    out = tmp_path / f"out-{which}"
    summary = predict_images([str(photos)], model, str(out), threshold=0.0, batch_size=2)
    assert [os.path.basename(p) for p, _ in summary.skipped] == ["broken.jpg"]
    assert sorted(r["output"] for r in summary.images) == sorted(["colour.png", "grey.jpg", UNICODE_NAME])
    for row in summary.images:
        drawn = Image.open(out / row["output"])
        source = Image.open(photos / row["output"])
        assert drawn.size == source.size and drawn.mode == "RGB"
        record = json.loads((out / (row["output"] + ".json")).read_text(encoding="utf-8"))
        assert len(record["detections"]) == row["detections"] == 100  # threshold 0 keeps every detection
        boxes = np.array([d["bbox_yxyx"] for d in record["detections"]])
        assert boxes.min() >= 0 and boxes[:, 2].max() <= source.height and boxes[:, 3].max() <= source.width
        assert {d["category"] for d in record["detections"]} <= {"circle", "square", "triangle"}
    images = json.loads((out / "images.json").read_text(encoding="utf-8"))
    coco = COCO()
    coco.dataset = {"images": images, "annotations": [], "categories": [{"id": i} for i in (1, 2, 3)]}
    coco.createIndex()
    results = coco.loadRes(str(out / "detections.json"))  # a valid COCO results file
    assert len(results.getAnnIds()) == 300
    assert sorted(os.listdir(photos)) == sorted(["colour.png", "grey.jpg", "broken.jpg", UNICODE_NAME])


def test_export_and_checkpoint_predict_the_same(models, photos, tmp_path):
    a = predict_images([str(photos / UNICODE_NAME)], models[1], str(tmp_path / "a"), threshold=0.2)
    b = predict_images([str(photos / UNICODE_NAME)], models[0], str(tmp_path / "b"), threshold=0.2)
    ra = json.loads((tmp_path / "a" / (UNICODE_NAME + ".json")).read_text(encoding="utf-8"))["detections"]
    rb = json.loads((tmp_path / "b" / (UNICODE_NAME + ".json")).read_text(encoding="utf-8"))["detections"]
    assert a.images[0]["detections"] == b.images[0]["detections"] == len(ra)
    for da, db in zip(ra, rb):
        assert da["category_id"] == db["category_id"] and abs(da["score"] - db["score"]) < 1e-4
        np.testing.assert_allclose(da["bbox_xywh"], db["bbox_xywh"], atol=0.02)


def test_output_directory_holding_an_input_is_refused(models, photos):
    with pytest.raises(ConfigError, match="never writes next to its inputs"):
        predict_images([str(photos)], models[1], str(photos))


def test_same_names_from_two_folders_do_not_overwrite(models, photos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    Image.open(photos / "colour.png").save(other / "colour.png")
    summary = predict_images([str(photos / "colour.png"), str(other / "colour.png")], models[1], str(tmp_path / "o"))
    assert sorted(r["output"] for r in summary.images) == ["colour.png", "colour_1.png"]


def test_predict_cli_lists_the_skipped_file(models, photos, tmp_path, capsys):
    assert cli(["predict", str(photos), "--model", models[1], "--output", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "broken.jpg" in out and "skipped 1" in out
    assert cli(["predict", str(photos), "--model", models[1], "--output", str(photos)]) == 2


def test_draw_detections_paints_the_box_outline():
    image = Image.new("RGB", (64, 48), (255, 255, 255))
    drawn = np.asarray(draw_detections(image, np.array([[10.0, 20.0, 40.0, 50.0]]), [0.9], [2], ["square"]))
    assert tuple(drawn[40, 35]) == color_for(2)  # bottom edge of the box
    assert tuple(drawn[25, 35]) == (255, 255, 255)  # inside the box stays untouched
    assert tuple(drawn[0, 0]) == (255, 255, 255)


# A fresh process starts without the variable, as a user's shell would.
UNSET_WEIGHT_CACHE = "import os; os.environ.pop('TF_ONEDNN_ASSUME_FROZEN_WEIGHTS', None)"


def _centernet(args, tmp_path):
    """``centernet ARGS`` in a fresh process (where eval / predict turn oneDNN's weight cache on)."""
    r = run_cli(*args, cwd=str(tmp_path), pre=UNSET_WEIGHT_CACHE, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_weight_cache_is_for_inference_processes_only():
    import subprocess
    import sys

    code = (f"{UNSET_WEIGHT_CACHE}; from centernet_core import tf_setup as t; a = t.cache_inference_weights(); "
            "import tensorflow; os.environ.pop(t.WEIGHT_CACHE_ENV); print(a, t.cache_inference_weights())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["True", "False"]  # on before TensorFlow loads; never switched on after
    from centernet_cli import main as cli_main
    assert cli_main._INFERENCE_COMMANDS == {"eval", "predict"}  # no command that trains


@pytest.mark.parametrize("which", ["export", "checkpoint"])
def test_predict_process_with_weight_cache_equals_in_process(models, photos, tmp_path, which):
    """Every picture of a batch sees the restored weights, not a cached first call's."""
    model = models[1] if which == "export" else models[0]
    predict_images([str(photos)], model, str(tmp_path / "here"), threshold=0.1, batch_size=2)
    _centernet(["predict", str(photos), "--model", model, "--output", str(tmp_path / "there"),
                "--threshold", "0.1", "--batch-size", "2"], tmp_path)
    for name in ("colour.png", "grey.jpg", UNICODE_NAME):
        here, there = (json.loads((tmp_path / d / (name + ".json")).read_text(encoding="utf-8"))["detections"]
                       for d in ("here", "there"))
        assert len(here) == len(there) > 0
        for a, b in zip(here, there):
            assert a["category_id"] == b["category_id"] and abs(a["score"] - b["score"]) < 1e-4
            np.testing.assert_allclose(a["bbox_xywh"], b["bbox_xywh"], atol=0.02)


def test_eval_process_with_weight_cache_equals_in_process(models, shapes_dataset, tmp_path):
    from centernet_core.inference.evaluate import evaluate_checkpoint

    here = evaluate_checkpoint(models[0], output=str(tmp_path / "here.json"))
    _centernet(["eval", "--ckpt", models[0], "--output", str(tmp_path / "there.json")], tmp_path)
    a, b = (sorted(json.loads((tmp_path / f).read_text()), key=lambda r: (r["image_id"], -r["score"]))
            for f in ("here.json", "there.json"))
    assert len(a) == len(b) == here["detections"] > 0
    np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-4)
    np.testing.assert_allclose([r["bbox"] for r in a], [r["bbox"] for r in b], atol=0.02)


def test_predict_takes_an_onnx_file_and_a_bfloat16_checkpoint(models, photos, tmp_path):
    import keras
    from centernet_core.inference.predict import Predictor
    run_dir, export_dir = models
    onnx_dir = str(tmp_path / "onnx")
    export_trained(load_trained(run_dir), onnx_dir, formats=("onnx",))
    data = (photos / "colour.png").read_bytes()
    saved = Predictor(export_dir)([data])[0]
    onnx = Predictor(os.path.join(onnx_dir, "model.onnx"))([data])[0]
    np.testing.assert_allclose(np.sort(onnx["scores"]), np.sort(saved["scores"]), atol=1e-3)
    try:
        bf16 = Predictor(run_dir, "bfloat16")
        assert bf16.precision_note == "precision bfloat16 (asked)"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        scores = bf16([data])[0]["scores"]
        assert abs(float(scores.max()) - float(saved["scores"].max())) < 0.05  # bf16 keeps ~3 digits
    finally:
        keras.mixed_precision.set_global_policy("float32")
