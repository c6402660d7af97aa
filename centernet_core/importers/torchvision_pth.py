"""torchvision's ImageNet ResNet-18 (``resnet18-f37072fd.pth``) -> this toolkit's ``resnet18`` trunk.

Tensors come from :mod:`centernet_core.importers.torch_pickle` (PyTorch is not needed). The
plan, one entry per Keras ``ConvBN`` of the trunk (``modeling.backbones.resnet``):

  conv1, bn1                                  -> stem_conv
  layer{s}.{j}.conv1 / bn1, conv2 / bn2       -> stage{s}_{j}_conv1, stage{s}_{j}_conv2
  layer{s}.0.downsample.0 / downsample.1      -> stage{s}_0_skip   (s = 2, 3, 4)
  fc.weight, fc.bias                          ignored (the ImageNet classifier)

Conv weights go OIHW -> HWIO, BN weight, bias, running_mean, running_var -> gamma, beta,
moving_mean, moving_variance (``num_batches_tracked`` dropped). The input differs, and
``conv1`` is changed so the trunk sees what torchvision's did:

* channel order: torchvision reads R, G, B, this model B, G, R: ``conv1``'s input
  channels are reversed;
* scale: torchvision divides by ImageNet's std, this model by ``pixels.STD_BGR``: ``conv1``
  is multiplied per input channel by ``STD_BGR / ImageNet std`` (exact, zero padding too).
  The means differ by at most 0.015 of the pixel range (``pixels.MEAN_BGR`` against
  ImageNet's); that shift is kept, as the original CenterNet keeps it with these weights.

So the trunk gives torchvision's stride-32 features of the same picture up to that small
shift, and exactly (tests: 1e-4) for the normalised input ``x * STD_BGR / std`` in R, G, B.

ResNet-50 is refused: torchvision's is v1.5 (stride in the bottleneck's 3x3 conv) while
``resnet50`` here is keras.applications' v1 (stride in the first 1x1 conv, convs with
biases); it takes ``model.backbone_weights: imagenet`` instead.

The import writes a run directory (all or nothing) like ``--from centernet-pth
--backbone-only``: ``ckpt-0`` with the trunk's ImageNet weights and a fresh upsampling path
and heads, ``config.yaml``, ``import.json``. ``centernet train --init-checkpoint DIR``
starts from it (the backbone kept; the heads are new whenever the class count differs).
"""
from __future__ import annotations

import numpy as np

from centernet_core import config as config_lib
from centernet_core import run_dir, storage
from centernet_core.errors import CenterNetError, ConfigError
from centernet_core.importers import torch_pickle
from centernet_core.importers.pytorch_layout import (BN_FIELDS, ConvBNEntry, flat_layers, hwio, listing,
                                                     state_dict_of)
from centernet_core.importers.torch_pickle import CheckpointError
from centernet_core.pixels import STD_BGR

IMAGENET_STD_RGB = (0.229, 0.224, 0.225)  # torchvision's transforms.Normalize for its ImageNet weights
CLASSIFIER_KEYS = ("fc.weight", "fc.bias")
RESNET18_BLOCKS = (2, 2, 2, 2)


def resnet18_plan() -> list[ConvBNEntry]:
    """Every torchvision -> Keras layer correspondence of the ResNet-18 trunk."""
    plan = [ConvBNEntry("conv1", "bn1", "stem_conv")]
    for s, blocks in enumerate(RESNET18_BLOCKS, start=1):
        for j in range(blocks):
            p, layer = f"layer{s}.{j}", f"stage{s}_{j}"
            plan.append(ConvBNEntry(f"{p}.conv1", f"{p}.bn1", f"{layer}_conv1"))
            plan.append(ConvBNEntry(f"{p}.conv2", f"{p}.bn2", f"{layer}_conv2"))
            if s > 1 and j == 0:
                plan.append(ConvBNEntry(f"{p}.downsample.0", f"{p}.downsample.1", f"{layer}_skip"))
    return plan


