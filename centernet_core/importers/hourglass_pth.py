"""Original CenterNet (PyTorch) Hourglass checkpoints -> this toolkit's Keras model.

Key names are those of the original's ``large_hourglass.py`` (the CornerNet ``exkp``
network); tensors come from :mod:`centernet_core.importers.torch_pickle`, so PyTorch is not needed.
The mapping is a plan built from the architecture, one entry per Keras layer:

  pre.0 (conv, bn)                      -> stem_conv
  pre.1 / inters.{i} (residual)         -> stem_res / inter{i}_res  _conv1 _conv2 _skip
  kps.{i}[.low2]*d . up1 | low1 | low3  -> hg{i}{"i"*d} _skip | _down | _up  _{j}
  kps.{i}.low2*5 (bottom blocks)        -> hg{i}iiiii_bottom_{j}
  cnvs.{i}                              -> features_{i}
  inters_.{i} / cnvs_.{i} (0: conv, 1: bn) -> inter{i}_input / inter{i}_features
  hm | wh | reg .{i} (0.conv, 1)        -> head_heatmap | head_size | head_offset _{i}
  hps | hm_hp | hp_offset .{i}          -> head_joints | head_keypoint_heatmap | head_keypoint_offset _{i}
                                           (multi_pose checkpoints, ``model.task: keypoints``)

Residual keys: conv1/bn1, conv2/bn2, skip.0/skip.1. Conv weights go OIHW -> HWIO; BN
weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_variance
(``num_batches_tracked`` is dropped). The original's 'wh' is (w, h), 'reg' and 'hp_offset'
are (dx, dy) and 'hps' is (dx, dy) per joint, interleaved (x0, y0, x1, y1, ...): the two
channels of every pair are swapped into this model's (h, w), (dy, dx) and (dy0, dx0, ...).
A multi_pose import is COCO person with COCO's 17 keypoints (names, skeleton, flip pairs and
OKS sigmas in the run's ``dataset.meta.json``). Leading
``module.`` prefixes (DataParallel, CornerNet's DummyModule) are removed.

The import is all or nothing: a key the plan does not use, a key it needs that is absent,
or a shape that does not fit fails with the lists, and no variable is left half-assigned
(every check runs before the first assignment).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from centernet_core import run_dir, storage
from centernet_core.importers import torch_pickle
from centernet_core.modeling.backbones import get_backbone_spec
from centernet_core.modeling.backbones.hourglass import HOURGLASS_BLOCKS, HOURGLASS_CHANNELS, STEM_CHANNELS
from centernet_core.data import metadata
from centernet_core.errors import CenterNetError, ConfigError
from centernet_core.modeling.heads import head_name
from centernet_core.importers.pytorch_layout import (BN_FIELDS, ConvBNEntry, flat_layers, hwio, listing,
                                                     state_dict_of)
from centernet_core.importers.torch_pickle import CheckpointError

BACKBONE_PREFIXES = ("pre.", "kps.", "cnvs.", "inters.", "inters_.", "cnvs_.")
HEAD_KEYS = {"hm": ("heatmap", False), "wh": ("size", True), "reg": ("offset", True)}  # name, swap (x, y) pairs
POSE_HEAD_KEYS = {"hps": ("joints", True), "hm_hp": ("keypoint_heatmap", False), "hp_offset": ("keypoint_offset", True)}
# COCO's person skeleton (1-based keypoint pairs, person_keypoints_*.json's category).
COCO_SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
                 (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))

# COCO's 80 detection classes in id order (the original's contiguous class order); the ids
# run 1..90 without the ten that COCO never annotated.
COCO_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag "
    "tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair couch potted_plant bed dining_table toilet tv laptop mouse remote "
    "keyboard cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush").split()
COCO_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
COCO_CATEGORIES = tuple({"index": k, "id": i, "name": n.replace("_", " ")}
                        for k, (i, n) in enumerate(zip(COCO_IDS, COCO_NAMES)))


@dataclasses.dataclass(frozen=True)
class HeadEntry:
    """A head ``{prefix}.0.conv`` (3x3, bias) + ``{prefix}.1`` (1x1, bias) -> one CenterNetHead."""

    prefix: str
    layer: str
    reverse: bool  # swap each (x, y) channel pair: (w, h) -> (h, w), (dx, dy) -> (dy, dx), per joint for hps

    def keys(self) -> list[str]:
        return [f"{self.prefix}.0.conv.weight", f"{self.prefix}.0.conv.bias",
                f"{self.prefix}.1.weight", f"{self.prefix}.1.bias"]


def _residual(torch_prefix: str, layer: str, cin: int, cout: int, stride: int) -> list[ConvBNEntry]:
    p = torch_prefix
    entries = [ConvBNEntry(f"{p}.conv1", f"{p}.bn1", f"{layer}_conv1"),
               ConvBNEntry(f"{p}.conv2", f"{p}.bn2", f"{layer}_conv2")]
    if stride != 1 or cin != cout:
        entries.append(ConvBNEntry(f"{p}.skip.0", f"{p}.skip.1", f"{layer}_skip"))
    return entries


def _hourglass_level(torch_prefix: str, layer: str, channels, blocks) -> list[ConvBNEntry]:
    """Entries of one recursive hourglass level (``kp_module``) and everything below it."""
    c, n = channels[0], blocks[0]
    if len(channels) == 1:  # the bottom: the innermost level's low2 is plain blocks
        return [e for j in range(n) for e in _residual(f"{torch_prefix}.{j}", f"{layer}_bottom_{j}", c, c, 1)]
    c_next = channels[1]
    entries = []
    for j in range(n):
        entries += _residual(f"{torch_prefix}.up1.{j}", f"{layer}_skip_{j}", c, c, 1)
    for j in range(n):
        entries += _residual(f"{torch_prefix}.low1.{j}", f"{layer}_down_{j}", c if j == 0 else c_next, c_next,
                             2 if j == 0 else 1)
    entries += _hourglass_level(f"{torch_prefix}.low2", f"{layer}i", channels[1:], blocks[1:])
    for j in range(n):
        entries += _residual(f"{torch_prefix}.low3.{j}", f"{layer}_up_{j}", c_next, c_next if j < n - 1 else c, 1)
    return entries


def hourglass_plan(num_stacks: int, heads: bool = True, keypoints: bool = False) -> list:
    """Every PyTorch -> Keras layer correspondence of a ``num_stacks`` Hourglass CenterNet
    (``keypoints``: with the multi_pose heads)."""
    dim = HOURGLASS_CHANNELS[0]
    plan = [ConvBNEntry("pre.0.conv", "pre.0.bn", "stem_conv")]
    plan += _residual("pre.1", "stem_res", STEM_CHANNELS, dim, 2)
    for i in range(num_stacks):
        plan += _hourglass_level(f"kps.{i}", f"hg{i}", HOURGLASS_CHANNELS, HOURGLASS_BLOCKS)
        plan.append(ConvBNEntry(f"cnvs.{i}.conv", f"cnvs.{i}.bn", f"features_{i}"))
        if i < num_stacks - 1:
            plan.append(ConvBNEntry(f"inters_.{i}.0", f"inters_.{i}.1", f"inter{i}_input"))
            plan.append(ConvBNEntry(f"cnvs_.{i}.0", f"cnvs_.{i}.1", f"inter{i}_features"))
            plan += _residual(f"inters.{i}", f"inter{i}_res", dim, dim, 1)
    if heads:
        keys = {**HEAD_KEYS, **POSE_HEAD_KEYS} if keypoints else HEAD_KEYS
        plan += [HeadEntry(f"{key}.{i}", head_name(name, i), reverse)
                 for i in range(num_stacks) for key, (name, reverse) in keys.items()]
    return plan


def _targets(entry, layers: dict, sd: dict) -> list[tuple]:
    """(variable, value in Keras layout, torch key) for each tensor of ``entry``."""
    layer = layers[entry.layer]
    if isinstance(entry, ConvBNEntry):
        pairs = [(layer.conv.kernel, hwio(sd[f"{entry.conv}.weight"]), f"{entry.conv}.weight")]
        pairs += [(getattr(layer.bn, tf_name), sd[f"{entry.bn}.{pt}"], f"{entry.bn}.{pt}") for pt, tf_name in BN_FIELDS]
        return pairs
    out_w = hwio(sd[f"{entry.prefix}.1.weight"])
    out_b = sd[f"{entry.prefix}.1.bias"]
    if entry.reverse and out_b.shape[0] % 2 == 0:  # (x, y) pairs -> (y, x); odd counts fail the shape check
        swap = np.arange(out_b.shape[0]).reshape(-1, 2)[:, ::-1].reshape(-1)
        out_w, out_b = out_w[..., swap], out_b[swap]
    conv = f"{entry.prefix}.0.conv"
    return [(layer.conv.kernel, hwio(sd[f"{conv}.weight"]), f"{conv}.weight"),
            (layer.conv.bias, sd[f"{conv}.bias"], f"{conv}.bias"),
            (layer.out.kernel, out_w, f"{entry.prefix}.1.weight"), (layer.out.bias, out_b, f"{entry.prefix}.1.bias")]


def assign_hourglass(model, state: dict[str, np.ndarray], num_stacks: int, backbone_only: bool = False) -> dict:
    """Copy ``state`` (from :func:`state_dict_of`) into ``model`` (``build_model`` of an Hourglass config).

    With ``backbone_only`` only backbone keys (``BACKBONE_PREFIXES``) are used; other keys
    (the heads of CenterNet, CornerNet or ExtremeNet) are ignored and the model's heads keep
    their initial values. Raises CheckpointError, before changing any variable, listing the
    missing keys, the unused keys and the shape mismatches. Returns counts of what was done.
    """
    layers = flat_layers(model)
    plan = hourglass_plan(num_stacks, heads=not backbone_only, keypoints=head_name("joints", 0) in layers)
    absent_layers = sorted({e.layer for e in plan} - set(layers))
    if absent_layers:
        raise CheckpointError(listing(f"the model {model.name} lacks layers the import needs", absent_layers))
    wanted = [k for e in plan for k in e.keys()]
    usable = {k: v for k, v in state.items() if not backbone_only or k.startswith(BACKBONE_PREFIXES)}
    missing = [k for k in wanted if k not in usable]
    extra = sorted(set(usable) - set(wanted))
    problems = []
    if missing:
        problems.append(listing("missing keys", missing))
    if extra:
        pose = any(k.startswith("hps.") for k in extra)
        problems.append(listing("keys with no place in the model", extra)
                        + ("; a multi_pose checkpoint: --experiment hourglass104-pose-coco" if pose else ""))
    if problems:
        raise CheckpointError("checkpoint does not fit the Hourglass model; " + "; ".join(problems))
    targets = [t for e in plan for t in _targets(e, layers, usable)]
    bad = [f"{key} {tuple(usable[key].shape)} -> {variable.path} {tuple(variable.shape)}"
           for variable, v, key in targets if tuple(v.shape) != tuple(variable.shape)]
    if bad:
        hint = ""
        if any(k.startswith("hm.") for k in bad):
            n = len(state["hm.0.1.bias"])
            hint = f"; the checkpoint has {n} classes: --set model.num_classes={n}, or import with --backbone-only"
        raise CheckpointError(listing("shape mismatches", bad) + hint)
    assigned = {id(variable) for variable, _, _ in targets}
    head_ids = {id(w) for name, layer in layers.items() if name.startswith("head_") for w in layer.weights}
    unset = [w.path for w in model.weights if id(w) not in assigned and not (backbone_only and id(w) in head_ids)]
    if unset:
        raise CheckpointError(listing(f"the import plan leaves variables of {model.name} unset", unset))
    for variable, value, _ in targets:
        variable.assign(np.ascontiguousarray(value, dtype=np.float32))
    return {"tensors": len(targets), "ignored": len(state) - len(usable),
            "parameters": int(sum(int(np.prod(v.shape)) for _, v, _ in targets))}


def _run_metadata(cfg, categories_from: str | None, backbone_only: bool, source: str) -> dict | None:
    """The run's ``dataset.meta.json``: a prepared dataset's, COCO's table for 80 imported classes, or none."""
    if categories_from:
        meta = metadata.load_metadata(categories_from)
    elif backbone_only:
        return None  # the heads are new: their classes come from the dataset trained on next
    elif cfg.model.task == "keypoints":
        return coco_person_metadata(cfg, source)
    elif cfg.model.num_classes == len(COCO_CATEGORIES):
        meta = {"format": metadata.FORMAT, "categories": [dict(c) for c in COCO_CATEGORIES],
                "source": {"imported_from": source}}
    else:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} is not COCO's 80: pass --categories "
                          "with the prepared dataset (PREFIX or PREFIX.meta.json) the checkpoint was trained on")
    if len(meta["categories"]) != cfg.model.num_classes:
        raise ConfigError(f"--categories {categories_from} has {len(meta['categories'])} categories but "
                          f"model.num_classes={cfg.model.num_classes}; use the dataset the checkpoint was trained on")
    return meta


