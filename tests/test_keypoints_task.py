"""The keypoints task's formulas, each against a small hand-computed case.

Input 64 px, stride 4: the output map is 16 x 16. Letters: K objects, J joints.
"""
import numpy as np
import pytest
import tensorflow as tf

from centernet_core.tasks.detection import losses as det_losses
from centernet_core.tasks.keypoints import decode as kp_decode
from centernet_core.tasks.keypoints import losses as kp_losses
from centernet_core.tasks.keypoints import targets as kp_targets
from centernet_core.tasks.keypoints.task import KeypointsTask

HW = (16, 16)
# Object 0: box (8, 8, 42, 26) px -> (2, 2, 10.5, 6.5) cells, centre (6.25, 4.25), cell (6, 4).
# Joints: j0 (12, 10) px visible -> (3, 2.5) cells; j1 labelled 0; j2 (100, 20) px is below the map.
# Object 1: box (40, 40, 60, 60) px with no labelled joint: a 0.9999 peak, trains nothing.
BOXES = [[8.0, 8.0, 42.0, 26.0], [40.0, 40.0, 60.0, 60.0]]
KEYPOINTS = [[[12.0, 10.0, 2.0], [30.0, 20.0, 0.0], [100.0, 20.0, 2.0]],
             [[44.0, 44.0, 0.0], [50.0, 50.0, 0.0], [55.0, 55.0, 0.0]]]


def _encode(boxes=BOXES, keypoints=KEYPOINTS, weights=(True, True)):
    return kp_targets.encode(tf.constant([boxes]), tf.zeros([1, len(boxes)], tf.int32), tf.constant([weights]),
                             tf.constant([keypoints]), 1, HW)


def test_targets_hand_computed():
    t = {k: v.numpy()[0] for k, v in _encode().items()}
    np.testing.assert_allclose(t["mask"], [1.0, 0.0])
    assert t["indices"][0] == 6 * 16 + 4
    np.testing.assert_allclose(t["joint_mask"][0], [1.0, 0.0, 0.0])  # unlabelled and off-map joints masked
    np.testing.assert_allclose(t["joints"][0], [[3 - 6, 2.5 - 4], [0, 0], [0, 0]])
    np.testing.assert_allclose(t["joint_mask"][1], [0.0, 0.0, 0.0])
    assert t["keypoint_heatmap"][3, 2, 0] == 1.0
    assert t["keypoint_heatmap"][..., 1:].max() == 0.0
    assert t["keypoint_indices"][0] == 3 * 16 + 2 and t["keypoint_indices"][1:].max() == 0
    np.testing.assert_allclose(t["keypoint_offset"][0], [0.0, 0.5])
    np.testing.assert_allclose(t["keypoint_mask"], [1, 0, 0, 0, 0, 0])
    # the object without joints: centre (12.5, 12.5) -> cell (12, 12) at 0.9999, not a positive
    assert t["heatmap"][12, 12, 0] == pytest.approx(0.9999)
    assert t["heatmap"][6, 4, 0] == 1.0
    # keypoint gaussian radius = the box's (ceil(8.5) x ceil(4.5) cells -> detection's radius)
    from centernet_core.tasks.detection.targets import gaussian_radius
    r = int(np.floor(gaussian_radius(9.0, 5.0).numpy()))
    sigma = (2 * r + 1) / 6
    assert t["keypoint_heatmap"][3, 2 + r, 0] == pytest.approx(np.exp(-r * r / (2 * sigma * sigma)), rel=1e-5)
    assert t["keypoint_heatmap"][3, 2 + r + 1, 0] == 0.0


def test_crowd_and_padding_objects_train_no_joints():
    t = _encode(weights=(False, False))
    assert float(tf.reduce_sum(t["joint_mask"])) == 0.0 and float(tf.reduce_max(t["keypoint_heatmap"])) == 0.0


def _outputs(value: float):
    """Every map constant: heatmap logit 0, size/offset 0, joints and keypoint offsets ``value``."""
    return {"heatmap": tf.zeros([1, 16, 16, 1]), "size": tf.zeros([1, 16, 16, 2]),
            "offset": tf.zeros([1, 16, 16, 2]), "joints": tf.fill([1, 16, 16, 6], value),
            "keypoint_heatmap": tf.zeros([1, 16, 16, 3]), "keypoint_offset": tf.fill([1, 16, 16, 2], value)}


