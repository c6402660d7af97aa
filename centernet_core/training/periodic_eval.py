"""Evaluation during training: COCO metrics on ``data.val`` and a few pictures for TensorBoard.

Training asks inference for the numbers (``inference.evaluate.evaluate_model``, the same
code as ``centernet eval``) and draws the pictures here; ``reporting`` only records them.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from centernet_core import config as config_lib
from centernet_core import draw
from centernet_core.inference.detect import head_maps
from centernet_core.pixels import to_rgb_uint8
from centernet_core.tasks import build_task

PICTURE_SCORE = 0.3  # predictions drawn on the TensorBoard pictures


def detection_pictures(model, cfg, features: dict, class_names: list[str], max_images: int = 3) -> np.ndarray:
    """Up to ``max_images`` eval-batch images with true (white) and predicted boxes.

    ``features`` is one eval batch of the pipeline (image, scale, gt_boxes_yxyx_abs,
    gt_count); drawn in input pixels. Returns uint8 ``[N, S, S, 3]``.
    """
    images = features["image"][:max_images]
    task = build_task(cfg)
    det = {k: v.numpy() for k, v in task.decode(head_maps(model, task, images), max_detections=100).items()}
    scale = features["scale"].numpy()[:max_images]
    gt = features["gt_boxes_yxyx_abs"].numpy()[:max_images] * scale[:, None, None]  # [N, K, 4] input px
    out = []
    for i, rgb in enumerate(to_rgb_uint8(images.numpy())):
        picture = Image.fromarray(rgb)
        pen = ImageDraw.Draw(picture)
        for ymin, xmin, ymax, xmax in gt[i, : int(features["gt_count"][i])]:
            pen.rectangle([xmin, ymin, xmax, ymax], outline=(255, 255, 255), width=1)
        keep = det["scores"][i] >= PICTURE_SCORE
        classes = det["classes"][i][keep]
        picture = draw.draw_detections(picture, det["boxes_yxyx_abs"][i][keep], det["scores"][i][keep], classes,
                                       [class_names[int(c)] if int(c) < len(class_names) else str(c)
                                        for c in classes])
        out.append(np.asarray(picture))
    return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def evaluate_during_training(model, cfg, val_pattern: str, meta: dict, num_pictures: int = 3):
    """COCO metrics of ``model`` on ``val_pattern`` (``evaluate.evaluate_model``) and pictures.

    Returns ``(metrics, pictures)``; pictures are the first ``num_pictures`` validation
    images with true and predicted boxes, uint8 ``[N, S, S, 3]``.
    """
    from centernet_core.data.metadata import category_names
    from centernet_core.data.pipeline import build_dataset
    from centernet_core.inference.evaluate import evaluate_model

    metrics = evaluate_model(model, config_lib.override(cfg, ["eval.per_class=true"]), val_pattern, meta["categories"])
    features, _ = next(iter(build_dataset(val_pattern, cfg, False, batch_size=num_pictures)))
    return metrics, detection_pictures(model, cfg, features, category_names(meta), num_pictures)
