"""The keypoints task: CenterNet's multi-person pose estimation (the original's multi_pose).

Outputs (per stack): detection's ``heatmap`` (C), ``size`` (2) and ``offset`` (2), plus
``joints`` (2J: (dy, dx) of each joint from the object's centre cell), ``keypoint_heatmap``
(J, last bias ``heatmap_bias``) and ``keypoint_offset`` (2: a joint's sub-pixel offset).
J and the flip permutation come from the training data's metadata through the config
(``model.num_keypoints``, ``model.keypoint_flip``; ``config.fit_to_data``).
"""
from __future__ import annotations

import tensorflow as tf

from centernet_core.errors import ConfigError
from centernet_core.strides import OUTPUT_STRIDE
from centernet_core.tasks.base import HeadSpec, register_task
from centernet_core.tasks.detection import decode as det_decode
from centernet_core.tasks.detection.task import MERGE_IOU, DetectionTask
from centernet_core.tasks.keypoints import decode as decode_lib
from centernet_core.tasks.keypoints import losses, targets


@register_task("keypoints")
class KeypointsTask(DetectionTask):
    """Objects as centres with J keypoints each (``model.task: keypoints``).

    Args (beyond ``DetectionTask``'s):
      num_keypoints: J.
      flip_index: J ints, joint j's mirror image (``()``: every joint is its own).
      joint_weight, keypoint_heatmap_weight, keypoint_offset_weight: loss weights (the
        original's hp_weight, hm_hp_weight, off_weight: 1, 1, 1).
      keypoint_threshold: the snapping rule's peak threshold (the original's 0.1).
    """

    loss_keys = ("total", "heatmap", "size", "offset", "joints", "keypoint_heatmap", "keypoint_offset")

    def __init__(self, num_classes: int, num_keypoints: int, flip_index=(), heatmap_bias: float = -2.19,
                 min_overlap: float = 0.7, focal_alpha: float = 2.0, focal_beta: float = 4.0,
                 size_weight: float = 0.1, offset_weight: float = 1.0, joint_weight: float = 1.0,
                 keypoint_heatmap_weight: float = 1.0, keypoint_offset_weight: float = 1.0,
                 keypoint_threshold: float = 0.1, stride: int = OUTPUT_STRIDE):
        super().__init__(num_classes, heatmap_bias, min_overlap, focal_alpha, focal_beta, size_weight,
                         offset_weight, stride)
        self.num_keypoints = int(num_keypoints)
        self.flip_index = tuple(int(i) for i in flip_index) or tuple(range(self.num_keypoints))
        if sorted(self.flip_index) != list(range(self.num_keypoints)):
            raise ConfigError(f"model.keypoint_flip {list(self.flip_index)} is not a permutation of "
                              f"0..{self.num_keypoints - 1}")
        self.joint_weight, self.keypoint_heatmap_weight = joint_weight, keypoint_heatmap_weight
        self.keypoint_offset_weight, self.keypoint_threshold = keypoint_offset_weight, keypoint_threshold

    @classmethod
    def from_config(cls, cfg) -> "KeypointsTask":
        m, t = cfg.model, cfg.train
        if not isinstance(m.num_keypoints, int) or m.num_keypoints < 1:
            raise ConfigError(f"model.num_keypoints is {m.num_keypoints}: it is taken from the training data's "
                              "keypoint names when training starts; to build the model without data give "
                              "--set model.num_keypoints=J")
        return cls(m.num_classes, m.num_keypoints, m.keypoint_flip, m.heatmap_bias, cfg.data.min_overlap,
                   t.focal_alpha, t.focal_beta, t.size_weight, t.offset_weight, t.joint_weight,
                   t.keypoint_heatmap_weight, t.keypoint_offset_weight, cfg.eval.keypoint_threshold)

    def heads(self) -> tuple[HeadSpec, ...]:
        return super().heads() + (HeadSpec("joints", 2 * self.num_keypoints),
                                  HeadSpec("keypoint_heatmap", self.num_keypoints, self.heatmap_bias),
                                  HeadSpec("keypoint_offset", 2))

    def encode(self, objects: dict, output_hw: tuple[int, int]) -> dict:
        """``objects``: detection's plus ``keypoints_yxv`` ``[B, K, J, 3]`` (input pixels, v)."""
        return targets.encode(objects["boxes_yxyx_abs"], objects["classes"], objects["weights"],
                              objects["keypoints_yxv"], self.num_classes, output_hw, self.stride, self.min_overlap)

    def loss(self, outputs, targets: dict, num_objects) -> dict:
        return losses.multi_pose_loss(outputs, targets, num_objects, self.focal_alpha, self.focal_beta,
                                      self.size_weight, self.offset_weight, self.joint_weight,
                                      self.keypoint_heatmap_weight, self.keypoint_offset_weight)

    def decode(self, maps: dict, max_detections: int = 100, score_threshold: float = 0.0,
               nms_iou: float = 0.0) -> dict:
        det = decode_lib.decode(maps, max_detections, score_threshold, self.keypoint_threshold, self.stride)
        return decode_lib.nms(det, max_detections, nms_iou, score_threshold) if nms_iou > 0.0 else det

    def merge_flip(self, maps: dict, maps_flipped: dict) -> dict:
        return decode_lib.merge_flip(maps, maps_flipped, self.flip_index)

    def rescale(self, detections: dict, factor: float) -> dict:
        return dict(super().rescale(detections, factor), keypoints_yx_abs=detections["keypoints_yx_abs"] * factor)

    def merge_scales(self, parts: list[dict], max_detections: int, iou: float, score_threshold: float) -> dict:
        merged = {k: tf.concat([p[k] for p in parts], axis=1) for k in parts[0] if k != "num_detections"}
        return decode_lib.nms(merged, max_detections, iou or MERGE_IOU, score_threshold)

    def to_original(self, detections: dict, scale, original_hw) -> dict:
        return dict(detections, boxes_yxyx_abs=det_decode.to_original(detections["boxes_yxyx_abs"], scale,
                                                                       original_hw),
                    keypoints_yx_abs=decode_lib.to_original(detections["keypoints_yx_abs"], scale, original_hw))
