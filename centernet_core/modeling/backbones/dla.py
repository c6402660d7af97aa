"""DLA-34 (Deep Layer Aggregation) with iterative deep aggregation up to stride 4: ``dla34``.

The original CenterNet's ``pose_dla_dcn`` without deformable convs: every 3x3 conv is a plain
ConvBN-ReLU, and the learned depthwise 2f x 2f transposed convs that the original initialises
to bilinear kernels are fixed bilinear upsampling (no weights, TFLite / ONNX friendly).

Trunk (levels 0-5, channels 16, 32, 64, 128, 256, 512, strides 1, 2, 4, 8, 16, 32):
  base 7x7 ConvBN 16; level0 3x3 ConvBN 16; level1 3x3/2 ConvBN 32;
  level2..5: hierarchical aggregation trees of depth 1, 2, 2, 1 made of basic residual
  blocks; a tree's root is a 1x1 ConvBN-ReLU over the concatenation of its children.
Up path (DLAUp): for levels 4, 3, 2 in turn, IDA nodes merge every deeper level into that
level's resolution (3x3 ConvBN projection, 2x upsample, add, 3x3 ConvBN node); then one more
IDA merges the stride 4, 8 and 16 outputs at stride 4.

Feature map: ``[B, S / 4, S / 4, 64]``.
"""
from __future__ import annotations

import keras

from centernet_core.modeling.backbones.registry import load_weights_into, register_backbone
from centernet_core.errors import ConfigError
from centernet_core.modeling.layers import ConvBN

DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)
DLA34_LEVELS = (1, 1, 1, 2, 2, 1)  # tree depths of levels 2..5 (levels 0, 1 are plain convs)
FIRST_LEVEL = 2  # stride 4


def _basic_block(x, filters: int, strides: int, residual, bn: dict, name: str):
    """3x3 ConvBN-ReLU (stride), 3x3 ConvBN, + ``residual``, ReLU."""
    y = ConvBN(filters, 3, strides, name=f"{name}_conv1", **bn)(x)
    y = ConvBN(filters, 3, 1, relu=False, name=f"{name}_conv2", **bn)(y)
    return keras.layers.ReLU(name=f"{name}_relu")(keras.layers.Add(name=f"{name}_add")([y, residual]))


def _tree(x, levels: int, filters: int, strides: int, level_root: bool, bn: dict, name: str, children=None):
    """A DLA aggregation tree; ``children`` are extra inputs of the deepest root."""
    children = [] if children is None else children
    bottom = keras.layers.MaxPooling2D(strides, strides, name=f"{name}_down")(x) if strides > 1 else x
    if level_root:
        children.append(bottom)
    if levels == 1:
        residual = bottom
        if x.shape[-1] != filters:
            residual = ConvBN(filters, 1, 1, relu=False, name=f"{name}_project", **bn)(bottom)
        x1 = _basic_block(x, filters, strides, residual, bn, f"{name}_b1")
        x2 = _basic_block(x1, filters, 1, x1, bn, f"{name}_b2")
        merged = keras.layers.Concatenate(name=f"{name}_root_cat")([x2, x1, *children])
        return ConvBN(filters, 1, 1, name=f"{name}_root", **bn)(merged)
    x1 = _tree(x, levels - 1, filters, strides, False, bn, f"{name}_t1")
    children.append(x1)
    return _tree(x1, levels - 1, filters, 1, False, bn, f"{name}_t2", children=children)


def _ida(layers: list, start: int, channels: int, up_factors: list[int], bn: dict, name: str) -> None:
    """Iterative deep aggregation, in place: ``layers[i]`` for ``i > start`` becomes
    node(upsample(project(layers[i])) + layers[i - 1]) at ``layers[start]``'s resolution."""
    for i in range(start + 1, len(layers)):
        y = ConvBN(channels, 3, 1, name=f"{name}_proj{i}", **bn)(layers[i])
        f = up_factors[i - start]
        if f > 1:
            y = keras.layers.UpSampling2D(f, interpolation="bilinear", name=f"{name}_up{i}")(y)
        y = keras.layers.Add(name=f"{name}_add{i}")([y, layers[i - 1]])
        layers[i] = ConvBN(channels, 3, 1, name=f"{name}_node{i}", **bn)(y)


def _dla_up(levels: list, bn: dict) -> list:
    """DLAUp over ``levels`` (strides 4..32); returns the aggregated maps at strides 4, 8, 16, 32."""
    layers = list(levels)
    n = len(layers)
    out = [layers[-1]]
    for i in range(n - 1):
        start = n - i - 2
        # every map above `start` has already been merged to resolution start + 1 (factor 2)
        _ida(layers, start, layers[start].shape[-1], [1] + [2] * (n - start - 1), bn, f"dlaup{i}")
        out.insert(0, layers[-1])
    return out


@register_backbone("dla34")
def dla34(input_size=None, width=1.0, bn_momentum=0.9, bn_epsilon=1e-5, weights=""):
    """DLA-34 trunk (loadable from ``weights``) + DLAUp + IDAUp to stride 4."""
    if width != 1.0:
        raise ConfigError(f"model.width={width}: dla34 has fixed channels; use model.width=1.0")
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
    c = DLA34_CHANNELS
    image = keras.Input((input_size, input_size, 3), name="image")
    x = ConvBN(c[0], 7, 1, name="base", **bn)(image)
    level0 = ConvBN(c[0], 3, 1, name="level0", **bn)(x)
    level1 = ConvBN(c[1], 3, 2, name="level1", **bn)(level0)
    levels = [level0, level1]
    for i in range(2, 6):
        levels.append(_tree(levels[-1], DLA34_LEVELS[i], c[i], 2, level_root=i > 2, bn=bn, name=f"level{i}"))
    trunk = keras.Model(image, levels[-1], name="dla34_trunk")
    load_weights_into(trunk, weights)
    up = _dla_up(levels[FIRST_LEVEL:], bn)  # strides 4, 8, 16, 32
    y = up[:3]
    _ida(y, 0, c[FIRST_LEVEL], [1, 2, 4], bn, "idaup")
    return keras.Model(image, [keras.layers.Identity(name="features_0")(y[-1])], name="backbone")
