"""Building blocks shared by the backbones: conv + batch norm (+ ReLU) and residual blocks.

``ConvBN`` is the one convolution layer of the hand-written backbones (Hourglass, ResNet-18,
DLA-34, the FPN path). Two behaviours matter beyond the obvious:

* Stride > 1 pads symmetrically by ``kernel_size // 2`` and convolves with 'valid' padding:
  PyTorch's convention, so weights imported from the original CenterNet give the same
  numbers (TF's 'same' pads only bottom/right for even inputs).
* In inference (``training`` false) the batch norm is folded into the kernel and a bias,
  so the graph is conv + bias (+ add) + ReLU, which oneDNN / XLA fuse into one op. Training
  runs the ordinary Keras BatchNormalization (moving statistics, any strategy).

Shapes: inputs ``[B, H, W, Cin]``, outputs ``[B, ceil(H / s), ceil(W / s), filters]``, in the
layer's compute dtype (float32, or bfloat16 / float16 under a mixed policy).
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="centernet")
class ConvBN(keras.layers.Layer):
    """``kernel_size`` x ``kernel_size`` convolution without bias, batch norm, optional ReLU.

    Args:
      filters: output channels.
      kernel_size: odd square kernel size.
      strides: 1 or 2.
      relu: apply ReLU after the batch norm.
      momentum, epsilon: batch norm parameters (Keras convention: momentum 0.9 is PyTorch's 0.1).
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 1, relu: bool = True,
                 momentum: float = 0.9, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvBN needs an odd kernel size, got {kernel_size}")
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        self.relu, self.momentum, self.epsilon = bool(relu), float(momentum), float(epsilon)
        self._explicit_pad = self.strides > 1 and self.kernel_size > 1
        self._padding = "VALID" if self._explicit_pad else "SAME"
        self.conv = keras.layers.Conv2D(self.filters, self.kernel_size, self.strides,
                                        padding=self._padding.lower(), use_bias=False,
                                        kernel_initializer="he_normal", dtype=self.dtype_policy, name="conv")
        self.bn = keras.layers.BatchNormalization(momentum=self.momentum, epsilon=self.epsilon,
                                                  dtype=self.dtype_policy, name="bn")

    def build(self, input_shape):
        self.conv.build(self._padded_shape(input_shape))
        self.bn.build(self.conv.compute_output_shape(self._padded_shape(input_shape)))
        self.built = True

    def _padded_shape(self, shape):
        if not self._explicit_pad:
            return tuple(shape)
        p = 2 * (self.kernel_size // 2)
        return (shape[0], None if shape[1] is None else shape[1] + p, None if shape[2] is None else shape[2] + p,
                shape[3])

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(self._padded_shape(input_shape))

    def _pad(self, x):
        if not self._explicit_pad:
            return x
        p = self.kernel_size // 2
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])

    def call(self, x, training=False):
        x = self._pad(x)
        if training:
            y = self.bn(self.conv(x), training=True)
        else:
            y = self._folded(x)
        return tf.nn.relu(y) if self.relu else y

    def _folded(self, x):
        """conv(x, W * g / sqrt(v + eps)) + (b - m * g / sqrt(v + eps)): BN folded into the conv."""
        bn = self.bn
        scale = tf.cast(bn.gamma, tf.float32) * tf.math.rsqrt(tf.cast(bn.moving_variance, tf.float32) + self.epsilon)
        kernel = tf.cast(self.conv.kernel, tf.float32) * scale  # [k, k, Cin, F] * [F]
        bias = tf.cast(bn.beta, tf.float32) - tf.cast(bn.moving_mean, tf.float32) * scale
        y = tf.nn.conv2d(x, tf.cast(kernel, x.dtype), self.strides, self._padding)
        return tf.nn.bias_add(y, tf.cast(bias, x.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, relu=self.relu,
                      momentum=self.momentum, epsilon=self.epsilon)
        return config


def residual_block(x, filters: int, strides: int = 1, momentum: float = 0.9, epsilon: float = 1e-5,
                   name: str = "res"):
    """Basic residual block: ConvBN3x3(s)-ReLU, ConvBN3x3, + shortcut, ReLU.

    The shortcut is a 1x1 stride-``strides`` ConvBN when the stride or the channel count
    changes (CornerNet / Hourglass and ResNet-18 "basic block"), identity otherwise.
    ``x``: ``[B, H, W, Cin]`` -> ``[B, H / s, W / s, filters]``.
    """
    bn = dict(momentum=momentum, epsilon=epsilon)
    y = ConvBN(filters, 3, strides, relu=True, name=f"{name}_conv1", **bn)(x)
    y = ConvBN(filters, 3, 1, relu=False, name=f"{name}_conv2", **bn)(y)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = ConvBN(filters, 1, strides, relu=False, name=f"{name}_skip", **bn)(x)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(y)


def upsample_stage(x, filters: int, momentum: float = 0.9, epsilon: float = 1e-5, name: str = "up"):
    """3x3 ConvBN-ReLU, then a 4x4 stride-2 transposed conv + BN + ReLU: ``[B,H,W,C] -> [B,2H,2W,filters]``.

    The ResNet "deconv" stage of the paper (3x3 conv in place of its deformable conv).
    Keras 'same' padding of a 4x4 stride-2 transposed conv pads 1 on each side: PyTorch's
    ``ConvTranspose2d(k=4, s=2, padding=1)``.
    """
    x = ConvBN(filters, 3, 1, momentum=momentum, epsilon=epsilon, name=f"{name}_conv")(x)
    x = keras.layers.Conv2DTranspose(filters, 4, 2, padding="same", use_bias=False,
                                     kernel_initializer="he_normal", name=f"{name}_deconv")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=f"{name}_deconv_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)
