"""eval --model: an export scored in its own runtime gives the checkpoint's COCO AP."""
import os

import pytest

from centernet_core.inference.eval_export import evaluate_export
from centernet_core.inference.evaluate import evaluate_checkpoint
from centernet_core.inference.export import export_trained
from centernet_core.inference.trained import load_trained
from test_evaluate import cli

STEPS = 500
_cache: dict = {}


def trained_run(shapes_dir: str, root) -> tuple[str, str]:
    """(run directory, train pattern): shapes-tiny trained 500 steps, scored on its training
    records (24 pictures) where it reaches AP50 ~0.85, so that AP differences mean something."""
    if shapes_dir not in _cache:
        from centernet_core import config as config_lib
        from centernet_core.training.loop import train
        train_pattern = os.path.join(shapes_dir, "train-*.tfrecord")
        cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=[
            f"train.steps={STEPS}", "train.warmup_steps=20", "train.learning_rate=0.004", "train.log_every=250",
            f"train.checkpoint_every={STEPS}", "eval.batch_size=8", "data.deterministic=true",
            f"data.train={train_pattern}", f"data.val={train_pattern}"])
        run_dir = os.path.join(str(root), "trained-run")
        train(cfg, run_dir, show_progress=False)
        _cache[shapes_dir] = (run_dir, train_pattern)
    return _cache[shapes_dir]


@pytest.fixture(scope="module")
def export_and_reference(shapes_dataset, tmp_path_factory):
    run_dir, pattern = trained_run(shapes_dataset, tmp_path_factory.mktemp("eval-export-run"))
    out = str(tmp_path_factory.mktemp("eval-export") / "exp")
    export_trained(load_trained(run_dir), out, formats=("saved_model", "tflite", "onnx"))
    return out, evaluate_checkpoint(run_dir), pattern


@pytest.mark.slow
@pytest.mark.parametrize("target", ["saved_model", "model.tflite", "model.onnx", "."])
def test_eval_model_gives_the_checkpoints_ap(export_and_reference, target):
    out, reference, _ = export_and_reference
    assert reference["AP50"] > 0.5  # a model that detects: a wrong id or box mapping would cost points
    metrics = evaluate_export(os.path.join(out, target))
    assert metrics["images"] == reference["images"] == 24
    assert abs(metrics["AP"] - reference["AP"]) <= 0.005 and abs(metrics["AP50"] - reference["AP50"]) <= 0.005


def test_eval_cli_takes_a_model_and_refuses_a_foreign_file(export_and_reference, tmp_path):
    out, _, pattern = export_and_reference
    assert cli(["eval", "--model", os.path.join(out, "model.onnx"), "--data", pattern,
                "--output", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "r.json").exists()
    stray = tmp_path / "other.tflite"
    stray.write_bytes(b"x")
    assert cli(["eval", "--model", str(stray)]) != 0


def test_a_tflite_without_uint8_images_is_refused_in_one_line(tmp_path):
    """An older int8 file (the network alone, float32 [1, S, S, 3] input) gets a clear error."""
    import tensorflow as tf

    from centernet_core.errors import ConfigError
    from centernet_core.inference.exported import TFLiteRunner

    module = tf.Module()
    module.network = tf.function(lambda images: {"heatmap": images * 2.0},
                                 input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32, name="images")])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures=module.network.get_concrete_function())
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm")).convert())
    with pytest.raises(ConfigError, match=r"model_int8.tflite does not take uint8 'images' \(it takes float32\)"):
        TFLiteRunner(str(path))
    (tmp_path / "bare.tflite").write_bytes(  # no signature at all
        tf.lite.TFLiteConverter.from_concrete_functions([module.network.get_concrete_function()], module.network).convert())
    with pytest.raises(ConfigError, match=r"bare.tflite does not take uint8 'images' \(it takes no such input\)"):
        TFLiteRunner(str(tmp_path / "bare.tflite"))
