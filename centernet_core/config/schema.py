"""The experiment config's schema: typed, frozen dataclasses with their defaults.

Sections: ``model``, ``data``, ``train``, ``eval``, ``export``, ``runtime``. Every field is
documented where it is declared; ``centernet_core.config.resolve`` turns user choices into
one validated instance. No TensorFlow here: config errors are reported without it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
EXPORT_FORMATS = ("saved_model", "tflite", "onnx")
AUTO = "auto"  # model.num_classes: taken from the training data's category table


@dataclass(frozen=True)
class ModelConfig:
    task: str = "detection"  # what the heads predict (centernet_core.tasks)
    backbone: str = "resnet18"
    num_classes: int | str = 80  # or "auto": the training data's class count, resolved when training starts
    input_size: int = 512
    width: float = 1.0  # channel multiplier for backbones that support it
    head_channels: int = 64  # 3x3 conv width of each head (256 for hourglass)
    heatmap_bias: float = -2.19  # log(0.1 / 0.9): prior probability 0.1
    bn_momentum: float = 0.9  # Keras convention (PyTorch's 0.1)
    bn_epsilon: float = 1e-5
    # training's moving variance from the unbiased batch variance (PyTorch's BatchNorm) instead of
    # the biased one (Keras's); ConvBN layers (hand-written backbones, FPN path) only
    bn_unbiased_variance: bool = False
    backbone_weights: str = ""  # "imagenet" (keras.applications' file, resnet50 / mobilenetv2) or a local weights file
    # task keypoints: J, and joint j's mirror image; "auto" / () take them from the training data
    num_keypoints: int | str = AUTO
    keypoint_flip: tuple[int, ...] = ()


@dataclass(frozen=True)
class DataConfig:
    train: str = ""  # TFRecord file pattern written by `centernet prepare`
    val: str = ""
    max_objects: int = 128
    min_overlap: float = 0.7  # CornerNet gaussian radius parameter
    random_flip: bool = True
    color_jitter: bool = True
    crop_scales: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
    # reference: the original's crop (centre uniform in [border, size - border]), colour jitter
    # (x[0.6, 1.4] in random order + PCA lighting) and black padding; inside: the window stays
    # inside the image along its long side, milder jitter, mean-colour padding (docs/design.md,
    # "Fidelity choices")
    augmentation: str = "inside"
    # the fraction of training inputs that are 2x2 mosaics of four augmented images, each at
    # half size (more objects, smaller and cut by tile edges, per step); custom-data presets
    # only: 0 keeps the COCO recipes as the references train (docs/design.md, "Fidelity choices").
    # An epoch counts inputs, so with mosaic f an epoch decodes (1 + 3 f) x the image count
    mosaic: float = 0.0
    crowd: str = "ignore"  # train: crowd boxes are ordinary objects (both references); ignore: left out
    shuffle_buffer: int = 1000
    deterministic: bool = False


@dataclass(frozen=True)
class TrainConfig:
    # learning_rate, steps, warmup_steps and decay_boundaries are stated for
    # reference_batch_size; with scale_with_batch they are rescaled linearly to the
    # profile's global batch and the resolved config records the result.
    steps: int = 140_000
    # epochs > 0 states the schedule in passes over the training data instead: steps, warmup
    # and decay points follow from the image count in the data's metadata and the global
    # batch when training starts (the run directory's config records the resulting steps).
    epochs: float = 0.0
    warmup_epochs: float = 0.0
    decay_epochs: tuple[float, ...] = ()
    reference_batch_size: int = 128
    scale_with_batch: bool = True
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-7
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 2000
    decay_boundaries: tuple[int, ...] = ()
    decay_rate: float = 0.1
    clip_norm: float = 10.0
    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    size_weight: float = 0.1
    offset_weight: float = 1.0
    # size / offset L1 divided by: objects (N, Model Garden) or channels (2N, the original)
    regression_normalizer: str = "objects"
    init: str = ""  # what the recipe starts from: "" (as configured) or extremenet (--init-checkpoint expected)
    joint_weight: float = 1.0  # task keypoints: the original's hp_weight, hm_hp_weight, off_weight
    keypoint_heatmap_weight: float = 1.0
    keypoint_offset_weight: float = 1.0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 5
    log_every: int = 100
    eval_every: int = 0
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 8
    max_detections: int = 100
    score_threshold: float = 0.0
    nms_iou: float = 0.0  # 0 disables class-wise NMS
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    per_class: bool = False
    allow_subset: bool = False  # evaluate even when fewer images are read than the metadata lists
    # letterbox: long side to S, mean-colour padding; original: the original's test protocol
    # (native size padded black and centred to (side | (divisor - 1)) + 1, scales from the image)
    protocol: str = "letterbox"
    merge: str = "soft_nms"  # multi-scale merge: soft_nms (Gaussian, sigma 0.5: the original) or nms
    keypoint_threshold: float = 0.1  # task keypoints: heatmap peaks above this snap the regressed joints
    keypoint_sigmas: tuple[float, ...] = ()  # OKS sigma per keypoint; () from the data (COCO's 17 for COCO)
    precision: str = "float32"  # checkpoints on CPU: auto (bfloat16 where native), float32, bfloat16


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[str, ...] = ("saved_model",)
    tflite_float16: bool = False
    onnx_opset: int = 17
    int8: bool = False  # also model_int8.tflite / model_int8.onnx (quantized core) for tflite / onnx
    calibration_data: str = ""  # TFRecord pattern for int8 calibration ("": data.train)
    calibration_images: int = 200
    float_layers: tuple[str, ...] = ()  # layer names (prefixes) kept float in the int8 exports
    validation_data: str = ""  # AP of every written format on these records ("": data.val when int8)
    int8_ap_tolerance: float = 2.0  # refuse an int8 export losing more AP50 points than this vs float
    force: bool = False  # write int8 exports even when they fail the tolerance or cannot be checked


@dataclass(frozen=True)
class RuntimeConfig:
    profile: str = ""
    strategy: str = "default"
    precision: str = "float32"
    global_batch_size: int = 16
    steps_per_loop: int = 10
    num_devices: int = 0  # 0: every visible device of the strategy's kind
    tpu: str = ""  # TPU name or grpc:// address for TPUClusterResolver
    drop_remainder: bool = False


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

