"""The named fidelity choices (docs/design.md, "Fidelity choices"): each one changes behaviour,
the COCO presets state theirs, and the Hourglass-104 recipe names its initialisation."""
import json

import numpy as np
import pytest
import tensorflow as tf

from centernet_core import config as config_lib
from centernet_core.tasks import build_task
from centernet_core.tasks.detection import decode as decode_lib
from centernet_core.tasks.detection.losses import centernet_loss

COCO_PRESETS = ("hourglass104-coco", "resnet18-coco", "resnet50-coco", "dla34-coco", "mobilenetv2-coco")


def test_coco_presets_state_the_reference_choices():
    for name in COCO_PRESETS:
        cfg = config_lib.resolve(name, None, None, [])
        assert (cfg.data.augmentation, cfg.data.crowd) == ("reference", "train"), name
        assert cfg.train.regression_normalizer == "objects" and cfg.eval.merge == "soft_nms"
        assert cfg.data.mosaic == 0.0, f"{name}: mosaic is a custom-data lever, not the references' recipe"
    hourglass = config_lib.resolve("hourglass104-coco", None, None, [])
    assert hourglass.train.init == "extremenet" and hourglass.model.bn_unbiased_variance
    default = config_lib.resolve("shapes-tiny", None, None, [])
    assert (default.data.augmentation, default.data.crowd, default.eval.protocol) == ("inside", "ignore", "letterbox")
    assert not default.model.bn_unbiased_variance
    for bad in ("data.mosaic=1.5", "data.augmentation=nope", "data.crowd=drop", "train.regression_normalizer=2n",
                "eval.protocol=keep_res", "eval.merge=wbf", "train.init=imagenet"):
        with pytest.raises(config_lib.ConfigError, match=bad.split("=")[0]):
            config_lib.resolve("shapes-tiny", None, None, [bad])
    for unsupported in (["data.augmentation=reference"], ["model.task=keypoints"]):
        with pytest.raises(config_lib.ConfigError, match="data.mosaic works with"):
            config_lib.resolve("shapes-tiny", None, None, ["data.mosaic=0.5", *unsupported])


def _outputs_and_targets():
    rng = np.random.default_rng(0)
    outputs = {"heatmap": tf.constant(rng.normal(size=(2, 8, 8, 3)), tf.float32),
               "size": tf.constant(rng.normal(size=(2, 8, 8, 2)), tf.float32),
               "offset": tf.constant(rng.normal(size=(2, 8, 8, 2)), tf.float32)}
    targets = {"heatmap": tf.zeros([2, 8, 8, 3]), "size": tf.ones([2, 4, 2]), "offset": tf.fill([2, 4, 2], 0.5),
               "indices": tf.constant([[3, 9, 0, 0], [17, 0, 0, 0]]), "mask": tf.constant([[1., 1, 0, 0], [1, 0, 0, 0]])}
    return outputs, targets


def test_regression_normalizer_channels_halves_size_and_offset():
    outputs, targets = _outputs_and_targets()
    objects = centernet_loss(outputs, targets, 3.0)
    channels = centernet_loss(outputs, targets, 3.0, regression_normalizer="channels")
    for k in ("size", "offset"):
        assert float(channels[k]) == pytest.approx(float(objects[k]) / 2, rel=1e-6)
    assert float(channels["heatmap"]) == pytest.approx(float(objects["heatmap"]))
    # wired from the config through the task
    cfg = config_lib.resolve("shapes-tiny", None, None, ["train.regression_normalizer=channels"])
    via_task = build_task(cfg).loss([outputs], targets, 3.0)
    assert float(via_task["size"]) == pytest.approx(float(channels["size"]), rel=1e-6)


