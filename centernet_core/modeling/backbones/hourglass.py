"""Hourglass backbones (CornerNet / CenterNet): ``hourglass104`` (two stacks), ``hourglass52`` (one).

Structure (REFERENCE.md, the original ``large_hourglass.py`` and Model Garden agree):
  stem: 7x7 ConvBN-ReLU stride 2 to 128 ch, residual block stride 2 to 256 ch (projection).
  each stack: hourglass module, then 3x3 ConvBN-ReLU to 256 ch = the stack's feature map.
  between stacks: ReLU(1x1 ConvBN(stack input) + 1x1 ConvBN(stack features)), residual 256.
Hourglass module over levels with channels [256, 256, 384, 384, 384, 512] and residual blocks
per level [2, 2, 2, 2, 2, 4]; for level i (channels c_i -> c_{i+1}, n_i blocks):
  skip  = n_i residual blocks at c_i on the input
  low   = n_i residual blocks to c_{i+1}, the first one stride 2 (projection shortcut)
  inner = the next level, or n_{last} residual blocks at c_last at the bottom
  up    = n_i - 1 residual blocks at c_{i+1}, then one to c_i
  out   = nearest 2x upsample(up) + skip
Five downsamplings below stride 4 make the input divisor 4 * 32 = 128.

Feature maps: ``[B, S / 4, S / 4, 256]`` per stack, in the compute dtype.
"""
from __future__ import annotations

import keras

from centernet_core.modeling.backbones.registry import load_weights_into, register_backbone
from centernet_core.errors import ConfigError
from centernet_core.modeling.layers import ConvBN, residual_block

HOURGLASS_CHANNELS = (256, 256, 384, 384, 384, 512)
HOURGLASS_BLOCKS = (2, 2, 2, 2, 2, 4)
STEM_CHANNELS = 128
FEATURE_CHANNELS = 256


def _blocks(x, n: int, filters: int, first_stride: int, bn: dict, name: str):
    """``n`` residual blocks to ``filters``; the first has stride ``first_stride``."""
    for j in range(n):
        x = residual_block(x, filters, first_stride if j == 0 else 1, name=f"{name}_{j}", **bn)
    return x


def _reverse_blocks(x, n: int, mid: int, out: int, bn: dict, name: str):
    """``n - 1`` residual blocks at ``mid`` channels, then one to ``out`` (the up path)."""
    for j in range(n - 1):
        x = residual_block(x, mid, 1, name=f"{name}_{j}", **bn)
    return residual_block(x, out, 1, name=f"{name}_{n - 1}", **bn)


def hourglass_module(x, channels=HOURGLASS_CHANNELS, blocks=HOURGLASS_BLOCKS, bn: dict | None = None,
                     name: str = "hg"):
    """One hourglass (recursive encoder-decoder): ``[B, H, W, channels[0]] -> same shape``.

    ``H`` and ``W`` must be divisible by ``2 ** (len(channels) - 1)``.
    """
    bn = bn or {}
    if len(channels) != len(blocks):
        raise ValueError("hourglass channels and blocks need the same length")
    if len(channels) == 1:
        return _blocks(x, blocks[0], channels[0], 1, bn, f"{name}_bottom")
    c, c_next, n = channels[0], channels[1], blocks[0]
    skip = _blocks(x, n, c, 1, bn, f"{name}_skip")
    low = _blocks(x, n, c_next, 2, bn, f"{name}_down")
    low = hourglass_module(low, channels[1:], blocks[1:], bn, f"{name}i")
    low = _reverse_blocks(low, n, c_next, c, bn, f"{name}_up")
    up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(low)
    return keras.layers.Add(name=f"{name}_merge")([up, skip])


def build_hourglass(num_stacks: int, input_size: int | None = None, bn_momentum: float = 0.9,
                    bn_epsilon: float = 1e-5, weights: str = "", name: str = "backbone") -> keras.Model:
    """Stacked hourglass network; outputs a list of ``num_stacks`` stride-4 feature maps."""
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
    image = keras.Input((input_size, input_size, 3), name="image")
    x = ConvBN(STEM_CHANNELS, 7, 2, name="stem_conv", **bn)(image)
    x = residual_block(x, HOURGLASS_CHANNELS[0], 2, name="stem_res", **bn)
    features = []
    for i in range(num_stacks):
        y = hourglass_module(x, bn=bn, name=f"hg{i}")
        y = ConvBN(FEATURE_CHANNELS, 3, 1, name=f"features_{i}", **bn)(y)
        features.append(y)
        if i < num_stacks - 1:
            a = ConvBN(FEATURE_CHANNELS, 1, 1, relu=False, name=f"inter{i}_input", **bn)(x)
            b = ConvBN(FEATURE_CHANNELS, 1, 1, relu=False, name=f"inter{i}_features", **bn)(y)
            x = keras.layers.ReLU(name=f"inter{i}_relu")(keras.layers.Add(name=f"inter{i}_add")([a, b]))
            x = residual_block(x, FEATURE_CHANNELS, 1, name=f"inter{i}_res", **bn)
    model = keras.Model(image, features, name=name)
    load_weights_into(model, weights)
    return model


@register_backbone("hourglass104", num_stacks=2)
def hourglass104(input_size=None, width=1.0, bn_momentum=0.9, bn_epsilon=1e-5, weights=""):
    """Hourglass-104: two stacks (CenterNet's main model). ``width`` is not supported (must be 1)."""
    _check_width(width)
    return build_hourglass(2, input_size, bn_momentum, bn_epsilon, weights)


@register_backbone("hourglass52", num_stacks=1)
def hourglass52(input_size=None, width=1.0, bn_momentum=0.9, bn_epsilon=1e-5, weights=""):
    """Hourglass-52: one stack of the same module."""
    _check_width(width)
    return build_hourglass(1, input_size, bn_momentum, bn_epsilon, weights)


def _check_width(width: float) -> None:
    if width != 1.0:
        raise ConfigError(f"model.width={width}: hourglass backbones have fixed channels; use model.width=1.0")
