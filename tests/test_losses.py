"""Focal and L1 losses against hand-computed values, normalisation, dtypes, replica invariance."""
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from centernet_core.tasks.detection.losses import centernet_loss, focal_loss, gather_at, global_num_objects, l1_at_indices


def logit(p):
    return math.log(p / (1 - p))


def test_focal_loss_hand_computed():
    # one positive (p = 0.8), one near-centre negative (y = 0.5, p = 0.3), one far negative
    # (y = 0, p = 0.1), and a saturated negative whose probability is clipped to 1 - 1e-4.
    logits = tf.constant([logit(0.8), logit(0.3), logit(0.1), 30.0], shape=[1, 2, 2, 1])
    target = tf.constant([1.0, 0.5, 0.0, 0.0], shape=[1, 2, 2, 1])
    p_clip = 1 - 1e-4
    expected = -(0.2 ** 2 * math.log(0.8)
                 + (0.5 ** 4) * 0.3 ** 2 * math.log(0.7)
                 + 0.1 ** 2 * math.log(0.9)
                 + p_clip ** 2 * math.log(1 - p_clip))
    got = focal_loss(logits, target, alpha=2.0, beta=4.0)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(float(got), expected, rtol=1e-4)  # float32 log(1 - 0.9999)
    # alpha and beta do what they say
    expected_a3 = -(0.2 ** 3 * math.log(0.8) + (0.5 ** 4) * 0.3 ** 3 * math.log(0.7) + 0.1 ** 3 * math.log(0.9)
                    + p_clip ** 3 * math.log(1 - p_clip))
    np.testing.assert_allclose(float(focal_loss(logits, target, 3.0, 4.0)), expected_a3, rtol=1e-4)
    expected_b2 = expected + (0.5 ** 4 - 0.5 ** 2) * 0.3 ** 2 * math.log(0.7)
    np.testing.assert_allclose(float(focal_loss(logits, target, 2.0, 2.0)), expected_b2, rtol=1e-4)


def test_l1_gathers_at_indices_with_mask():
    maps = tf.reshape(tf.range(2 * 3 * 4 * 2, dtype=tf.float32), [2, 3, 4, 2])  # value = ((b*3+y)*4+x)*2+d
    indices = tf.constant([[5, 0], [11, 3]])  # (y=1, x=1); padding row; (y=2, x=3); (y=0, x=3)
    np.testing.assert_array_equal(gather_at(maps, indices)[0, 0].numpy(), [10.0, 11.0])
    np.testing.assert_array_equal(gather_at(maps, indices)[1, 0].numpy(), [46.0, 47.0])
    target = tf.constant([[[9.0, 13.0], [100.0, 100.0]], [[46.0, 40.0], [30.0, 31.0]]])
    mask = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    # |10-9| + |11-13| + |46-46| + |47-40| + |30-30| + |31-31| = 1 + 2 + 0 + 7 = 10; row (0, 1) masked
    assert float(l1_at_indices(maps, target, indices, mask)) == 10.0


