"""Building blocks shared by the backbones: conv + batch norm (+ ReLU) and residual blocks.

``ConvBN`` is the one convolution layer of the hand-written backbones (Hourglass, ResNet-18,
DLA-34, the FPN path). Two behaviours matter beyond the obvious:

* Stride > 1 pads symmetrically by ``kernel_size // 2`` and convolves with 'valid' padding:
  PyTorch's convention, so weights imported from the original CenterNet give the same
  numbers (TF's 'same' pads only bottom/right for even inputs).
* In inference (``training`` false) the batch norm is folded into the kernel and a bias,
  so the graph is conv + bias (+ add) + ReLU, which oneDNN / XLA fuse into one op. Training
  normalises with the batch statistics in one fused op (``FusedBatchNormV3``) and updates the
  Keras BatchNormalization's moving statistics exactly as that layer would (any strategy).
  The fold reads the float32 variables, scales in float32 and casts to the compute dtype
  once: per call that is one pass over the weights (Keras's autocast would cast the kernel
  to bfloat16 and back first, three passes and a double rounding). ``freeze_for_inference``
  goes further for eval and prediction: the folded weights are computed once, in the compute
  dtype, and every inference call reuses them: one pass over every weight (and, under a
  mixed policy, a cast) fewer per image.

Shapes: inputs ``[B, H, W, Cin]``, outputs ``[B, ceil(H / s), ceil(W / s), filters]``, in the
layer's compute dtype (float32, or bfloat16 / float16 under a mixed policy).
"""
from __future__ import annotations

import contextlib
import threading

import keras
import tensorflow as tf
from keras.src.backend import AutocastScope  # no public alias in Keras 3.15

_override = threading.local()


@contextlib.contextmanager
def convolution_override(fn):
    """Within the block, every ``Conv2D`` of this package convolves with ``fn`` where it can.

    ``fn(layer, inputs, kernel)`` returns the convolution's output, or None to keep Keras's
    own; ``fn=None`` turns any outer override off. The switch is per thread: enter it where
    the layers are called or traced (e.g. inside the replica function given to
    ``strategy.run``). Training uses it for its CPU kernel gradients
    (``training.conv_grad``); the model itself knows nothing of them.
    """
    previous = getattr(_override, "fn", None)
    _override.fn = fn
    try:
        yield
    finally:
        _override.fn = previous