def stem_kernel(weight: np.ndarray) -> np.ndarray:
    """torchvision's ``conv1.weight`` ``[64, 3 (R, G, B), 7, 7]`` -> the stem kernel ``[7, 7, 3 (B, G, R), 64]``.

    Reverses the input channels and scales each by ``STD_BGR / ImageNet std`` (see the
    module docstring). Other shapes pass through to fail the shape check.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        return hwio(weight)
    ratio = np.asarray(STD_BGR, np.float64)[::-1] / np.asarray(IMAGENET_STD_RGB, np.float64)  # per R, G, B
    scaled = weight.astype(np.float64) * ratio[None, :, None, None]
    return hwio(scaled[:, ::-1]).astype(np.float32)


def assign_resnet18(backbone, state: dict[str, np.ndarray]) -> dict:
    """Copy a torchvision ResNet-18 ``state`` (from ``state_dict_of``) into the ``backbone``'s trunk.

    All or nothing: missing keys, keys with no place (other than the classifier ``fc``) and
    shape mismatches raise CheckpointError, listing them, before any variable changes.
    Returns counts of what was done.
    """
    plan = resnet18_plan()
    layers = flat_layers(backbone)
    absent = sorted({e.layer for e in plan} - set(layers))
    if absent:
        raise CheckpointError(listing(f"the model {backbone.name} lacks layers the import needs", absent))
    wanted = [k for e in plan for k in e.keys()]
    usable = {k: v for k, v in state.items() if k not in CLASSIFIER_KEYS}
    missing = [k for k in wanted if k not in usable]
    extra = sorted(set(usable) - set(wanted))
    problems = ([listing("missing keys", missing)] if missing else []) + \
        ([listing("keys with no place in the trunk", extra)] if extra else [])
    if problems:
        raise CheckpointError("checkpoint does not fit torchvision's ResNet-18; " + "; ".join(problems))
    targets = []
    for e in plan:
        layer = layers[e.layer]
        convert = stem_kernel if e.layer == "stem_conv" else hwio
        targets.append((layer.conv.kernel, convert(usable[f"{e.conv}.weight"]), f"{e.conv}.weight"))
        targets += [(getattr(layer.bn, tf_name), usable[f"{e.bn}.{pt}"], f"{e.bn}.{pt}") for pt, tf_name in BN_FIELDS]
    bad = [f"{key} {tuple(usable[key].shape)} -> {variable.path} {tuple(variable.shape)}"
           for variable, value, key in targets if tuple(value.shape) != tuple(variable.shape)]
    if bad:
        raise CheckpointError(listing("shape mismatches", bad) + " (torchvision's resnet18 needs model.width=1.0)")
    for variable, value, _ in targets:
        variable.assign(np.ascontiguousarray(value, dtype=np.float32))
    return {"tensors": len(targets), "ignored": len(state) - len(usable),
            "parameters": int(sum(int(np.prod(v.shape)) for _, v, _ in targets))}


def import_torchvision_pth(path: str, output_dir: str, cfg) -> dict:
    """Import torchvision's ImageNet ResNet-18 into a new run directory ``output_dir``.

    ``cfg``: a ``resnet18`` experiment (width 1); ``model.num_classes: auto`` is recorded as
    1 (the heads are placeholders: ``train --init-checkpoint`` replaces them when the class
    count differs). Writes ``ckpt-0``, ``config.yaml`` and ``import.json``, or nothing.
    Returns the summary saved in ``import.json``.
    """
    if cfg.model.backbone == "resnet50":
        raise ConfigError("--from torchvision: torchvision's ResNet-50 is v1.5 (stride in the 3x3 conv), this "
                          "toolkit's resnet50 is keras.applications' v1; use --set model.backbone_weights=imagenet")
    if cfg.model.backbone != "resnet18":
        raise ConfigError(f"--from torchvision imports ResNet-18 trunks; model.backbone={cfg.model.backbone} "
                          "(use --experiment resnet18-custom or resnet18-coco)")
    if storage.exists(output_dir) and (not storage.isdir(output_dir) or storage.glob(storage.join(output_dir, "*"))):
        raise ConfigError(f"{output_dir} already exists and is not empty; choose a new --output directory")
    if cfg.model.num_classes == config_lib.AUTO:
        cfg = config_lib.override(cfg, ["model.num_classes=1"])
    state = state_dict_of(torch_pickle.load(path), path)

    import tensorflow as tf  # the model needs it; the checks above do not
    from centernet_core.modeling.model import build_model, model_trackables
    model = build_model(cfg, load_backbone_weights=False)
    summary = assign_resnet18(model.backbone, state)
    checkpoint = tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64), **model_trackables(model))
    saved = {id(t) for t in tf.train.TrackableView(checkpoint).descendants()}
    unsaved = [w.path for w in model.weights if id(w) not in saved]
    if unsaved:
        raise CenterNetError(listing("the run checkpoint would not hold these model variables", unsaved))
    with storage.staged_directory(output_dir) as staging:  # all of the run directory or nothing
        manager = tf.train.CheckpointManager(checkpoint, staging, max_to_keep=1,
                                             checkpoint_name=run_dir.CHECKPOINT_NAME)
        saved_at = manager.save(checkpoint_number=0)
        run_dir.write_run_files(cfg, staging, None)
        summary = {"source": path, "format": "torchvision", "backbone_only": True,
                   "checkpoint": storage.join(output_dir, storage.basename(saved_at)), **summary}
        run_dir.write_import_record(staging, summary)
    return summary
