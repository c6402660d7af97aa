"""Export: the serving graph, SavedModel signatures, TFLite and ONNX against the in-memory model."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from centernet_core.inference import exported
from centernet_core.data import augment
from centernet_core.data.example_proto import bytes_feature, serialize_example
from centernet_core.inference.export import TOLERANCE, export_trained, sample_images
from centernet_core.inference.serving import build_detector
from centernet_core.inference.serving import letterbox
from centernet_core.inference.trained import load_trained
from tiny_run import tiny_run


@pytest.mark.parametrize("hw", [(37, 53), (128, 128), (300, 97), (20, 30)])
def test_letterbox_equals_the_eval_pipeline(hw):
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    ours, scale, original = letterbox(image[None], 128)
    scale_ref = 128 / max(hw)
    reference = augment.resample(augment.normalize_bgr(image), tf.constant(0.0), tf.constant(0.0), scale_ref, 128)
    np.testing.assert_allclose(ours[0].numpy(), reference.numpy(), atol=2e-4)
    assert float(scale[0]) == pytest.approx(scale_ref) and original.numpy().tolist() == [list(map(float, hw))]


def test_match_detections_is_order_free_and_strict_on_boxes():
    ref = {"detection_scores": np.array([[0.9, 0.5, 0.5, 0.1]]), "detection_classes": np.array([[1.0, 2, 3, 1]]),
           "detection_boxes": np.array([[[0, 0, 10, 10], [5, 5, 9, 9], [1, 1, 2, 2], [0, 0, 1, 1]]], np.float64)}
    swapped = {k: v[:, [0, 2, 1, 3]] for k, v in ref.items()}  # a tie in another order
    assert exported.match_detections(ref, swapped)["ok"]
    shifted = {k: v.copy() for k, v in ref.items()}
    shifted["detection_boxes"][0, 0, 2] += 1.5
    result = exported.match_detections(ref, shifted)
    assert not result["ok"] and result["unmatched"] == 1 and result["checked"] == 3


@pytest.fixture(scope="module")
def written(shapes_dataset, tmp_path_factory):
    trained = load_trained(tiny_run(shapes_dataset, tmp_path_factory.mktemp("export-run")))
    out = str(tmp_path_factory.mktemp("export") / "exp")
    summary = export_trained(trained, out, formats=("saved_model", "tflite", "onnx"), tflite_float16=True)
    return trained, out, summary


def _odd_image(seed=3, hw=(97, 155)):
    from centernet_core.data.shapes import draw_image
    return np.asarray(draw_image(np.random.default_rng(seed), hw)[0].convert("RGB"), np.uint8)


def _assert_same(reference, other, box_tol=1.0, score_tol=1e-3, require_checked=True) -> int:
    check = exported.match_detections(reference, other, box_tol, score_tol)
    assert check["ok"], check
    assert check["checked"] > 0 or not require_checked
    return check["checked"]


def test_export_writes_every_format_and_checks_it(written):
    _, out, summary = written
    assert set(summary["files"]) == {"saved_model", "tflite", "tflite_float16", "onnx"}
    assert all(c["ok"] and c["checked"] > 0 for c in summary["checks"].values()), summary["checks"]
    for name in ("model.tflite", "model_float16.tflite", "model.onnx", "categories.json", "config.yaml", "export.json"):
        assert os.path.exists(os.path.join(out, name))
    assets = json.loads(open(os.path.join(out, "saved_model", "assets", "categories.json")).read())
    assert [c["name"] for c in assets] == ["circle", "square", "triangle"] and [c["id"] for c in assets] == [1, 2, 3]


def test_saved_model_signatures_match_the_in_memory_model(written):
    trained, out, _ = written
    image = _odd_image()
    detector = build_detector(trained)  # keep a reference: a tf.function method holds its object weakly
    memory = {k: v.numpy() for k, v in detector.image_tensor(tf.constant(image[None])).items()}
    assert set(np.unique(memory["detection_classes"])) <= {1.0, 2.0, 3.0}
    assert memory["detection_boxes"][..., 2].max() <= 97 and memory["detection_boxes"][..., 3].max() <= 155
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    assert {"image_tensor", "encoded_image", "tf_example", "serving_default"} <= set(loaded.signatures)
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")  # lossless: the same pixels as image_tensor's input
    example = serialize_example({"image/encoded": bytes_feature([png.getvalue()])})
    outputs = [
        loaded.signatures["image_tensor"](images=tf.constant(image[None])),
        loaded.signatures["encoded_image"](encoded=tf.constant([png.getvalue()])),
        loaded.signatures["tf_example"](examples=tf.constant([example])),
    ]
    for out_sig in outputs:
        _assert_same(memory, {k: v.numpy() for k, v in out_sig.items()}, box_tol=1e-3, score_tol=1e-5)


def test_saved_model_cli_run_gives_the_same_detections(written, tmp_path):
    trained, out, _ = written
    image = _odd_image(seed=4, hw=(131, 77))
    np.save(tmp_path / "images.npy", image[None])
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    subprocess.run([cli, "run", "--dir", os.path.join(out, "saved_model"), "--tag_set", "serve",
                    "--signature_def", "image_tensor", "--inputs", f"images={tmp_path / 'images.npy'}",
                    "--outdir", str(tmp_path / "cli")], check=True, capture_output=True, timeout=300)
    from_cli = {k: np.load(tmp_path / "cli" / f"{k}.npy") for k in
                ("detection_boxes", "detection_scores", "detection_classes", "num_detections")}
    detector = build_detector(trained)  # keep a reference: a tf.function method holds its object weakly
    memory = {k: v.numpy() for k, v in detector.image_tensor(tf.constant(image[None])).items()}
    _assert_same(memory, from_cli, box_tol=1e-3, score_tol=1e-5)


@pytest.mark.parametrize("fmt", ["tflite", "onnx", "tflite_float16"])
def test_tflite_and_onnx_agree_with_the_saved_model_at_odd_sizes(written, fmt):
    _, out, _ = written
    saved = exported.open_runner(out, "saved_model")
    other = exported.open_runner(out, fmt)
    box_tol, score_tol = TOLERANCE[fmt]  # 1 px and 1e-3; float16 weights: 2 px and 2e-2
    checked = 0
    for seed, hw in ((5, (61, 203)), (6, (250, 33))):
        # On odd scenes the briefly trained model's scores can all lie within the float16
        # tolerance of the 100th, leaving no detection safely inside the top 100 to pair.
        image = _odd_image(seed, hw)[None]
        checked += _assert_same(saved(image), other(image), box_tol, score_tol, require_checked=False)
    batch = np.stack([sample_images()[0]] * 2)  # batch of 2 (one size)
    checked += _assert_same(saved(batch), other(batch), box_tol, score_tol)
    assert checked > 0


def test_a_failed_export_leaves_nothing_and_a_retry_works(written, tmp_path, monkeypatch):
    from centernet_core.inference import export as export_lib
    from centernet_core.errors import ConfigError
    trained, _, _ = written
    out = tmp_path / "exp"

    def broken_converter(*args, **kwargs):
        raise RuntimeError("converter crashed")
    monkeypatch.setattr(export_lib, "write_onnx", broken_converter)
    with pytest.raises(RuntimeError, match="converter crashed"):  # after the SavedModel was written
        export_trained(trained, str(out), formats=("saved_model", "onnx"))
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the export extra were not installed
    with pytest.raises(ConfigError, match=r"tf2onnx.*pip install 'centernet\[export\]'") as missing:
        export_trained(trained, str(out), formats=("saved_model", "onnx"))
    assert "\n" not in str(missing.value)
    assert os.listdir(tmp_path) == []  # neither the output nor its temporary sibling
    summary = export_trained(trained, str(out), formats=("saved_model",))
    assert summary["checks"]["saved_model"]["ok"] and summary["files"]["saved_model"] == str(out / "saved_model")
    assert sorted(os.listdir(tmp_path)) == ["exp"] and (out / "export.json").exists()
    with pytest.raises(ConfigError, match="not empty"):  # a finished export is never overwritten
        export_trained(trained, str(out), formats=("saved_model",))
