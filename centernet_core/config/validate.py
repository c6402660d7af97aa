"""Cross-field rules of a config, all in one place."""
from __future__ import annotations

from centernet_core import strides
from centernet_core.config.schema import (AUTO, EXPORT_FORMATS, OPTIMIZERS, PRECISIONS, SCHEDULES, STRATEGIES,
                                          ExperimentConfig)
from centernet_core.errors import ConfigError

AUGMENTATIONS = ("reference", "inside")
CROWD_MODES = ("train", "ignore")
REGRESSION_NORMALIZERS = ("objects", "channels")
INITS = ("", "extremenet")
EVAL_PROTOCOLS = ("letterbox", "original")
EVAL_MERGES = ("soft_nms", "nms")

WIDTH_BACKBONES = ("resnet18", "mobilenetv2")  # the builders that scale channels by model.width


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field rules, all in one place. Raises ConfigError naming the keys."""
    m, d, t, e, r = cfg.model, cfg.data, cfg.train, cfg.eval, cfg.runtime
    checks = [
        (m.backbone in strides.INPUT_DIVISOR,
         f"model.backbone: unknown backbone '{m.backbone}'; valid: {', '.join(strides.INPUT_DIVISOR)}"),
        (m.num_classes == AUTO or m.num_classes >= 1, "model.num_classes must be at least 1 (or auto)"),
        (m.num_keypoints == AUTO or m.num_keypoints >= 1, "model.num_keypoints must be at least 1 (or auto)"),
        (not m.keypoint_flip or m.num_keypoints == AUTO or sorted(m.keypoint_flip) == list(range(m.num_keypoints)),
         f"model.keypoint_flip must be a permutation of 0..{m.num_keypoints}-1 (joint j's mirror image)"),
        (not e.keypoint_sigmas or m.num_keypoints == AUTO or len(e.keypoint_sigmas) == m.num_keypoints,
         "eval.keypoint_sigmas must hold one OKS sigma per keypoint (model.num_keypoints)"),
        (m.width > 0, "model.width must be positive"),
        (m.width == 1.0 or m.backbone in WIDTH_BACKBONES,
         f"model.width={m.width}: {m.backbone} has fixed channels; use --set model.width=1.0 "
         f"(only {' and '.join(WIDTH_BACKBONES)} take a width multiplier)"),
        (0.0 <= m.bn_momentum < 1.0, f"model.bn_momentum={m.bn_momentum} must be in [0, 1); e.g. --set model.bn_momentum=0.9"),
        (m.head_channels >= 1, "model.head_channels must be at least 1"),
        (d.max_objects >= 1, "data.max_objects must be at least 1"),
        (0.0 < d.min_overlap < 1.0, "data.min_overlap must be in (0, 1)"),
        (all(s > 0 for s in d.crop_scales) and len(d.crop_scales) > 0, "data.crop_scales must be positive numbers"),
        (d.augmentation in AUGMENTATIONS, f"data.augmentation must be one of {', '.join(AUGMENTATIONS)}"),
        (0.0 <= d.mosaic <= 1.0, f"data.mosaic={d.mosaic} must be a fraction in [0, 1]; e.g. --set data.mosaic=0.5"),
        (d.mosaic == 0 or (d.augmentation == "inside" and m.task == "detection"),
         "data.mosaic works with data.augmentation=inside and model.task=detection; use --set data.mosaic=0"),
        (d.crowd in CROWD_MODES, f"data.crowd must be one of {', '.join(CROWD_MODES)}"),
        (t.regression_normalizer in REGRESSION_NORMALIZERS,
         f"train.regression_normalizer must be one of {', '.join(REGRESSION_NORMALIZERS)}"),
        (t.init in INITS, f"train.init must be one of {', '.join(repr(i) for i in INITS)}"),
        (e.protocol in EVAL_PROTOCOLS, f"eval.protocol must be one of {', '.join(EVAL_PROTOCOLS)}"),
        (e.merge in EVAL_MERGES, f"eval.merge must be one of {', '.join(EVAL_MERGES)}"),
        (t.steps >= 1, "train.steps must be at least 1"),
        (t.reference_batch_size >= 1, "train.reference_batch_size must be at least 1"),
        (t.optimizer in OPTIMIZERS, f"train.optimizer must be one of {', '.join(OPTIMIZERS)}"),
        (t.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}"),
        (t.learning_rate > 0, "train.learning_rate must be positive"),
        (0 <= t.warmup_steps < t.steps, "train.warmup_steps must be in [0, train.steps)"),
        (list(t.decay_boundaries) == sorted(t.decay_boundaries) and all(0 < b < t.steps for b in t.decay_boundaries),
         "train.decay_boundaries must be increasing steps inside (0, train.steps)"),
        (t.schedule != "step" or len(t.decay_boundaries) > 0 or (t.epochs > 0 and len(t.decay_epochs) > 0),
         "train.schedule=step needs train.decay_boundaries (or train.decay_epochs with train.epochs)"),
        (t.epochs >= 0 and t.warmup_epochs >= 0, "train.epochs and train.warmup_epochs must be >= 0"),
        (all(e > 0 for e in t.decay_epochs) and list(t.decay_epochs) == sorted(t.decay_epochs),
         "train.decay_epochs must be increasing positive epochs (points past the end are clamped to it)"),
        (t.weight_decay >= 0 and t.clip_norm >= 0, "train.weight_decay and train.clip_norm must be >= 0"),
        (t.checkpoint_every >= 1 and t.keep_checkpoints >= 1 and t.log_every >= 1,
         "train.checkpoint_every, train.keep_checkpoints and train.log_every must be at least 1"),
        (t.focal_alpha > 0 and t.focal_beta > 0,
         f"train.focal_alpha={t.focal_alpha} and train.focal_beta={t.focal_beta} must be > 0; "
         "e.g. --set train.focal_alpha=2 --set train.focal_beta=4"),
        (t.size_weight >= 0 and t.offset_weight >= 0,
         f"train.size_weight={t.size_weight} and train.offset_weight={t.offset_weight} must be >= 0; "
         "e.g. --set train.size_weight=0.1 --set train.offset_weight=1"),
        (t.eval_every >= 0, "train.eval_every must be >= 0 (0 disables)"),
        (e.batch_size >= 1 and e.max_detections >= 1, "eval.batch_size and eval.max_detections must be at least 1"),
        (0.0 <= e.score_threshold < 1.0, "eval.score_threshold must be in [0, 1)"),
        (0.0 <= e.nms_iou <= 1.0, "eval.nms_iou must be in [0, 1] (0 disables NMS)"),
        (all(s > 0 for s in e.scales) and len(e.scales) > 0, "eval.scales must be positive numbers"),
        (all(f in EXPORT_FORMATS for f in cfg.export.formats),
         f"export.formats: each must be one of {', '.join(EXPORT_FORMATS)}"),
        (cfg.export.calibration_images >= 1, "export.calibration_images must be at least 1"),
        (cfg.export.int8_ap_tolerance >= 0, "export.int8_ap_tolerance must be >= 0 (AP50 points)"),
        (e.precision in ("auto", "float32", "bfloat16"), "eval.precision must be one of auto, float32, bfloat16"),
        (r.strategy in STRATEGIES, f"runtime.strategy must be one of {', '.join(STRATEGIES)}"),
        (r.precision in PRECISIONS, f"runtime.precision must be one of {', '.join(PRECISIONS)}"),
        (r.global_batch_size >= 1 and r.steps_per_loop >= 1,
         "runtime.global_batch_size and runtime.steps_per_loop must be at least 1"),
        (r.num_devices >= 0, "runtime.num_devices must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    divisor = strides.INPUT_DIVISOR[m.backbone]
    if m.input_size % divisor:
        lower = max(divisor, m.input_size // divisor * divisor)
        raise ConfigError(f"model.input_size={m.input_size} must be divisible by {divisor} for backbone "
                          f"{m.backbone}; try --set model.input_size={lower}")

