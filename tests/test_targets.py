import math

import numpy as np
import tensorflow as tf

from centernet_core.tasks.detection import targets
from centernet_core.data.pipeline import select_objects

STRIDE = 4


def decode_peaks(heatmap, size, offset, indices, mask, stride=STRIDE):
    """Test-side decode: 3x3 max-pool peaks of a target heatmap -> (boxes yxyx_abs, classes), sorted."""
    hm = tf.constant(heatmap)[None]
    peaks = (hm == tf.nn.max_pool2d(hm, 3, 1, "SAME")) & (hm >= 0.999)
    out_w = heatmap.shape[1]
    found = []
    for y, x, c in tf.where(peaks[0]).numpy():
        rows = np.nonzero((indices == y * out_w + x) & (mask > 0))[0]
        assert len(rows) >= 1, f"peak at {(y, x, c)} has no target row"
        for k in rows:
            cy, cx = (y + offset[k, 0]) * stride, (x + offset[k, 1]) * stride
            h, w = size[k] * stride
            found.append((round(float(cy - h / 2), 3), round(float(cx - w / 2), 3),
                          round(float(cy + h / 2), 3), round(float(cx + w / 2), 3), int(c)))
    found = sorted(set(found))
    return np.array([f[:4] for f in found]).reshape(-1, 4), np.array([f[4] for f in found], int)


