"""Decoding planted peaks, thresholds, class-wise NMS, mapping back, flip merge; eager == graph."""
import math

import numpy as np
import tensorflow as tf

from centernet_core.tasks.detection.decode import classwise_nms, decode, merge_flip, to_original

H = W = 16
C = 3


def planted(objects, b=1):
    """Heatmap logits with one peak per object (cy, cx, h, w, class, prob); maps in output units."""
    heat = np.full((b, H, W, C), -9.0, "float32")
    size = np.zeros((b, H, W, 2), "float32")
    offset = np.zeros((b, H, W, 2), "float32")
    for i, (cy, cx, h, w, c, p) in enumerate(objects):
        y, x = int(cy), int(cx)
        heat[0, y, x, c] = math.log(p / (1 - p))
        heat[0, y, x + 1, c] = math.log(p / 2 / (1 - p / 2))  # a lower neighbour: not a 3x3 peak
        size[0, y, x] = (h, w)
        offset[0, y, x] = (cy - y, cx - x)
    return tf.constant(heat), tf.constant(size), tf.constant(offset)


OBJECTS = [(4.25, 5.5, 4.0, 6.0, 1, 0.9), (10.75, 12.25, 2.0, 3.0, 0, 0.8), (12.5, 2.5, 5.0, 1.0, 2, 0.6)]


def expected_box(cy, cx, h, w, stride=4):
    return [(cy - h / 2) * stride, (cx - w / 2) * stride, (cy + h / 2) * stride, (cx + w / 2) * stride]


def test_planted_peaks_come_back_as_boxes_and_classes():
    det = decode(*planted(OBJECTS), max_detections=10)
    assert det["boxes_yxyx_abs"].shape == (1, 10, 4) and det["classes"].dtype == tf.int32
    np.testing.assert_allclose(det["scores"][0, :3].numpy(), [0.9, 0.8, 0.6], rtol=1e-5)
    np.testing.assert_array_equal(det["classes"][0, :3].numpy(), [1, 0, 2])
    for row, (cy, cx, h, w, _, _) in enumerate(OBJECTS):
        np.testing.assert_allclose(det["boxes_yxyx_abs"][0, row].numpy(), expected_box(cy, cx, h, w), atol=1e-4)
    # the rest are background peaks with sigmoid(-9) scores; non-peak neighbours never appear
    assert float(det["scores"][0, 3]) < 1e-3
    assert int(det["num_detections"][0]) == 10


def test_score_threshold_zero_pads_fixed_outputs():
    det = decode(*planted(OBJECTS), max_detections=10, score_threshold=0.7)
    assert int(det["num_detections"][0]) == 2
    assert det["boxes_yxyx_abs"].shape == (1, 10, 4)
    assert np.all(det["boxes_yxyx_abs"][0, 2:].numpy() == 0) and np.all(det["scores"][0, 2:].numpy() == 0)
    np.testing.assert_array_equal(det["classes"][0].numpy(), [1, 0] + [0] * 8)


def test_class_wise_nms_uses_its_iou():
    # two overlapping same-class boxes (IoU 24 / 48 = 0.5) and an identical box of another class
    objs = [(5.0, 5.0, 6.0, 6.0, 0, 0.9), (5.0, 7.0, 6.0, 6.0, 0, 0.8), (5.0, 5.0, 6.0, 6.0, 1, 0.7)]
    maps = planted(objs[:1] + objs[2:])
    heat, size, offset = (m.numpy() for m in maps)
    heat[0, 5, 7, 0] = math.log(0.8 / 0.2)  # plant the second same-class box 2 cells right
    heat[0, 5, 6, 0] = -9.0
    heat[0, 5, 8, 0] = -9.0
    size[0, 5, 7] = (6.0, 6.0)
    maps = (tf.constant(heat), tf.constant(size), tf.constant(offset))
    kept = lambda d: sorted(round(float(s), 2) for s in d["scores"][0, :int(d["num_detections"][0])])  # noqa: E731
    assert kept(decode(*maps, max_detections=5, score_threshold=0.5)) == [0.7, 0.8, 0.9]  # NMS off
    assert kept(decode(*maps, max_detections=5, score_threshold=0.5, nms_iou=0.4)) == [0.7, 0.9]
    assert kept(decode(*maps, max_detections=5, score_threshold=0.5, nms_iou=0.6)) == [0.7, 0.8, 0.9]


