"""CenterNet prediction heads: per output and per stack, 3x3 conv + ReLU + 1x1 conv.

The task decides the outputs (``tasks.HeadSpec``: name, channels, initial bias of the last
conv; for detection "heatmap" with C class logits and a -2.19 bias, "size", "offset").
Every conv has a bias.

Layer names are ``head_{output}_{stack}``: everything not named ``head_*`` is backbone,
which is how a checkpoint's backbone is restored into a model with another class count.
Shapes: ``[B, H, W, F] -> [B, H, W, num_outputs]`` in the layer's compute dtype.
"""
from __future__ import annotations

from typing import Sequence

import keras

from centernet_core.modeling.layers import Conv2D
from centernet_core.tasks import HeadSpec

HEAD_PREFIX = "head_"


@keras.saving.register_keras_serializable(package="centernet")
class CenterNetHead(keras.layers.Layer):
    """3x3 conv (``channels``, bias) -> ReLU -> 1x1 conv (``num_outputs``, bias = ``bias_init``).

    Args:
      num_outputs: channels of the prediction (C for the heatmap, 2 for size / offset).
      channels: width of the 3x3 conv (``model.head_channels``).
      bias_init: initial bias of the 1x1 conv.
    """

    def __init__(self, num_outputs: int, channels: int, bias_init: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_outputs, self.channels, self.bias_init = int(num_outputs), int(channels), float(bias_init)
        self.conv = Conv2D(self.channels, 3, padding="same", activation="relu", dtype=self.dtype_policy,
                           name="conv")
        self.out = Conv2D(self.num_outputs, 1, dtype=self.dtype_policy, name="out",
                          bias_initializer=keras.initializers.Constant(self.bias_init))

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.out.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_outputs,)

    def call(self, x):
        return self.out(self.conv(x))

    def get_config(self):
        config = super().get_config()
        config.update(num_outputs=self.num_outputs, channels=self.channels, bias_init=self.bias_init)
        return config


def head_name(output: str, stack: int) -> str:
    """Layer name of ``output``'s head on stack ``stack``, e.g. "head_heatmap_1"."""
    return f"{HEAD_PREFIX}{output}_{stack}"


def make_heads(stack: int, outputs: Sequence[HeadSpec], channels: int) -> dict:
    """Fresh heads for one stack: ``{spec.name: head with spec.channels outputs}`` in the
    order of ``outputs`` (unbuilt layers)."""
    return {spec.name: CenterNetHead(spec.channels, channels, spec.bias_init, name=head_name(spec.name, stack))
            for spec in outputs}