def test_losses_hand_computed():
    t = _encode()
    loss = {k: float(v) for k, v in kp_losses.multi_pose_loss(_outputs(1.0), t, 1.0).items()}
    # joints: |1 - (-3)| + |1 - (-1.5)| = 6.5 over one joint, / (2 x 1 joint)
    assert loss["joints"] == pytest.approx(3.25)
    # keypoint offset: |1 - 0| + |1 - 0.5| = 1.5, / 2
    assert loss["keypoint_offset"] == pytest.approx(0.75)
    focal = float(det_losses.focal_loss(tf.zeros([1, 16, 16, 3]), t["keypoint_heatmap"]))
    assert loss["keypoint_heatmap"] == pytest.approx(focal / 1.0)
    det = det_losses.centernet_loss(_outputs(1.0), t, 1.0)
    assert loss["total"] == pytest.approx(float(det["total"]) + 3.25 + focal + 0.75, rel=1e-6)
    # weights
    task = KeypointsTask(1, 3, joint_weight=2.0, keypoint_heatmap_weight=0.5, keypoint_offset_weight=0.0)
    weighted = task.loss([_outputs(1.0)], t, 1.0)
    assert float(weighted["total"]) == pytest.approx(float(det["total"]) + 6.5 + 0.5 * focal, rel=1e-6)


def test_snapping_rule():
    box = tf.constant([[[2.0, 2.0, 10.0, 6.0]]])  # [B, N, 4] cells; longer side 8: reach 2.4
    joint = tf.constant([[[[5.0, 4.0]]]])  # [B, N, J, 2]

    def run(peak_yx, score):
        j, snapped, _ = kp_decode.snap(joint, box, tf.constant([[[score]]]), tf.constant([[[peak_yx]]]), 0.1)
        return j.numpy()[0, 0, 0].tolist(), bool(snapped[0, 0, 0])

    assert run([6.0, 5.5], 0.5) == ([6.0, 5.5], True)  # inside, near, above threshold
    assert run([5.0, 6.2], 0.5) == ([5.0, 4.0], False)  # near (2.2 cells) but outside the box (x > 6)
    assert run([5.0, 6.0], 0.5) == ([5.0, 6.0], True)  # on the box's edge: inside
    assert run([6.0, 5.5], 0.1) == ([5.0, 4.0], False)  # at the threshold
    assert run([7.5, 4.0], 0.5) == ([5.0, 4.0], False)  # 2.5 cells away > 0.3 x 8
    assert run([7.4, 4.0], 0.5)[1]  # 2.4 cells away: snapped
    # the nearest live peak wins; a nearer peak below the threshold does not count
    j, snapped, score = kp_decode.snap(joint, box, tf.constant([[[0.05, 0.3, 0.9]]]),
                                       tf.constant([[[[5.0, 4.1], [5.5, 4.0], [3.0, 3.0]]]]), 0.1)
    assert j.numpy()[0, 0, 0].tolist() == [5.5, 4.0] and float(score[0, 0, 0]) == pytest.approx(0.3)


def test_merge_flip_permutes_and_mirrors_joints():
    # W = 4 map, J = 2, flip pairs (0 <-> 1). The mirror's joint 1 at mirrored cell 3 - x is joint 0 at x.
    mirror_joints = np.zeros([1, 1, 4, 4], np.float32)
    mirror_joints[0, 0, 3] = [0.5, 0.25, -1.0, 2.0]  # cell x = 0 once mirrored back: j0 (0.5, .25), j1 (-1, 2)
    zeros = {"heatmap": tf.zeros([1, 1, 4, 1]), "size": tf.zeros([1, 1, 4, 2]), "offset": tf.zeros([1, 1, 4, 2]),
             "joints": tf.zeros([1, 1, 4, 4]), "keypoint_heatmap": tf.constant([[[[3.0, -3.0]] * 4]]),
             "keypoint_offset": tf.zeros([1, 1, 4, 2])}
    flipped = dict(zeros, joints=tf.constant(mirror_joints),
                   keypoint_heatmap=tf.constant([[[[-3.0, 3.0]] * 3 + [[-3.0, 1.0]]]]))
    merged = kp_decode.merge_flip(zeros, flipped, [1, 0])
    # joint 0 <- mirror joint 1 (-1, 2) -> (dy, 1 - dx) = (-1, -1), averaged with 0
    np.testing.assert_allclose(merged["joints"].numpy()[0, 0, 0], [-0.5, -0.5, 0.25, 0.375])
    prob = tf.sigmoid(merged["keypoint_heatmap"]).numpy()[0, 0]
    s = 1 / (1 + np.exp(-np.array([3.0, 1.0, -3.0])))
    np.testing.assert_allclose(prob[1], [s[0], s[2]], rtol=1e-5)  # permuted: mirror channel 1 -> joint 0
    np.testing.assert_allclose(prob[0], [(s[0] + s[1]) / 2, s[2]], rtol=1e-5)  # mirror cell 3 -> cell 0