def _batch(seed=0, b=2, hw=8, c=3, k=4):
    rng = np.random.default_rng(seed)
    heat = rng.uniform(0, 0.9, (b, hw, hw, c)).astype("float32")
    indices = rng.integers(0, hw * hw, (b, k)).astype("int32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]][:b], "float32")
    for i in range(b):
        for j in range(k):
            if mask[i, j]:
                heat[i, indices[i, j] // hw, indices[i, j] % hw, j % c] = 1.0
    targets = {"heatmap": heat, "size": rng.uniform(1, 5, (b, k, 2)).astype("float32"),
               "offset": rng.uniform(0, 1, (b, k, 2)).astype("float32"), "indices": indices, "mask": mask}
    outputs = [{"heatmap": rng.normal(-2, 1, (b, hw, hw, c)).astype("float32"),
                "size": rng.uniform(0, 6, (b, hw, hw, 2)).astype("float32"),
                "offset": rng.uniform(0, 1, (b, hw, hw, 2)).astype("float32")} for _ in range(2)]
    return outputs, targets


def test_centernet_loss_normalises_by_objects_and_averages_stacks():
    outputs, targets = _batch()
    n = float(targets["mask"].sum())  # 5 objects
    loss = centernet_loss(outputs, targets, n, size_weight=0.1, offset_weight=1.0)
    t = {k: tf.constant(v) for k, v in targets.items()}
    for key, fn in (("heatmap", lambda s: focal_loss(s["heatmap"], t["heatmap"])),
                    ("size", lambda s: l1_at_indices(s["size"], t["size"], t["indices"], t["mask"])),
                    ("offset", lambda s: l1_at_indices(s["offset"], t["offset"], t["indices"], t["mask"]))):
        expected = (float(fn(outputs[0])) + float(fn(outputs[1]))) / 2 / n
        np.testing.assert_allclose(float(loss[key]), expected, rtol=1e-6)
    np.testing.assert_allclose(float(loss["total"]), float(loss["heatmap"] + 0.1 * loss["size"] + loss["offset"]),
                               rtol=1e-6)
    weighted = centernet_loss(outputs, targets, n, size_weight=0.5, offset_weight=2.0)
    np.testing.assert_allclose(float(weighted["total"]),
                               float(loss["heatmap"] + 0.5 * loss["size"] + 2.0 * loss["offset"]), rtol=1e-6)
    zero = centernet_loss(outputs, targets, 0.0)  # no objects: divide by 1, not 0
    np.testing.assert_allclose(float(zero["size"]), float(loss["size"]) * n, rtol=1e-6)
    assert float(global_num_objects(tf.zeros([2, 4]))) == 1.0
    assert float(global_num_objects(targets["mask"])) == 5.0


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_losses_are_float32_under_mixed_precision(policy):
    outputs, targets = _batch()
    try:
        keras.mixed_precision.set_global_policy(policy)
        low = keras.mixed_precision.global_policy().compute_dtype
        cast = [{k: tf.cast(v, low) for k, v in s.items()} for s in outputs]
        loss = centernet_loss(cast, targets, 5.0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reference = centernet_loss(outputs, targets, 5.0)
    for key in ("total", "heatmap", "size", "offset"):
        assert loss[key].dtype == tf.float32
        np.testing.assert_allclose(float(loss[key]), float(reference[key]), rtol=0.03)


REPLICA_SCRIPT = r"""
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import sys; sys.path.insert(0, sys.argv[1])
from test_losses import _batch
from centernet_core.tasks.detection.losses import centernet_loss, global_num_objects
outputs, targets = _batch(b=2)
single = centernet_loss(outputs, targets, global_num_objects(targets["mask"]))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
def split(x, i):
    return x[i:i + 1]
def replica_fn():
    i = tf.distribute.get_replica_context().replica_id_in_sync_group
    outs = [{k: tf.gather(tf.constant(v), [i]) for k, v in s.items()} for s in outputs]
    tgt = {k: tf.gather(tf.constant(v), [i]) for k, v in targets.items()}
    n = global_num_objects(tgt["mask"])
    return centernet_loss(outs, tgt, n), n
per_replica, n = strategy.run(tf.function(replica_fn))
summed = {k: float(strategy.reduce("SUM", v, axis=None)) for k, v in per_replica.items()}
print(json.dumps({"single": {k: float(v) for k, v in single.items()}, "summed": summed,
                  "n": [float(t) for t in strategy.experimental_local_results(n)]}))
"""


def test_loss_is_the_same_on_one_and_two_replicas():
    """Logical CPU devices must be set before TF starts: run in a fresh interpreter."""
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", REPLICA_SCRIPT, here], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["n"] == [5.0, 5.0]  # each replica normalises by the global count
    for key, value in result["single"].items():
        np.testing.assert_allclose(result["summed"][key], value, rtol=1e-5)


def test_task_loss_uses_the_configured_loss_parameters():
    """train.focal_alpha / focal_beta / size_weight / offset_weight reach the loss through
    DetectionTask.from_config, each to its own argument; the defaults are CenterNet's."""
    from centernet_core import config as config_lib
    from centernet_core.tasks import build_task
    outputs, targets = _batch()
    n = float(targets["mask"].sum())
    default = build_task(config_lib.resolve("shapes-tiny")).loss(outputs, targets, n)
    reference = centernet_loss(outputs, targets, n, 2.0, 4.0, 0.1, 1.0)
    for key in ("total", "heatmap", "size", "offset"):
        np.testing.assert_allclose(float(default[key]), float(reference[key]), rtol=1e-6)
    values = {"focal_alpha": 3.0, "focal_beta": 2.0, "size_weight": 0.5, "offset_weight": 2.5}
    cfg = config_lib.resolve("shapes-tiny", overrides=[f"train.{k}={v}" for k, v in values.items()])
    configured = build_task(cfg).loss(outputs, targets, n)
    expected = centernet_loss(outputs, targets, n, 3.0, 2.0, 0.5, 2.5)
    for key in ("total", "heatmap", "size", "offset"):
        np.testing.assert_allclose(float(configured[key]), float(expected[key]), rtol=1e-6)
    assert abs(float(configured["total"]) - float(default["total"])) > 1e-3
    for key, value in values.items():  # each one alone moves the total
        one = build_task(config_lib.resolve("shapes-tiny", overrides=[f"train.{key}={value}"])).loss(outputs, targets, n)
        assert abs(float(one["total"]) - float(default["total"])) > 1e-3, key