@pytest.fixture(scope="module")
def crowd_records(tmp_path_factory):
    from PIL import Image
    from centernet_core.data.coco_writer import write_coco_tfrecords
    root = tmp_path_factory.mktemp("crowd")
    Image.new("RGB", (64, 64), (90, 90, 90)).save(root / "a.png")
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 30, 30, 30], "area": 900, "iscrowd": 1}]
    (root / "i.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
                                             "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    write_coco_tfrecords(str(root), str(root / "i.json"), str(root / "crowd"))
    return str(root / "crowd-*.tfrecord")


def test_crowd_boxes_train_or_are_ignored(crowd_records):
    from centernet_core.data.pipeline import build_dataset
    counts = {}
    for mode in ("train", "ignore"):
        cfg = config_lib.resolve("shapes-tiny", None, None, [
            f"data.crowd={mode}", "model.num_classes=1", "model.input_size=64", "data.crop_scales=1.0",
            "data.random_flip=false", "data.deterministic=true", "data.augmentation=inside"])
        _, targets = next(iter(build_dataset(crowd_records, cfg, True, batch_size=1)))
        counts[mode] = (float(tf.reduce_sum(targets["mask"])), float(tf.reduce_sum(
            tf.cast(targets["heatmap"] == 1.0, tf.float32))))
    assert counts == {"train": (2.0, 2.0), "ignore": (1.0, 1.0)}


def _soft_nms_reference(rows, sigma=0.5, threshold=0.001):
    """The original's soft_nms(method=2) (honouring its keep list) on [n, 5] (x1, y1, x2, y2, s)."""
    rows, kept = rows.copy(), []
    while len(rows):
        i = int(np.argmax(rows[:, 4]))
        best, rows = rows[i], np.delete(rows, i, 0)
        kept.append(best)
        iw = np.minimum(best[2], rows[:, 2]) - np.maximum(best[0], rows[:, 0]) + 1
        ih = np.minimum(best[3], rows[:, 3]) - np.maximum(best[1], rows[:, 1]) + 1
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        area = lambda r: (r[..., 2] - r[..., 0] + 1) * (r[..., 3] - r[..., 1] + 1)  # noqa: E731
        iou = inter / (area(best) + area(rows) - inter)
        rows[:, 4] *= np.where(inter > 0, np.exp(-iou ** 2 / sigma), 1.0)
        rows = rows[~((inter > 0) & (rows[:, 4] < threshold))]
    return np.array(kept)


def test_soft_nms_is_the_originals_gaussian_and_differs_from_hard_nms():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 60, (40, 2))
    wh = rng.uniform(4, 30, (40, 2))
    rows = np.concatenate([xy, xy + wh, rng.uniform(0.001, 1, (40, 1))], 1)
    want = _soft_nms_reference(rows)
    boxes_yxyx = tf.constant(rows[None, :, [1, 0, 3, 2]], tf.float32)
    got = decode_lib.classwise_soft_nms(boxes_yxyx, tf.constant(rows[None, :, 4], tf.float32),
                                        tf.zeros([1, 40], tf.int32), max_detections=40)
    n = int(got["num_detections"][0])
    assert n == len(want)
    np.testing.assert_allclose(got["scores"][0, :n], want[:, 4], atol=1e-5)
    np.testing.assert_allclose(got["boxes_yxyx_abs"][0, :n].numpy()[:, [1, 0, 3, 2]], want[:, :4], atol=1e-4)
    # classes never decay each other
    other = decode_lib.classwise_soft_nms(boxes_yxyx, tf.constant(rows[None, :, 4], tf.float32),
                                          tf.range(40)[None], max_detections=40)
    np.testing.assert_allclose(np.sort(other["scores"][0].numpy()), np.sort(rows[:, 4]), atol=1e-6)
    # eval.merge chooses between the two in the task's multi-scale merge
    part = {"boxes_yxyx_abs": boxes_yxyx, "scores": tf.constant(rows[None, :, 4], tf.float32),
            "classes": tf.zeros([1, 40], tf.int32)}
    merged = {m: build_task(config_lib.resolve("shapes-tiny", None, None, [f"eval.merge={m}"])).merge_scales(
        [part], 40, 0.5, 0.0) for m in ("soft_nms", "nms")}
    assert int(merged["soft_nms"]["num_detections"][0]) > int(merged["nms"]["num_detections"][0])