def _maps_from_targets(t, num_joints):
    """The maps a perfect model would output for targets ``t`` (batched)."""
    b, h, w, _ = t["heatmap"].shape

    def logit(p):
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p) - np.log1p(-p)

    def scatter(values, indices, mask, depth):
        out = np.zeros([b, h * w, depth], np.float32)
        for i in range(b):
            for k in np.nonzero(mask[i])[0]:
                out[i, indices[i, k]] = values[i, k].reshape(-1)
        return out.reshape(b, h, w, depth)
    t = {k: v.numpy() for k, v in t.items()}
    return {"heatmap": logit(t["heatmap"]), "size": scatter(t["size"], t["indices"], t["mask"], 2),
            "offset": scatter(t["offset"], t["indices"], t["mask"], 2),
            "joints": scatter(t["joints"], t["indices"], t["mask"], 2 * num_joints),
            "keypoint_heatmap": logit(t["keypoint_heatmap"]),
            "keypoint_offset": scatter(t["keypoint_offset"], t["keypoint_indices"], t["keypoint_mask"], 2)}


def _person():
    box = [10.0, 9.0, 50.0, 30.0]  # centre (30, 19.5) px: cells (7.5, 4.875) -> 7, 4 (not whole: a mirror keeps it)
    kps = [[14.0, 13.0, 2.0], [14.0, 27.0, 2.0], [45.0, 17.0, 2.0]]  # left eye, right eye, left foot
    return box, kps


def test_decode_of_perfect_maps_and_flip_test_return_the_keypoints():
    """encode (image and mirror, joints permuted as training does) -> perfect maps -> merge_flip -> decode."""
    box, kps = _person()
    flip_index = [1, 0, 2]
    t = _encode([box], [kps], (True,))
    s = 64.0
    mbox = [box[0], s - box[3], box[2], s - box[1]]
    mkps = [[kps[j][0], s - kps[j][1], kps[j][2]] for j in flip_index]
    tm = _encode([mbox], [mkps], (True,))
    maps, mirror = _maps_from_targets(t, 3), _maps_from_targets(tm, 3)
    task = KeypointsTask(1, 3, flip_index)
    for m in (maps, task.merge_flip(maps, mirror)):
        det = task.decode({k: tf.constant(v) for k, v in m.items()}, max_detections=5)
        assert int(det["num_detections"][0]) >= 1
        np.testing.assert_allclose(det["keypoints_yx_abs"].numpy()[0, 0], np.array(kps)[:, :2], atol=1e-4)
        np.testing.assert_allclose(det["boxes_yxyx_abs"].numpy()[0, 0], box, atol=1e-4)


def test_regressed_joints_without_peaks_and_back_to_original():
    box, kps = _person()
    maps = _maps_from_targets(_encode([box], [kps], (True,)), 3)
    maps["keypoint_heatmap"][:] = -10.0  # no keypoint peaks: the regressed joints stay (exact cells + offsets)
    task = KeypointsTask(1, 3)
    det = task.decode({k: tf.constant(v) for k, v in maps.items()}, max_detections=3)
    np.testing.assert_allclose(det["keypoints_yx_abs"].numpy()[0, 0], np.array(kps)[:, :2], atol=1e-4)
    out = task.to_original(task.rescale(det, 2.0), tf.constant([0.5]), tf.constant([[100.0, 30.0]]))
    np.testing.assert_allclose(out["keypoints_yx_abs"].numpy()[0, 0],
                               np.minimum(np.array(kps)[:, :2] * 4, [100.0, 30.0]), atol=1e-3)


def test_heads_and_flip_validation():
    task = KeypointsTask(2, 5, [1, 0, 2, 4, 3])
    assert [(h.name, h.channels) for h in task.heads()] == [
        ("heatmap", 2), ("size", 2), ("offset", 2), ("joints", 10), ("keypoint_heatmap", 5), ("keypoint_offset", 2)]
    with pytest.raises(Exception, match="permutation"):
        KeypointsTask(1, 3, [0, 0, 1])