@keras.saving.register_keras_serializable(package="centernet")
class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with one extension point: ``convolution_override``.

    Same variables, arguments, config and (outside an override) the same computation as
    the Keras layer. The backbones' and heads' convolutions are this layer.
    """

    def convolution_op(self, inputs, kernel):
        fn = getattr(_override, "fn", None)
        out = None if fn is None else fn(self, inputs, kernel)
        return super().convolution_op(inputs, kernel) if out is None else out


@keras.saving.register_keras_serializable(package="centernet")
class ConvBN(keras.layers.Layer):
    """``kernel_size`` x ``kernel_size`` convolution without bias, batch norm, optional ReLU.

    Args:
      filters: output channels.
      kernel_size: odd square kernel size.
      strides: 1 or 2.
      relu: apply ReLU after the batch norm.
      momentum, epsilon: batch norm parameters (Keras convention: momentum 0.9 is PyTorch's 0.1).
      unbiased_variance: training moves the moving variance towards the batch variance with
        Bessel's correction, n / (n - 1), n = B x H x W (PyTorch's BatchNorm2d) instead of the
        biased one (Keras's BatchNormalization). Normalisation itself always uses the biased one.
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 1, relu: bool = True,
                 momentum: float = 0.9, epsilon: float = 1e-5, unbiased_variance: bool = False, **kwargs):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvBN needs an odd kernel size, got {kernel_size}")
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        self.relu, self.momentum, self.epsilon = bool(relu), float(momentum), float(epsilon)
        self.unbiased_variance = bool(unbiased_variance)
        self._explicit_pad = self.strides > 1 and self.kernel_size > 1
        self._padding = "VALID" if self._explicit_pad else "SAME"
        self.conv = Conv2D(self.filters, self.kernel_size, self.strides,
                           padding=self._padding.lower(), use_bias=False,
                           kernel_initializer="he_normal", dtype=self.dtype_policy, name="conv")
        self.bn = keras.layers.BatchNormalization(momentum=self.momentum, epsilon=self.epsilon,
                                                  dtype=self.dtype_policy, name="bn")
        self._frozen = None  # (kernel, bias) from freeze_for_inference, or None

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
            # The weights are about to change: a frozen fold would go stale (evaluated when the
            # call runs eagerly or is traced, which is before any inference function traced later).
            self._frozen = None
            y = self.conv(x)
            y = self._train_batch_norm(y) if self.bn.trainable else self.bn(y, training=True)
        else:
            kernel, bias = self._frozen if self._frozen is not None else self.folded_weights(x.dtype)
            y = tf.nn.bias_add(tf.nn.conv2d(x, tf.cast(kernel, x.dtype), self.strides, self._padding),
                               tf.cast(bias, x.dtype))
        return tf.nn.relu(y) if self.relu else y

    def _train_batch_norm(self, y):
        """Keras ``BatchNormalization(training=True)``, as one fused op (and its fused gradient).

        Same result and moving-average update as the Keras layer (biased batch variance,
        ``moving = moving * momentum + batch * (1 - momentum)``; the unbiased one with
        ``unbiased_variance``, as PyTorch), but Keras 3 computes it from
        separate mean / variance / normalise ops in float32, several passes over the feature
        map forward and backward; ``FusedBatchNormV3`` makes one each way and keeps a
        bfloat16 / float16 input in its dtype (statistics in float32).
        """
        bn = self.bn
        with AutocastScope(None):  # the float32 variables, as the fused op wants them
            gamma, beta = bn.gamma.value, bn.beta.value
            moving_mean, moving_var = bn.moving_mean.value, bn.moving_variance.value
        out, mean, var = tf.compat.v1.nn.fused_batch_norm(y, gamma, beta, epsilon=self.epsilon,
                                                          is_training=True)[:3]
        if not self.unbiased_variance:  # the op returns the unbiased variance
            count = tf.cast(tf.reduce_prod(tf.shape(y)[:-1]), tf.float32)
            var = var * (count - 1.0) / tf.maximum(count, 1.0)
        m = self.momentum
        bn.moving_mean.assign(moving_mean * m + tf.stop_gradient(mean) * (1.0 - m))
        bn.moving_variance.assign(moving_var * m + tf.stop_gradient(var) * (1.0 - m))
        return out

    def folded_weights(self, dtype=tf.float32):
        """BN folded into the conv: ``(kernel [k, k, Cin, F], bias [F])`` in ``dtype``.

        kernel = W * g / sqrt(v + eps), bias = b - m * g / sqrt(v + eps), computed in float32
        from the variables themselves (not autocast copies) and cast to ``dtype`` once.
        """
        bn = self.bn
        with AutocastScope(None):  # read the stored (float32) variables
            kernel, gamma, beta = self.conv.kernel.value, bn.gamma.value, bn.beta.value
            mean, var = bn.moving_mean.value, bn.moving_variance.value
        f32 = lambda t: tf.cast(t, tf.float32)  # noqa: E731
        scale = f32(gamma) * tf.math.rsqrt(f32(var) + self.epsilon)  # [F]
        kernel = f32(kernel) * scale  # [k, k, Cin, F] * [F]
        bias = f32(beta) - f32(mean) * scale
        return tf.cast(kernel, dtype), tf.cast(bias, dtype)

    def freeze_for_inference(self):
        """Compute the folded weights once, in the compute dtype; inference calls reuse them.

        For eval and prediction after the weights are final (not for a SavedModel export,
        which would store the folded weights as graph constants beside the variables): later changes to the variables
        (``load_weights``, an optimizer step outside a ``training=True`` call of this layer) are
        not seen until ``unfreeze`` or the next ``training=True`` call. Not saved with the model.
        """
        self._frozen = self.folded_weights(self.compute_dtype)

    def unfreeze(self):
        """Back to folding from the variables on every inference call."""
        self._frozen = None

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides, relu=self.relu,
                      momentum=self.momentum, epsilon=self.epsilon, unbiased_variance=self.unbiased_variance)
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


@keras.saving.register_keras_serializable(package="centernet")
class ChannelAffine(keras.layers.Layer):
    """Fixed per-channel map ``y[..., c] = x[..., c'] * scale[c] + offset[c]``; no weights.

    ``c' = 2 - c`` with ``reverse_channels`` (B, G, R <-> R, G, B), ``c' = c`` otherwise;
    ``scale`` and ``offset`` are indexed by output channel. The Keras-application backbones
    put one in front of their trunk to turn the pipeline's normalised B, G, R input into the
    preprocessing the trunk's ImageNet weights expect. Shapes: ``[..., 3] -> [..., 3]``.

    Args:
      scale, offset: three floats each.
      reverse_channels: reverse the channel order before scaling.
    """

    def __init__(self, scale, offset, reverse_channels: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(s) for s in scale]
        self.offset = [float(o) for o in offset]
        self.reverse_channels = bool(reverse_channels)
        if len(self.scale) != 3 or len(self.offset) != 3:
            raise ValueError(f"ChannelAffine needs three scales and offsets, got {scale} and {offset}")

    def call(self, x):
        if self.reverse_channels:
            x = tf.reverse(x, [-1])
        return x * tf.constant(self.scale, x.dtype) + tf.constant(self.offset, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, offset=self.offset, reverse_channels=self.reverse_channels)
        return config
