"""The composing CenterNet model: registered backbone + heads, and ``build_model(cfg)``.

``build_model(cfg)`` is the one place where an ``ExperimentConfig`` becomes constructor
arguments. ``CenterNetModel`` composes:

  image ``[B, S, S, 3]`` float32 (normalised B, G, R; any S divisible by the backbone's
  input divisor) -> ``model.backbone`` (functional) -> list of stride-4 feature maps, one per stack
  -> heads "head_{output}_{stack}" -> list (one per stack) of dicts of the task's outputs,
  e.g. detection's ``{"heatmap": [B, H, W, C] logits, "size": [B, H, W, 2], "offset":
  [B, H, W, 2]}``, H = W = S / 4, in the compute dtype of the policy. The last element is
  the one decoded. The task (``model.task``) names the outputs and their widths.

The backbone is a separate sub-model so that training can restore it alone (new class
count: ``build_model(cfg, backbone=backbone_of(old_model))`` or load a checkpoint into
``backbone_of(model)``).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from centernet_core.modeling.backbones import build_backbone, get_backbone_spec
from centernet_core.modeling.heads import make_heads
from centernet_core.modeling.layers import ConvBN
from centernet_core.tasks import HeadSpec, build_task


@keras.saving.register_keras_serializable(package="centernet")
class CenterNetModel(keras.Model):
    """Backbone + one set of heads per stack; ``call(images)`` -> list of per-stack dicts.

    Args:
      backbone: a registered backbone's model (images -> list of stride-4 feature maps).
      outputs: the task's named outputs (``HeadSpec``s, or ``[name, channels, bias_init]``
        lists as ``get_config`` writes them).
      head_channels: width of each head's 3x3 conv.
    Attributes:
      backbone: the backbone sub-model (restore it alone for a new class count).
      heads: list of per-stack dicts of ``CenterNetHead`` layers named ``head_{output}_{stack}``.
    """

    def __init__(self, backbone: keras.Model, outputs, head_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.outputs_spec = tuple(o if isinstance(o, HeadSpec) else HeadSpec(o[0], int(o[1]), float(o[2]))
                                  for o in outputs)
        self.head_channels = int(head_channels)
        feature_shapes = [tuple(t.shape) for t in _as_list(backbone.outputs)]
        self.heads = []
        for i, shape in enumerate(feature_shapes):
            stack = make_heads(i, self.outputs_spec, self.head_channels)
            for head in stack.values():
                head.build(shape)
            self.heads.append(stack)

    def build(self, input_shape=None):
        """Every variable is created in ``__init__`` (the backbone is built, heads are built on its
        output shapes), so loading a saved model needs no forward pass."""
        self.built = True

    def call(self, images, training=None):
        features = _as_list(self.backbone(images, training=training))
        return [{name: head(f) for name, head in stack.items()} for f, stack in zip(features, self.heads)]

    def get_config(self):
        config = super().get_config()
        config.update(backbone=keras.saving.serialize_keras_object(self.backbone),
                      outputs=[[o.name, o.channels, o.bias_init] for o in self.outputs_spec],
                      head_channels=self.head_channels)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def build_model(cfg, backbone: keras.Model | None = None, load_backbone_weights: bool = True) -> keras.Model:
    """The CenterNet model of ``cfg`` (an ``ExperimentConfig``).

    Args:
      cfg: resolved config; reads ``cfg.model`` (backbone, width, bn_*, backbone_weights,
        head_channels) and the task's outputs (``tasks.build_task(cfg).heads()``).
      backbone: reuse this backbone (and its weights) instead of building one, e.g.
        ``backbone_of(pretrained)`` to fine-tune on a dataset with another class count.
      load_backbone_weights: load ``model.backbone_weights`` (False when a checkpoint
        restore follows and brings every weight).
    """
    m = cfg.model
    if backbone is None:
        backbone = build_backbone(m.backbone, None, width=m.width, bn_momentum=m.bn_momentum,
                                  bn_epsilon=m.bn_epsilon, weights=m.backbone_weights if load_backbone_weights else "")
    model = CenterNetModel(backbone, build_task(cfg).heads(), m.head_channels, name=f"centernet_{m.backbone}")
    model.build((None, None, None, 3))
    for layer in _conv_bns(model):  # PyTorch's moving variance (model.bn_unbiased_variance)
        layer.unbiased_variance = m.bn_unbiased_variance
    return model


def freeze_for_inference(model: keras.Model) -> int:
    """Fold every ``ConvBN``'s batch norm into its conv once, in the compute dtype; returns the count.

    Inference calls (``training=False``) then reuse the folded weights instead of re-folding
    (and, under mixed precision, re-casting) all of them per call: for eval and prediction
    once the weights are final. Call again after loading other weights; a
    ``training=True`` call or ``unfreeze(model)`` drops the frozen weights. Outputs are the
    per-call fold's, bit for bit (same ops, same single rounding). Export unfreezes first:
    traced frozen, a SavedModel would carry the folded weights again as constants.
    """
    layers = _conv_bns(model)
    for layer in layers:
        layer.freeze_for_inference()
    return len(layers)


def unfreeze(model: keras.Model) -> None:
    """Undo ``freeze_for_inference``: fold from the variables on every call again."""
    for layer in _conv_bns(model):
        layer.unfreeze()


def _conv_bns(layer) -> list:
    if isinstance(layer, ConvBN):
        return [layer]
    children = list(getattr(layer, "layers", []))
    if isinstance(layer, CenterNetModel):
        children = [layer.backbone]
    return [c for child in children for c in _conv_bns(child)]


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone sub-model of a CenterNet model (everything except the ``head_*`` layers)."""
    return model.backbone


def num_stacks(cfg) -> int:
    """How many output dicts the model of ``cfg`` returns."""
    return get_backbone_spec(cfg.model.backbone).num_stacks


# ---------------------------------------------------------------- size and cost

def model_trackables(model) -> dict:
    """Objects to give ``tf.train.Checkpoint`` for ``model``: the model and its heads.

    Keras keeps the heads in a list of dicts, which ``tf.train.Checkpoint`` does not follow
    on its own; every checkpoint of a model (training, best, import, restore) uses this.
    """
    out = {"model": model}
    heads = getattr(model, "heads", None)
    if heads:
        out["heads"] = tf.train.Checkpoint(**{h.name: h for stack in heads for h in stack.values()})
    return out
