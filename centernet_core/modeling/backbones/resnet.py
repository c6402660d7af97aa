"""ResNet backbones with the paper's upsampling path: ``resnet18`` and ``resnet50``.

Trunk to stride 32, then three stages of (3x3 ConvBN-ReLU, 4x4 stride-2 transposed conv,
BN, ReLU) with 256, 128, 64 channels back to stride 4 (the paper's ResNet variant with a
plain 3x3 conv where it uses a deformable one).

* ``resnet18`` is written here (Keras ships no ResNet-18): 7x7/2 stem, 3x3/2 max pool,
  four stages of two basic blocks, channels 64, 128, 256, 512. ``width`` multiplies every
  channel count, upsampling path included (the tiny preset uses 0.25).
* ``resnet50`` is ``keras.applications.ResNet50`` tapped at ``conv5_block3_out`` (built with
  ``weights=None``; ``model.backbone_weights``: a local file or ``imagenet``, Keras's own
  ``include_top=False`` file, see ``registry``); ``width`` must be 1. A fixed layer in front of it
  (``caffe_input``) turns the pipeline's normalised B, G, R into the input its ImageNet
  weights expect, with or without weights, so both start from the same convention.

Feature map: ``[B, S / 4, S / 4, 64 * width]`` (ResNet-18) or ``[B, S / 4, S / 4, 64]``.
"""
from __future__ import annotations

import keras
from keras.src.applications import resnet as keras_resnet  # its weight-file address and hashes

from centernet_core.modeling.backbones.registry import (ImagenetFile, load_weights_into, register_backbone,
                                                         set_bn_momentum)
from centernet_core.pixels import MEAN_BGR, STD_BGR
from centernet_core.errors import ConfigError
from centernet_core.modeling.layers import ChannelAffine, ConvBN, residual_block, upsample_stage

UPSAMPLE_CHANNELS = (256, 128, 64)
RESNET18_CHANNELS = (64, 128, 256, 512)
# keras.applications.resnet50.preprocess_input ("caffe"): B, G, R pixels 0..255 minus this mean.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 8."""
    return max(8, int(round(channels * width)))


def caffe_input(image):
    """Pipeline input ``[B, S, S, 3]`` (normalised B, G, R) -> Keras ResNet50's "caffe" input.

    Undoes the pipeline normalisation (pixel = 255 * (x * std + mean), still B, G, R) and
    subtracts ``CAFFE_MEAN_BGR``: one fixed ``ChannelAffine``, no weights.
    """
    scale = [255.0 * s for s in STD_BGR]
    offset = [255.0 * m - c for m, c in zip(MEAN_BGR, CAFFE_MEAN_BGR)]
    return ChannelAffine(scale, offset, name="caffe_preprocess")(image)


def _upsample_path(x, width: float, bn: dict):
    """Three upsampling stages, stride 32 -> 4; the last layer is named ``features_0``."""
    for i, c in enumerate(UPSAMPLE_CHANNELS):
        x = upsample_stage(x, _scaled(c, width), name=f"up{i}", **bn)
    return keras.layers.Identity(name="features_0")(x)


@register_backbone("resnet18")
def resnet18(input_size=None, width=1.0, bn_momentum=0.9, bn_epsilon=1e-5, weights=""):
    """ResNet-18 (basic blocks [2, 2, 2, 2]) + upsampling path; ``width`` scales all channels."""
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
    image = keras.Input((input_size, input_size, 3), name="image")
    x = ConvBN(_scaled(64, width), 7, 2, name="stem_conv", **bn)(image)
    # PyTorch's 3x3/2 max pool with padding 1; inputs are >= 0 after ReLU, so zero padding = -inf padding.
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="valid", name="stem_pool")(x)
    for stage, c in enumerate(RESNET18_CHANNELS):
        for j in range(2):
            stride = 2 if stage > 0 and j == 0 else 1
            x = residual_block(x, _scaled(c, width), stride, name=f"stage{stage + 1}_{j}", **bn)
    trunk = keras.Model(image, x, name="resnet18_trunk")
    load_weights_into(trunk, weights)
    return keras.Model(image, [_upsample_path(trunk.output, width, bn)], name="backbone")


def resnet50_imagenet(width: float) -> ImagenetFile:
    """keras.applications' ResNet50 ``include_top=False`` ImageNet file (any width: checked by the builder)."""
    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return ImagenetFile(name, keras_resnet.BASE_WEIGHTS_PATH + name, keras_resnet.WEIGHTS_HASHES["resnet50"][1])


@register_backbone("resnet50", imagenet=resnet50_imagenet)
def resnet50(input_size=None, width=1.0, bn_momentum=0.9, bn_epsilon=1e-5, weights=""):
    """keras.applications.ResNet50 trunk (``weights``: a local file) + upsampling path."""
    if width != 1.0:
        raise ConfigError(f"model.width={width}: resnet50 has fixed channels; use model.width=1.0 "
                          "(resnet18 and mobilenetv2 take a width multiplier)")
    image = keras.Input((input_size, input_size, 3), name="image")
    # The trunk's ImageNet weights expect caffe preprocessing; applied always, so a trunk trained
    # from scratch sees the same input convention.
    trunk = keras.applications.ResNet50(include_top=False, weights=None, input_tensor=caffe_input(image))
    load_weights_into(trunk, weights)
    set_bn_momentum(trunk, bn_momentum)
    x = trunk.get_layer("conv5_block3_out").output
    bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)
    return keras.Model(image, [_upsample_path(x, 1.0, bn)], name="backbone")
