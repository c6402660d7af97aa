"""MobileNetV2 + FPN-style top-down path to stride 4: ``mobilenetv2`` (the edge / TFLite model).

Trunk: ``keras.applications.MobileNetV2`` (``alpha = width``; built with ``weights=None``;
``model.backbone_weights``: a local file or ``imagenet``, Keras's own ``include_top=False``
file for 224-pixel inputs, see ``registry``), tapped at strides 4, 8, 16, 32
(``block_2_add``, ``block_5_add``, ``block_12_add``, ``out_relu``). Top-down path as in
FPN: a 1x1 ConvBN lateral on every tap to ``FPN_CHANNELS``, nearest 2x upsampling of the
coarser level and an add, then a 3x3 ConvBN-ReLU smoothing each merged level; the stride-4
level is the feature map, reduced by a last 3x3 ConvBN-ReLU to ``OUT_CHANNELS`` (the head
input of the paper's small models).

The trunk's ImageNet weights expect R, G, B in [-1, 1]; a fixed layer in front of it
(``mobilenet_input``) converts the pipeline's normalised B, G, R to that, with or without
weights, so both start from the same convention.

Feature map: ``[B, S / 4, S / 4, 64]``.
"""
from __future__ import annotations

import warnings

import keras
from keras.src.applications import mobilenet_v2 as keras_mobilenet_v2  # its weight-file address

from centernet_core.errors import ConfigError
from centernet_core.modeling.backbones.registry import (ImagenetFile, load_weights_into, register_backbone,
                                                         set_bn_momentum)
from centernet_core.pixels import MEAN_BGR, STD_BGR
from centernet_core.modeling.layers import ChannelAffine, ConvBN

TAPS = ("block_2_add", "block_5_add", "block_12_add", "out_relu")  # strides 4, 8, 16, 32
FPN_CHANNELS = 128
OUT_CHANNELS = 64
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # the widths keras.applications has ImageNet files for
IMAGENET_ROWS = 224  # keras.applications' default resolution (all sizes share the shapes)


def mobilenet_input(image):
    """Pipeline input ``[B, S, S, 3]`` (normalised B, G, R) -> Keras MobileNetV2's input.

    Undoes the pipeline normalisation (pixel = 255 * (x * std + mean)), reverses to R, G, B
    and maps 0..255 to [-1, 1] (``mobilenet_v2.preprocess_input``): one fixed
    ``ChannelAffine``, no weights.
    """
    scale = [255.0 * s / 127.5 for s in reversed(STD_BGR)]  # per output channel (R, G, B)
    offset = [255.0 * m / 127.5 - 1.0 for m in reversed(MEAN_BGR)]
    return ChannelAffine(scale, offset, reverse_channels=True, name="mobilenet_preprocess")(image)


def fpn_top_down(taps: list, channels: int, bn: dict):
    """FPN top-down merge of ``taps`` (fine to coarse, each half the previous resolution).

    Returns the finest merged map ``[B, H0, W0, channels]``.
    """
    x = ConvBN(channels, 1, 1, name=f"fpn_lateral{len(taps) - 1}", **bn)(taps[-1])
    for i in range(len(taps) - 2, -1, -1):
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_up{i}")(x)
        lateral = ConvBN(channels, 1, 1, name=f"fpn_lateral{i}", **bn)(taps[i])
        x = keras.layers.Add(name=f"fpn_add{i}")([up, lateral])
        x = ConvBN(channels, 3, 1, name=f"fpn_smooth{i}", **bn)(x)
    return x


def mobilenetv2_imagenet(width: float) -> ImagenetFile:
    """keras.applications' MobileNetV2 ``include_top=False`` ImageNet file for ``alpha = width``."""
    if float(width) not in IMAGENET_ALPHAS:
        raise ConfigError(f"model.backbone_weights=imagenet: keras.applications has MobileNetV2 ImageNet weights "
                          f"for model.width in {', '.join(map(str, IMAGENET_ALPHAS))}, not {width}")
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(width)}_{IMAGENET_ROWS}_no_top.h5"
    return ImagenetFile(name, keras_mobilenet_v2.BASE_WEIGHT_PATH + name)  # keras.applications checks no hash here


@register_backbone("mobilenetv2", imagenet=mobilenetv2_imagenet)
def mobilenetv2(input_size=None, width=1.0, bn_momentum=0.9, bn_epsilon=1e-5, weights=""):
    """MobileNetV2 trunk (``alpha = width``) + FPN top-down path to stride 4."""
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
    image = keras.Input((input_size, input_size, 3), name="image")
    with warnings.catch_warnings():  # "input shape not 224: default ImageNet weights" (none are loaded)
        warnings.simplefilter("ignore")
        trunk = keras.applications.MobileNetV2(include_top=False, weights=None, input_tensor=mobilenet_input(image),
                                               alpha=width)
    load_weights_into(trunk, weights)
    set_bn_momentum(trunk, bn_momentum)
    taps = [trunk.get_layer(name).output for name in TAPS]
    x = fpn_top_down(taps, FPN_CHANNELS, bn)
    x = ConvBN(OUT_CHANNELS, 3, 1, name="features_0", **bn)(x)
    return keras.Model(image, [x], name="backbone")