def test_hourglass_recipe_without_init_checkpoint_warns(monkeypatch, tmp_path):
    from typer.testing import CliRunner
    from centernet_cli.main import _register_commands, app
    import centernet_core.training.loop as loop

    calls = []
    monkeypatch.setattr(loop, "train", lambda cfg, model_dir, **kw: calls.append(kw) or _Done())
    _register_commands()
    runner = CliRunner()
    r = runner.invoke(app, ["train", "-e", "hourglass104-coco", "-m", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "train.init=extremenet" in r.output and "--backbone-only" in r.output
    assert "centernet import --from centernet-pth ExtremeNet_250000.pth --backbone-only" in r.output
    r = runner.invoke(app, ["train", "-e", "hourglass104-coco", "-m", str(tmp_path / "run"),
                            "--init-checkpoint", str(tmp_path / "bb")])
    assert r.exit_code == 0 and "train.init=extremenet" not in r.output
    r = runner.invoke(app, ["train", "-e", "resnet18-coco", "-m", str(tmp_path / "run")])
    assert r.exit_code == 0 and "warning" not in r.output
    assert len(calls) == 3


class _Done:
    status, step, losses, eval = "finished", 0, None, None


def test_unbiased_variance_scales_the_moving_variance_update_by_n_over_n_minus_1():
    """model.bn_unbiased_variance: PyTorch's BatchNorm2d moves running_var towards the batch
    variance x n / (n - 1) (n = B x H x W); Keras's towards the biased one. From the same
    start, the two moving-variance updates differ by exactly that factor; normalisation and
    the moving mean do not change; build_model hands the choice to every ConvBN."""
    from centernet_core.modeling.layers import ConvBN
    from centernet_core.modeling.model import _conv_bns, build_model

    x = tf.constant(np.random.default_rng(3).normal(size=(2, 3, 5, 4)), tf.float32)
    n = 2 * 3 * 5
    got = {}
    for unbiased in (False, True):
        layer = ConvBN(6, 1, momentum=0.0, unbiased_variance=unbiased)  # momentum 0: moving = batch
        layer.build(x.shape)
        layer.conv.kernel.assign(tf.eye(4, 6)[None, None])  # identity on the first 4 channels
        out = layer(x, training=True)
        got[unbiased] = out.numpy(), layer.bn.moving_variance.numpy(), layer.bn.moving_mean.numpy()
        assert ConvBN.from_config(layer.get_config()).unbiased_variance == unbiased
    biased = np.var(x.numpy(), axis=(0, 1, 2))
    np.testing.assert_allclose(got[False][1][:4], biased, rtol=1e-5)
    np.testing.assert_allclose(got[True][1][:4], biased * n / (n - 1), rtol=1e-5)
    np.testing.assert_allclose(got[True][1][:4] / got[False][1][:4], n / (n - 1), rtol=1e-6)
    np.testing.assert_array_equal(got[True][0], got[False][0])
    np.testing.assert_array_equal(got[True][2], got[False][2])
    for flag in (False, True):
        cfg = config_lib.resolve("shapes-tiny", None, None, [f"model.bn_unbiased_variance={str(flag).lower()}"])
        layers = _conv_bns(build_model(cfg, load_backbone_weights=False))
        assert layers and all(layer.unbiased_variance == flag for layer in layers)


def test_soft_nms_multi_scale_exports_as_saved_model_and_tflite_onnx_refuse(shapes_dataset, tmp_path):
    """eval.scales (several) with the soft-NMS merge are built into the serving graph: the
    SavedModel holds it and matches the in-memory model; TFLite and ONNX refuse up front, in
    one line naming --set eval.merge=nms, and accept the hard-NMS merge."""
    import os

    from tiny_run import tiny_run
    from centernet_core.inference.export import export_trained, refuse_soft_nms_merge
    from centernet_core.inference.trained import load_trained

    run = tiny_run(shapes_dataset, tmp_path / "run")
    trained = load_trained(run, ["eval.scales=0.75,1.0", "eval.flip=true"])
    assert trained.cfg.eval.merge == "soft_nms"
    for formats in (("saved_model", "tflite"), ("onnx",)):
        with pytest.raises(config_lib.ConfigError, match="--set eval.merge=nms") as err:
            export_trained(trained, str(tmp_path / "refused"), formats=formats)
        assert "\n" not in str(err.value)
    assert not os.path.exists(tmp_path / "refused")  # refused before anything is written
    refuse_soft_nms_merge(load_trained(run, ["eval.scales=0.75,1.0", "eval.merge=nms"]).cfg, ("tflite", "onnx"))
    refuse_soft_nms_merge(load_trained(run).cfg, ("tflite", "onnx"))  # one scale: no merge
    summary = export_trained(trained, str(tmp_path / "exp"), formats=("saved_model",))
    check = summary["checks"]["saved_model"]
    assert check["ok"] and check["checked"] > 0, check