def _random_boxes(rng, n, input_size, num_classes):
    """n boxes with distinct centre cells (so no two peaks merge)."""
    out, cells = [], set()
    while len(out) < n:
        h, w = rng.uniform(6, input_size / 2, 2)
        y0, x0 = rng.uniform(0, input_size - h), rng.uniform(0, input_size - w)
        cell = (int((y0 + h / 2) // STRIDE), int((x0 + w / 2) // STRIDE))
        if any(abs(cell[0] - a) <= 1 and abs(cell[1] - b) <= 1 for a, b in cells):
            continue
        cells.add(cell)
        out.append([y0, x0, y0 + h, x0 + w])
    return np.array(out, np.float32).reshape(-1, 4), rng.integers(0, num_classes, n).astype(np.int32)


def _encode(boxes, classes, k, size=128, num_classes=3):
    pad = k - len(boxes)
    b = np.concatenate([boxes, np.zeros((pad, 4), np.float32)])
    c = np.concatenate([classes, np.zeros(pad, np.int32)])
    w = np.arange(k) < len(boxes)
    t = targets.encode(b, c, w, num_classes, (size // STRIDE, size // STRIDE), STRIDE, 0.7)
    return {key: v.numpy() for key, v in t.items()}


def test_radius_keeps_cornernet_quirk_hand_computed():
    # 10 x 10 box, min IoU 0.7. Roots: r1 = (20 + sqrt(400 - 4 * 30 / 1.7)) / 2 = 19.075,
    # r2 = (40 + sqrt(1600 - 16 * 30)) / 2 = 36.733, r3 = (-28 + sqrt(28^2 + 4 * 2.8 * 30)) / 2
    # = (-28 + sqrt(1120)) / 2 = 2.7332. The corrected formula divides r3 by 2a = 5.6: 0.976.
    r = targets.gaussian_radius(10.0, 10.0, 0.7).numpy()
    assert abs(r - (-28 + math.sqrt(1120)) / 2) < 1e-4
    assert abs(r - 2.7332) < 1e-3
    assert abs(r - 0.976) > 1.0  # not the corrected value
    # a flat box: r3 = (-2 * 0.7 * 44 + sqrt(61.6^2 + 4 * 2.8 * 0.3 * 160)) / 2 = 1.9024
    np.testing.assert_allclose(targets.gaussian_radius(4.0, 40.0, 0.7).numpy(),
                               (-61.6 + math.sqrt(61.6 ** 2 + 4 * 2.8 * 48)) / 2, rtol=1e-5)


def test_small_gaussian_hand_computed():
    # Box [4, 4, 44, 44] px -> output [1, 1, 11, 11]: h = w = 10, centre (6, 6), radius
    # floor(2.733) = 2, sigma = (2 * 2 + 1) / 6 = 5 / 6, 2 sigma^2 = 25 / 18.
    t = _encode(np.array([[4, 4, 44, 44]], np.float32), np.array([1], np.int32), 4, size=64, num_classes=2)
    hm = t["heatmap"]
    two_sigma_sq = 25 / 18
    assert hm.shape == (16, 16, 2)
    assert hm[6, 6, 1] == 1.0 and hm[..., 0].max() == 0.0
    np.testing.assert_allclose(hm[6, 7, 1], math.exp(-1 / two_sigma_sq), rtol=1e-6)
    np.testing.assert_allclose(hm[7, 8, 1], math.exp(-(1 + 4) / two_sigma_sq), rtol=1e-6)
    np.testing.assert_allclose(hm[4, 4, 1], math.exp(-8 / two_sigma_sq), rtol=1e-6)
    assert hm[6, 9, 1] == 0.0 and hm[3, 6, 1] == 0.0  # beyond the radius
    assert (hm[..., 1] > 0).sum() == 25  # the 5 x 5 window
    np.testing.assert_allclose(t["size"][0], [10, 10])
    np.testing.assert_allclose(t["offset"][0], [0, 0])
    assert t["indices"].tolist() == [6 * 16 + 6, 0, 0, 0]
    assert t["mask"].tolist() == [1, 0, 0, 0]


def test_same_class_combines_with_max_and_rows_without_targets():
    b = np.array([[4, 4, 44, 44], [8, 8, 48, 48], [0, 0, 20, 20], [10, 10, 10, 30]], np.float32)
    c = np.array([0, 0, 1, 0], np.int32)
    t = targets.encode(b, c, np.array([1, 1, 0, 1]), 2, (16, 16), STRIDE, 0.7)
    one = targets.encode(b[:1], c[:1], np.ones(1), 2, (16, 16), STRIDE, 0.7)["heatmap"].numpy()
    two = targets.encode(b[1:2], c[1:2], np.ones(1), 2, (16, 16), STRIDE, 0.7)["heatmap"].numpy()
    np.testing.assert_allclose(t["heatmap"].numpy(), np.maximum(one, two))
    # row 2 has weight 0 (crowd / padding), row 3 is empty: no target, index 0
    assert t["mask"].numpy().tolist() == [1, 1, 0, 0]
    assert t["indices"].numpy()[2:].tolist() == [0, 0]
    assert t["heatmap"].numpy()[..., 1].max() == 0.0


def test_decode_encode_round_trip_random_boxes():
    rng = np.random.default_rng(1)
    for n in (1, 7, 20):
        boxes, classes = _random_boxes(rng, n, 128, 3)
        t = _encode(boxes, classes, 32)
        got, got_c = decode_peaks(t["heatmap"], t["size"], t["offset"], t["indices"], t["mask"])
        order = np.lexsort(boxes.T[::-1])
        want = boxes[order]
        assert got.shape == (n, 4)
        np.testing.assert_allclose(got, want, atol=1.0)
        assert got_c.tolist() == classes[order].tolist()


def test_zero_boxes():
    t = _encode(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), 8)
    assert t["heatmap"].max() == 0 and t["mask"].sum() == 0 and t["indices"].max() == 0
    got, _ = decode_peaks(t["heatmap"], t["size"], t["offset"], t["indices"], t["mask"])
    assert got.shape == (0, 4)


def test_more_than_max_objects_keeps_largest():
    rng = np.random.default_rng(2)
    boxes, classes = _random_boxes(rng, 40, 256, 3)
    rec = {"classes": tf.constant(classes), "is_crowd": tf.zeros(40, tf.int32),
           "area": tf.ones(40, tf.float32)}
    kept, kc, _, _, count, dropped = select_objects(rec, tf.constant(boxes), 32, drop_crowd=True)
    assert int(count) == 32 and int(dropped) == 8
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    largest = np.argsort(-areas, kind="stable")[:32]
    np.testing.assert_allclose(kept.numpy(), boxes[largest])
    t = _encode(kept.numpy(), kc.numpy(), 32, size=256)
    got, _ = decode_peaks(t["heatmap"], t["size"], t["offset"], t["indices"], t["mask"])
    want = boxes[largest]
    np.testing.assert_allclose(got, want[np.lexsort(want.T[::-1])], atol=1.0)


def test_eager_equals_tf_data():
    rng = np.random.default_rng(3)
    boxes, classes = _random_boxes(rng, 10, 128, 3)
    b = np.concatenate([boxes, np.zeros((6, 4), np.float32)])
    c = np.concatenate([classes, np.zeros(6, np.int32)])
    w = np.arange(16) < 10
    eager = targets.encode(b, c, w, 3, (32, 32), STRIDE, 0.7)
    ds = tf.data.Dataset.from_tensors((b, c, w)).map(lambda b, c, w: targets.encode(b, c, w, 3, (32, 32), STRIDE, 0.7))
    graph = next(iter(ds))
    for key in eager:
        np.testing.assert_array_equal(eager[key].numpy(), graph[key].numpy())
