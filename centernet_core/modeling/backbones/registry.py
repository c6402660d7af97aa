"""Backbone registry: name -> builder, registered with a decorator.

A backbone builder returns a ``keras.Model`` mapping images ``[B, S, S, 3]`` (float, the
pipeline's normalised B, G, R) to a list of feature maps at output stride 4, one per stack
(``[B, S / 4, S / 4, F]`` each; two for Hourglass-104, one otherwise), in stack order. The
last layer of stack ``i`` is named ``features_{i}``. The composing model puts heads on each.

Builders take plain keyword values (``width``, ``bn_momentum``, ``bn_epsilon``, ``weights``);
``centernet_core.modeling.model.build_model`` is the one place a config becomes those values.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import keras

from centernet_core import strides
from centernet_core.errors import ConfigError
from centernet_core.strides import OUTPUT_STRIDE


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its builder, stack count and output stride; ``input_divisor``
    (the factor the input side must be a multiple of) comes from ``strides.INPUT_DIVISOR``."""

    name: str
    builder: Callable[..., keras.Model]
    num_stacks: int = 1
    stride: int = OUTPUT_STRIDE

    @property
    def input_divisor(self) -> int:
        return strides.input_divisor(self.name)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, num_stacks: int = 1):
    """Decorator: ``@register_backbone("resnet18")`` over a builder function.

    Registering a name twice is an error (two families must not silently shadow each other),
    and so is a name without an input divisor in ``strides.INPUT_DIVISOR``.
    """
    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"backbone '{name}' is already registered (by {_REGISTRY[name].builder.__module__})")
        if name not in strides.INPUT_DIVISOR:
            raise ValueError(f"backbone '{name}' has no input divisor: add it to centernet_core.strides.INPUT_DIVISOR")
        _REGISTRY[name] = BackboneSpec(name, builder, num_stacks)
        return builder
    return wrap


def backbone_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    """The spec registered under ``name``; ConfigError listing the valid names otherwise."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone '{name}'; valid: {', '.join(backbone_names())} (model.backbone)")
    return _REGISTRY[name]


def build_backbone(name: str, input_size: int | None = None, width: float = 1.0, bn_momentum: float = 0.9,
                   bn_epsilon: float = 1e-5, weights: str = "") -> keras.Model:
    """Build backbone ``name`` as a ``keras.Model`` named "backbone" (see module docstring).

    ``input_size`` fixes the spatial input size (None: any size divisible by the spec's
    ``input_divisor``). ``weights``: optional local weights file for the backbone's
    ImageNet trunk; never downloaded.
    """
    spec = get_backbone_spec(name)
    if weights and not os.path.exists(weights):
        raise ConfigError(f"model.backbone_weights: file not found: {weights} (give a local weights file "
                          "or leave it empty for random initialisation; weights are never downloaded)")
    return spec.builder(input_size=input_size, width=width, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                        weights=weights)


def load_weights_into(model: keras.Model, weights: str) -> None:
    """Load a local Keras weights file into ``model`` (a trunk); one clear error on mismatch."""
    if not weights:
        return
    try:
        model.load_weights(weights)
    except (ValueError, OSError, KeyError) as e:
        raise ConfigError(f"model.backbone_weights: {weights} does not fit the {model.name} trunk ({e})") from None


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    """Use ``model.bn_momentum`` in a Keras application trunk's batch norms too.

    Their epsilon is left as built: it belongs to the trunk's ImageNet weights.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