def test_class_wise_nms_keeps_sub_pixel_precision_for_high_class_indices():
    # Two small class-79 boxes of 80 (stride 1: pixels = map cells), IoU 1.296 / 3.704 = 0.35.
    # A fixed 1e5 px shift per class rounded them to 0.5 px (IoU 0.25: nothing suppressed at 0.3).
    heat = np.full((1, H, W, 80), -9.0, "float32")
    size = np.zeros((1, H, W, 2), "float32")
    offset = np.zeros((1, H, W, 2), "float32")
    for x, dx, p in ((5, 0.9, 0.9), (7, 0.104, 0.8)):  # x [4.65, 7.15] and [5.854, 8.354], y [4, 6]
        heat[0, 5, x, 79] = math.log(p / (1 - p))
        size[0, 5, x] = (2.0, 2.5)
        offset[0, 5, x] = (0.0, dx)
    maps = (tf.constant(heat), tf.constant(size), tf.constant(offset))
    scores = lambda iou: decode(*maps, max_detections=4, score_threshold=0.5, nms_iou=iou, stride=1)["scores"]  # noqa: E731
    np.testing.assert_allclose(scores(0.3)[0].numpy(), [0.9, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(scores(0.4)[0].numpy(), [0.9, 0.8, 0, 0], atol=1e-6)
    # The same through classwise_nms directly, with a box of another class on top of the first.
    boxes = tf.constant([[[4, 4.65, 6, 7.15], [4, 5.854, 6, 8.354], [4, 4.65, 6, 7.15]]], tf.float32)
    out = lambda iou: classwise_nms(boxes, tf.constant([[0.9, 0.8, 0.7]]), tf.constant([[79, 79, 3]]), 3, iou)  # noqa: E731
    assert out(0.3)["classes"][0].numpy().tolist() == [79, 3, 0] and int(out(0.3)["num_detections"][0]) == 2
    assert out(0.4)["classes"][0].numpy().tolist() == [79, 79, 3] and int(out(0.4)["num_detections"][0]) == 3


def test_decode_in_graph_equals_eager_and_handles_batches():
    maps = planted(OBJECTS)
    batch = [tf.concat([m, tf.reverse(m, axis=[2])], axis=0) for m in maps]
    eager = decode(*batch, max_detections=8)
    graph = tf.function(lambda h, s, o: decode(h, s, o, max_detections=8))(*batch)
    for key in eager:
        np.testing.assert_allclose(eager[key].numpy(), graph[key].numpy(), atol=1e-5)
    assert eager["boxes_yxyx_abs"].shape == (2, 8, 4)
    np.testing.assert_array_equal(np.sort(eager["classes"][1, :3].numpy()), [0, 1, 2])


def test_to_original_scales_and_clips():
    boxes = tf.constant([[[10.0, 20.0, 50.0, 300.0], [-4.0, -2.0, 8.0, 8.0]]])
    out = to_original(boxes, scale=tf.constant([0.5]), original_hw=tf.constant([[90.0, 500.0]]))
    np.testing.assert_allclose(out.numpy(), [[[20.0, 40.0, 90.0, 500.0], [0.0, 0.0, 16.0, 16.0]]])


def test_merge_flip_averages_probabilities_and_sizes():
    heat, size, offset = planted(OBJECTS)
    outputs = {"heatmap": heat, "size": size, "offset": offset}
    mirror = {k: tf.reverse(v, axis=[2]) for k, v in outputs.items()}
    merged = merge_flip(outputs, mirror)  # a perfectly mirror-consistent prediction is unchanged
    np.testing.assert_allclose(tf.sigmoid(merged["heatmap"]).numpy(), tf.sigmoid(heat).numpy(), atol=1e-6)
    np.testing.assert_allclose(merged["size"].numpy(), size.numpy())
    halved = dict(mirror, heatmap=tf.fill(heat.shape, -1e4), size=mirror["size"] * 3)
    merged = merge_flip(outputs, halved)
    np.testing.assert_allclose(tf.sigmoid(merged["heatmap"])[0, 4, 5, 1].numpy(), 0.45, rtol=1e-5)
    np.testing.assert_allclose(merged["size"][0, 4, 5].numpy(), [8.0, 12.0])
    np.testing.assert_array_equal(merged["offset"].numpy(), offset.numpy())
