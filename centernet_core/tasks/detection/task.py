"""The detection task: heatmap + size + offset heads, their targets, loss and decoder.

Outputs (per stack): ``heatmap`` (C class logits; last bias ``heatmap_bias``, the logit of
a 0.1 prior), ``size`` (h, w in output-map units) and ``offset`` (dy, dx sub-pixel centre
offset). The formulas live in ``targets``, ``losses`` and ``decode``; this class binds
them to the config's values and is what the rest of the toolkit calls.
"""
from __future__ import annotations

import tensorflow as tf

from centernet_core.strides import OUTPUT_STRIDE
from centernet_core.tasks.base import HeadSpec, Task, register_task
from centernet_core.tasks.detection import decode as decode_lib
from centernet_core.tasks.detection import losses, targets

# IoU for merging scales with hard NMS (eval.merge: nms) when eval.nms_iou is 0 (its "no
# NMS" value means nothing for a merge that always needs one). The original merges with
# Gaussian soft-NMS (eval.merge: soft_nms, the default), not with hard NMS at any IoU.
MERGE_IOU = 0.5
MERGES = ("soft_nms", "nms")


@register_task("detection")
class DetectionTask(Task):
    """CenterNet's object detection (``model.task: detection``).

    Args:
      num_classes: C.
      heatmap_bias: initial bias of the heatmap heads' last conv.
      min_overlap: CornerNet gaussian radius parameter of the heatmap targets.
      focal_alpha, focal_beta, size_weight, offset_weight: the loss's parameters.
      stride: input pixels per output cell.
    """

    loss_keys = ("total", "heatmap", "size", "offset")

    def __init__(self, num_classes: int, heatmap_bias: float = -2.19, min_overlap: float = 0.7,
                 focal_alpha: float = 2.0, focal_beta: float = 4.0, size_weight: float = 0.1,
                 offset_weight: float = 1.0, stride: int = OUTPUT_STRIDE, regression_normalizer: str = "objects",
                 merge: str = "nms"):
        self.num_classes, self.heatmap_bias, self.min_overlap = int(num_classes), float(heatmap_bias), min_overlap
        self.focal_alpha, self.focal_beta = focal_alpha, focal_beta
        self.size_weight, self.offset_weight, self.stride = size_weight, offset_weight, int(stride)
        if regression_normalizer not in losses.REGRESSION_NORMALIZERS or merge not in MERGES:
            raise ValueError(f"regression_normalizer {regression_normalizer!r} / merge {merge!r}: valid "
                             f"{tuple(losses.REGRESSION_NORMALIZERS)} / {MERGES}")
        self.regression_normalizer, self.merge = regression_normalizer, merge

    @classmethod
    def from_config(cls, cfg) -> "DetectionTask":
        m, t = cfg.model, cfg.train
        return cls(m.num_classes, m.heatmap_bias, cfg.data.min_overlap, t.focal_alpha, t.focal_beta,
                   t.size_weight, t.offset_weight, regression_normalizer=t.regression_normalizer,
                   merge=cfg.eval.merge)

    def heads(self) -> tuple[HeadSpec, ...]:
        return (HeadSpec("heatmap", self.num_classes, self.heatmap_bias), HeadSpec("size", 2), HeadSpec("offset", 2))

    def encode(self, objects: dict, output_hw: tuple[int, int]) -> dict:
        """``objects``: ``boxes_yxyx_abs`` ``[B, K, 4]`` input pixels, ``classes`` int32 ``[B, K]``,
        ``weights`` bool ``[B, K]`` (real, trained-on objects). Returns ``targets.encode``'s dict."""
        return targets.encode(objects["boxes_yxyx_abs"], objects["classes"], objects["weights"], self.num_classes,
                              output_hw, self.stride, self.min_overlap)

    def object_mask(self, targets: dict):
        return targets["mask"]

    def loss(self, outputs, targets: dict, num_objects) -> dict:
        return losses.centernet_loss(outputs, targets, num_objects, self.focal_alpha, self.focal_beta,
                                     self.size_weight, self.offset_weight, self.regression_normalizer)

    def decode(self, maps: dict, max_detections: int = 100, score_threshold: float = 0.0,
               nms_iou: float = 0.0) -> dict:
        return decode_lib.decode(maps["heatmap"], maps["size"], maps["offset"], max_detections=max_detections,
                                 score_threshold=score_threshold, nms_iou=nms_iou, stride=self.stride)

    def merge_flip(self, maps: dict, maps_flipped: dict) -> dict:
        return decode_lib.merge_flip(maps, maps_flipped)

    def rescale(self, detections: dict, factor: float) -> dict:
        return dict(detections, boxes_yxyx_abs=detections["boxes_yxyx_abs"] * factor)

    def merge_scales(self, parts: list[dict], max_detections: int, iou: float, score_threshold: float) -> dict:
        def cat(key):
            return tf.concat([p[key] for p in parts], axis=1)
        if self.merge == "soft_nms":
            return decode_lib.classwise_soft_nms(cat("boxes_yxyx_abs"), cat("scores"), cat("classes"),
                                                 max_detections, score_threshold=score_threshold)
        return decode_lib.classwise_nms(cat("boxes_yxyx_abs"), cat("scores"), cat("classes"), max_detections,
                                        iou or MERGE_IOU, score_threshold)

    def to_original(self, detections: dict, scale, original_hw) -> dict:
        return dict(detections, boxes_yxyx_abs=decode_lib.to_original(detections["boxes_yxyx_abs"], scale,
                                                                       original_hw))
