"""Your own data: classes from the data, schedules in epochs, custom presets, empty batches."""
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from centernet_core import config as config_lib, run_dir
from centernet_core.errors import ConfigError
from centernet_core.tasks import build_task
from centernet_core.tasks.detection import DetectionTask
from test_cli_foundation import run_cli
from test_prepare_voc import write_jpegs

CUSTOM = ("resnet18-custom", "dla34-custom", "mobilenetv2-custom", "hourglass104-finetune")


def _meta(classes: int, images: int) -> dict:
    return {"categories": [{"index": i, "id": 3 * i + 5, "name": f"c{i}"} for i in range(classes)], "images": images}


def test_auto_classes_and_epochs_follow_the_data():
    cfg = config_lib.resolve("resnet18-custom", profile="cpu",
                             overrides=["train.epochs=10", "train.warmup_epochs=1.5", "train.schedule=step",
                                        "train.decay_epochs=5,8"])
    assert cfg.model.num_classes == "auto"
    fitted = config_lib.fit_to_data(cfg, _meta(4, 100))
    per_epoch = math.ceil(100 / 16)  # 7 steps of the cpu profile's 16 images
    assert fitted.model.num_classes == 4
    assert (fitted.train.steps, fitted.train.warmup_steps, fitted.train.decay_boundaries) == (70, 10, (35, 56))
    assert per_epoch * 10 == fitted.train.steps
    # another global batch, another step count for the same epochs
    bigger = config_lib.fit_to_data(config_lib.override(cfg, ["runtime.global_batch_size=50"]), _meta(4, 100))
    assert bigger.train.steps == 20
    # a stated class count that disagrees with the data stays an error
    with pytest.raises(ConfigError, match="has 4 categories but model.num_classes is 3"):
        config_lib.fit_to_data(config_lib.override(cfg, ["model.num_classes=3"]), _meta(4, 100))
    # a model cannot be built while the class count is still auto
    with pytest.raises(ConfigError, match="model.num_classes is auto"):
        build_task(cfg)
    with pytest.raises(ConfigError, match="expected an integer or auto"):
        config_lib.resolve("resnet18-custom", overrides=["model.num_classes=many"])


@pytest.mark.parametrize("name", CUSTOM)
def test_custom_presets_resolve_with_classes_from_the_data(name):
    cfg = config_lib.resolve(name, profile="cpu")
    assert cfg.model.num_classes == "auto" and cfg.train.epochs > 0 and cfg.data.mosaic > 0
    fitted = config_lib.fit_to_data(cfg, _meta(3, 300))
    assert fitted.model.num_classes == 3 and 0 < fitted.train.steps < 5000  # minutes to hours on a CPU, not years
    assert 0 <= fitted.train.warmup_steps < fitted.train.steps


def test_a_batch_without_objects_gives_finite_losses_and_gradients():
    task = DetectionTask(num_classes=3)
    targets = task.encode({"boxes_yxyx_abs": tf.zeros([2, 4, 4]), "classes": tf.zeros([2, 4], tf.int32),
                           "weights": tf.zeros([2, 4], tf.bool)}, (8, 8))
    logits = tf.Variable(tf.fill([2, 8, 8, 3], -2.19))
    maps = tf.Variable(tf.ones([2, 8, 8, 2]))
    with tf.GradientTape() as tape:
        losses = task.loss([{"heatmap": logits, "size": maps, "offset": maps}], targets, 0.0)
    grads = tape.gradient(losses["total"], [logits, maps])
    assert all(np.isfinite(float(v)) for v in losses.values())
    assert float(losses["heatmap"]) > 0.0 and float(losses["size"]) == 0.0  # background still learns
    assert np.isfinite(grads[0].numpy()).all() and grads[1] is None or np.isfinite(grads[1].numpy()).all()


def _voc_folder(root):
    """Six non-square pictures, VOC XML with two classes (one box each, 1-based corners)."""
    sizes = {f"im{i}": (96 + 8 * i, 64) for i in range(6)}
    write_jpegs(os.path.join(root, "images"), sizes)
    os.makedirs(os.path.join(root, "xml"))
    for i, (stem, (w, h)) in enumerate(sizes.items()):
        name = ("boat", "buoy")[i % 2]
        box = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), (10, 8, 50, 40)))
        with open(os.path.join(root, "xml", f"{stem}.xml"), "w") as f:
            f.write(f"<annotation><filename>{stem}.jpg</filename><size><width>{w}</width><height>{h}</height>"
                    f"</size><object><name>{name}</name><bndbox>{box}</bndbox></object></annotation>")


@pytest.mark.slow
def test_a_voc_folder_trains_with_a_custom_preset_and_no_class_count(tmp_path):
    _voc_folder(str(tmp_path / "voc"))
    prefix = str(tmp_path / "data" / "boats")
    r = run_cli("prepare", "voc", "--images", str(tmp_path / "voc" / "images"), "--annotations",
                str(tmp_path / "voc" / "xml"), "--output", prefix)
    assert r.returncode == 0, r.stderr
    run = str(tmp_path / "run")
    r = run_cli("train", "-e", "resnet18-custom", "-p", "cpu", "--data", prefix + "-*.tfrecord", "-m", run,
                "--no-progress", "--set", "model.input_size=64", "--set", "train.epochs=2", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    saved = run_dir.load_config(run)
    assert saved.model.num_classes == 2  # resolved from the data and recorded in the run directory
    assert saved.train.steps == 2 * math.ceil(6 / 16) and "finished at step 2" in r.stdout
    assert [c["name"] for c in run_dir.read_categories(run)] == ["boat", "buoy"]


def test_train_without_a_profile_on_a_bf16_cpu_names_the_faster_profile(monkeypatch, tmp_path):
    from typer.testing import CliRunner
    from centernet_cli.main import _register_commands, app
    import centernet_core.inference.precision as precision
    import centernet_core.training.loop as loop

    monkeypatch.setattr(loop, "train", lambda cfg, model_dir, **kw: _Done())
    _register_commands()
    runner = CliRunner()
    run = ["train", "-e", "resnet18-custom", "-m", str(tmp_path / "run")]
    for has_bf16, extra, shown in ((True, [], True), (False, [], False), (True, ["-p", "cpu"], False),
                                   (True, ["-p", "cpu-bf16"], False)):
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_bf16)
        r = runner.invoke(app, run + extra)
        assert r.exit_code == 0, r.output
        assert ("-p cpu-bf16" in r.output) == shown, (has_bf16, extra, r.output)


class _Done:
    status, step, losses, eval = "finished", 1, {}, None