def coco_person_metadata(cfg, source: str) -> dict:
    """COCO person (id 1) with COCO's 17 keypoints: what the original's multi_pose checkpoints hold."""
    if (cfg.model.num_classes, cfg.model.num_keypoints) != (1, len(metadata.COCO_KEYPOINTS)):
        raise ConfigError(f"a multi_pose import is COCO person with 17 keypoints; the config has model.num_classes="
                          f"{cfg.model.num_classes}, model.num_keypoints={cfg.model.num_keypoints} "
                          "(use --experiment hourglass104-pose-coco)")
    names = list(metadata.COCO_KEYPOINTS)
    return {"format": metadata.FORMAT, "categories": [{"index": 0, "id": 1, "name": "person"}],
            "keypoints": {"names": names, "skeleton": [list(e) for e in COCO_SKELETON],
                          "flip": metadata.flip_from_names(names), "sigmas": list(metadata.COCO_SIGMAS)},
            "source": {"imported_from": source}}


def import_centernet_pth(path: str, output_dir: str, cfg, backbone_only: bool = False,
                         categories_from: str | None = None) -> dict:
    """Import an original CenterNet (or, ``backbone_only``, CornerNet / ExtremeNet) checkpoint.

    Writes the run directory ``output_dir`` laid out as ``centernet train`` does (see
    ``checkpoints``), so ``eval``, ``export``, ``predict`` and ``train --init-checkpoint``
    take it as is: ``ckpt-0`` (model, heads and ``step`` 0; no optimizer), ``config.yaml``,
    ``dataset.meta.json`` with the category table (none with ``backbone_only`` unless
    ``categories_from``) and ``import.json`` (where the weights came from). Nothing is
    written unless every tensor found its place. Returns the summary saved in ``import.json``.
    """
    spec = get_backbone_spec(cfg.model.backbone)
    if not spec.name.startswith("hourglass"):
        raise ConfigError(f"--from centernet-pth imports Hourglass checkpoints; model.backbone={spec.name} "
                          "(use --experiment hourglass104-coco)")
    if run_dir.holds_run(output_dir):
        raise ConfigError(f"{output_dir} already holds a run ({run_dir.CONFIG_FILE}); choose a new --output")
    if storage.exists(output_dir) and (not storage.isdir(output_dir) or storage.glob(storage.join(output_dir, "*"))):
        raise ConfigError(f"{output_dir} already exists and is not empty; choose a new --output directory")
    meta = _run_metadata(cfg, categories_from, backbone_only, path)
    loaded = torch_pickle.load(path)
    epoch = loaded.get("epoch") if isinstance(loaded, dict) and isinstance(loaded.get("epoch"), int) else None
    state = state_dict_of(loaded, path)

    import tensorflow as tf  # the model needs it; the checks above do not
    from centernet_core.modeling.model import build_model, model_trackables
    model = build_model(cfg, load_backbone_weights=False)
    summary = assign_hourglass(model, state, spec.num_stacks, backbone_only)
    checkpoint = tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64), **model_trackables(model))
    saved = {id(t) for t in tf.train.TrackableView(checkpoint).descendants()}
    unsaved = [w.path for w in model.weights if id(w) not in saved]
    if unsaved:  # eval would restore a partial model without a word: refuse instead
        raise CenterNetError(listing("the run checkpoint would not hold these model variables (model tracking)",
                                      unsaved))
    with storage.staged_directory(output_dir) as staging:  # all of the run directory or nothing
        manager = tf.train.CheckpointManager(checkpoint, staging, max_to_keep=1,
                                             checkpoint_name=run_dir.CHECKPOINT_NAME)
        saved_at = manager.save(checkpoint_number=0)
        run_dir.write_run_files(cfg, staging, meta)
        summary = {"source": path, "format": "centernet-pth", "epoch": epoch, "backbone_only": backbone_only,
                   "checkpoint": storage.join(output_dir, storage.basename(saved_at)), **summary}
        run_dir.write_import_record(staging, summary)
    return summary
