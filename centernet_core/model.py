"""The composing CenterNet model: registered backbone + heads, and ``build_model(cfg)``.

``build_model(cfg)`` is the one place where an ``ExperimentConfig`` becomes constructor
arguments. ``CenterNetModel`` composes:

  image ``[B, S, S, 3]`` float32 (normalised B, G, R; any S divisible by the backbone's
  input divisor) -> ``model.backbone`` (functional) -> list of stride-4 feature maps, one per stack
  -> heads "head_{output}_{stack}" -> list (one per stack) of
  ``{"heatmap": [B, H, W, C] logits, "size": [B, H, W, 2], "offset": [B, H, W, 2]}``,
  H = W = S / 4, in the compute dtype of the policy. The last element is the one decoded.

The backbone is a separate sub-model so that training can restore it alone (new class
count: ``build_model(cfg, backbone=backbone_of(old_model))`` or load a checkpoint into
``backbone_of(model)``).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from centernet_core.backbones import build_backbone, get_backbone_spec
from centernet_core.heads import OUTPUTS, make_heads
from centernet_core.layers import ConvBN


@keras.saving.register_keras_serializable(package="centernet")
class CenterNetModel(keras.Model):
    """Backbone + one set of heads per stack; ``call(images)`` -> list of per-stack dicts.

    Args:
      backbone: a registered backbone's model (images -> list of stride-4 feature maps).
      num_classes: C, heatmap channels.
      head_channels: width of each head's 3x3 conv.
      heatmap_bias: initial bias of the heatmap heads' last conv.
    Attributes:
      backbone: the backbone sub-model (restore it alone for a new class count).
      heads: list of per-stack dicts of ``CenterNetHead`` layers named ``head_{output}_{stack}``.
    """

    def __init__(self, backbone: keras.Model, num_classes: int, head_channels: int, heatmap_bias: float = -2.19,
                 **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.num_classes, self.head_channels, self.heatmap_bias = int(num_classes), int(head_channels), float(heatmap_bias)
        feature_shapes = [tuple(t.shape) for t in _as_list(backbone.outputs)]
        self.heads = []
        for i, shape in enumerate(feature_shapes):
            stack = make_heads(i, self.num_classes, self.head_channels, self.heatmap_bias)
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
        config.update(backbone=keras.saving.serialize_keras_object(self.backbone), num_classes=self.num_classes,
                      head_channels=self.head_channels, heatmap_bias=self.heatmap_bias)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def build_model(cfg, backbone: keras.Model | None = None) -> keras.Model:
    """The CenterNet model of ``cfg`` (an ``ExperimentConfig``).

    Args:
      cfg: resolved config; reads ``cfg.model`` (backbone, width, bn_*, backbone_weights,
        num_classes, head_channels, heatmap_bias).
      backbone: reuse this backbone (and its weights) instead of building one, e.g.
        ``backbone_of(pretrained)`` to fine-tune on a dataset with another class count.
    """
    m = cfg.model
    if backbone is None:
        backbone = build_backbone(m.backbone, None, width=m.width, bn_momentum=m.bn_momentum,
                                  bn_epsilon=m.bn_epsilon, weights=m.backbone_weights)
    model = CenterNetModel(backbone, m.num_classes, m.head_channels, m.heatmap_bias, name=f"centernet_{m.backbone}")
    model.build((None, None, None, 3))
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

def count_params(model: keras.Model) -> dict:
    """``{"trainable": n, "total": n}``; total includes batch norm moving statistics."""
    size = lambda ws: int(sum(int(np.prod(w.shape)) for w in ws))  # noqa: E731
    return {"trainable": size(model.trainable_weights), "total": size(model.weights)}


def _macs(op) -> int:
    """Multiply-accumulates of one convolution / matmul graph op (0 for other ops)."""
    def dims(t):
        return [int(d) for d in t.shape]
    if op.type == "Conv2D":  # filter [kh, kw, Cin, Cout]; output [B, Ho, Wo, Cout]
        kh, kw, cin, _ = dims(op.inputs[1])
        return int(np.prod(dims(op.outputs[0]))) * kh * kw * cin
    if op.type == "DepthwiseConv2dNative":  # filter [kh, kw, Cin, mult]
        kh, kw, _, _ = dims(op.inputs[1])
        return int(np.prod(dims(op.outputs[0]))) * kh * kw
    if op.type == "Conv2DBackpropInput":  # transposed conv; filter [kh, kw, Cout, Cin], input = out_backprop
        kh, kw, cout, _ = dims(op.inputs[1])
        return int(np.prod(dims(op.inputs[2]))) * kh * kw * cout
    if op.type in ("MatMul", "BatchMatMulV2"):
        a, out = dims(op.inputs[0]), dims(op.outputs[0])
        k = a[-2] if op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x") else a[-1]
        return int(np.prod(out)) * k
    return 0


def count_flops(graph) -> int:
    """FLOPs (2 x multiply-accumulates) of the convolutions and matmuls in ``graph``.

    Elementwise ops (bias, batch norm, ReLU, adds, upsampling) are left out: they are under
    1 % of a CNN's arithmetic and every published FLOP figure leaves them out too.
    """
    return 2 * sum(_macs(op) for op in graph.get_operations())


def describe_model(model: keras.Model, input_size: int) -> dict:
    """Parameters, output shapes and inference FLOPs per image at ``input_size``.

    Returns ``{"params_total", "params_trainable", "params_non_trainable", "flops",
    "input_shape", "outputs": {"stack{i}/{name}": shape}}``; FLOPs are counted on the traced
    inference graph (batch 1, all stacks' heads included).
    """
    spec = tf.TensorSpec([1, input_size, input_size, 3], tf.float32)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    structured = fn.structured_outputs
    outputs = {f"stack{i}/{name}": [int(d) for d in stack[name].shape]
               for i, stack in enumerate(structured) for name in OUTPUTS}
    params = count_params(model)
    return {"params_total": params["total"], "params_trainable": params["trainable"],
            "params_non_trainable": params["total"] - params["trainable"],
            "flops": count_flops(fn.graph), "input_shape": [1, input_size, input_size, 3], "outputs": outputs}
