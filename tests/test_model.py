"""The composed model: save/load for every backbone, backbone reuse, precision, overfitting one batch."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from centernet_core import config as config_lib
from centernet_core.tasks.detection.decode import decode
from centernet_core.tasks.detection.losses import centernet_loss, global_num_objects
from centernet_core.modeling.model import (CenterNetModel, backbone_of, build_model, freeze_for_inference, num_stacks,
                                  unfreeze)
from centernet_core.tasks.detection.targets import encode

SIZES = {"hourglass104": 128, "hourglass52": 128}


def tiny_cfg(backbone="resnet18", *extra):
    width = {"resnet18": 0.25, "mobilenetv2": 0.35}.get(backbone, 1.0)
    return config_lib.resolve("shapes-tiny", overrides=[f"model.backbone={backbone}", f"model.width={width}",
                                                        f"model.input_size={SIZES.get(backbone, 64)}", *extra])


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "dla34", "mobilenetv2", "hourglass52",
                                      pytest.param("hourglass104", marks=pytest.mark.slow)])
def test_save_load_gives_the_same_outputs(backbone, tmp_path):
    cfg = tiny_cfg(backbone)
    model = build_model(cfg)
    x = tf.random.stateless_uniform((1, cfg.model.input_size, cfg.model.input_size, 3), seed=(1, 2))
    model(x, training=True)  # move the BN statistics away from their initial values
    before = model(x, training=False)
    assert len(before) == num_stacks(cfg)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, CenterNetModel) and loaded.outputs_spec[0].channels == 3
    after = loaded(x, training=False)
    for a, b in zip(before, after):
        for key in ("heatmap", "size", "offset"):
            np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-5)


def test_new_class_count_reuses_the_backbone():
    model = build_model(tiny_cfg())
    other = build_model(tiny_cfg("resnet18", "model.num_classes=5"), backbone=backbone_of(model))
    assert backbone_of(other) is backbone_of(model)
    x = tf.random.stateless_uniform((1, 64, 64, 3), seed=(3, 4))
    np.testing.assert_array_equal(backbone_of(other)(x)[0].numpy(), backbone_of(model)(x)[0].numpy())
    assert other(x)[0]["heatmap"].shape == (1, 16, 16, 5)
    head_vars = {v.path for stack in other.heads for h in stack.values() for v in h.weights}
    assert head_vars and all(p.startswith("head_") for p in head_vars)
    assert not any(p.startswith("head_") for p in (v.path for v in backbone_of(other).weights))


def test_mixed_precision_forward_and_float32_loss():
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = build_model(tiny_cfg())
        out = model(tf.zeros((1, 64, 64, 3)), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out[0]["heatmap"].dtype == tf.bfloat16
    assert all(v.dtype == "float32" for v in model.weights)
    targets = {"heatmap": tf.zeros((1, 16, 16, 3)), "size": tf.zeros((1, 4, 2)), "offset": tf.zeros((1, 4, 2)),
               "indices": tf.zeros((1, 4), tf.int32), "mask": tf.zeros((1, 4))}
    assert centernet_loss(out, targets, 1.0)["total"].dtype == tf.float32


@pytest.mark.parametrize("backbone", ["resnet18", "hourglass52"])
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_frozen_inference_equals_the_per_call_fold(backbone, precision):
    try:
        keras.mixed_precision.set_global_policy(precision)
        model = build_model(tiny_cfg(backbone))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    size = SIZES.get(backbone, 64)
    x = tf.random.stateless_uniform((1, size, size, 3), seed=(5, 6))
    model(x, training=True)  # BN statistics away from their initial values
    infer = tf.function(lambda images: model(images, training=False)[-1])
    per_call = infer(x)
    n_weights = len(model.weights)
    assert freeze_for_inference(model) > 0
    assert len(model.weights) == n_weights  # nothing new to save or restore
    frozen = tf.function(lambda images: model(images, training=False)[-1])(x)
    for key in ("heatmap", "size", "offset"):
        assert frozen[key].dtype == per_call[key].dtype
        np.testing.assert_array_equal(frozen[key].numpy(), per_call[key].numpy())
    unfreeze(model)
    np.testing.assert_array_equal(infer(x)["heatmap"].numpy(), per_call["heatmap"].numpy())


def synthetic_batch(size=128, num_classes=3):
    """Two images with filled rectangles (class = colour channel) and their targets."""
    boxes = [[(10, 12, 50, 60, 0), (70, 64, 118, 100, 1)], [(20, 70, 60, 120, 2), (80, 10, 120, 40, 0)]]
    images = np.zeros((2, size, size, 3), "float32")
    enc = []
    for i, objs in enumerate(boxes):
        for y0, x0, y1, x1, c in objs:
            images[i, y0:y1, x0:x1, c] = 1.0
        b = tf.constant([o[:4] for o in objs] + [(0, 0, 0, 0)] * 2, tf.float32)
        cls = tf.constant([o[4] for o in objs] + [0, 0])
        enc.append(encode(b, cls, tf.constant([1.0, 1.0, 0.0, 0.0]), num_classes, (size // 4, size // 4)))
    targets = {k: tf.stack([e[k] for e in enc]) for k in enc[0]}
    return tf.constant(images), targets, boxes


def ap50(detections, ground_truth):
    """All-point interpolated AP at IoU 0.5 over a batch (one class-agnostic pool of classes)."""
    def iou(a, b):
        ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ih * iw
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    scored = []
    for i, (boxes, scores, classes, n) in enumerate(detections):
        scored += [(scores[j], i, boxes[j], classes[j]) for j in range(n)]
    scored.sort(key=lambda t: -t[0])
    used, tp = set(), []
    for _, i, box, c in scored:
        hits = [k for k, g in enumerate(ground_truth[i]) if g[4] == c and (i, k) not in used and iou(box, g[:4]) >= 0.5]
        tp.append(bool(hits))
        used.update({(i, hits[0])} if hits else set())
    total = sum(len(g) for g in ground_truth)
    tps = np.cumsum(tp)
    recall, precision = tps / total, tps / np.arange(1, len(tp) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


@pytest.mark.slow
def test_tiny_model_overfits_one_batch():
    keras.utils.set_random_seed(0)
    cfg = tiny_cfg("resnet18", "model.input_size=128")
    model = build_model(cfg)
    images, targets, gt = synthetic_batch()
    optimizer = keras.optimizers.Adam(2e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = centernet_loss(model(images, training=True), targets, global_num_objects(targets["mask"]))
        grads = tape.gradient(loss["total"], model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss["total"]

    first = float(step())
    for _ in range(400):
        last = float(step())
    assert last < 0.1 * first, (first, last)
    out = model(images, training=False)[-1]
    det = decode(out["heatmap"], out["size"], out["offset"], max_detections=10, score_threshold=0.3)
    dets = [(det["boxes_yxyx_abs"][i].numpy(), det["scores"][i].numpy(), det["classes"][i].numpy(),
             int(det["num_detections"][i])) for i in range(2)]
    assert ap50(dets, gt) == 1.0
