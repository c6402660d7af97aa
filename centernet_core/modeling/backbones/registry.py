"""Backbone registry: name -> builder, registered with a decorator.

A backbone builder returns a ``keras.Model`` mapping images ``[B, S, S, 3]`` (float, the
pipeline's normalised B, G, R) to a list of feature maps at output stride 4, one per stack
(``[B, S / 4, S / 4, F]`` each; two for Hourglass-104, one otherwise), in stack order. The
last layer of stack ``i`` is named ``features_{i}``. The composing model puts heads on each.

Builders take plain keyword values (``width``, ``bn_momentum``, ``bn_epsilon``, ``weights``);
``centernet_core.modeling.model.build_model`` is the one place a config becomes those values.

Pretrained trunks (``model.backbone_weights``): a local Keras weights file, or ``imagenet``
for a backbone registered with an ``imagenet`` file (its keras.applications trunk's own
ImageNet file, ``include_top=False``). That file is fetched by ``keras.utils.get_file``
as keras.applications does it (downloaded once, cached in ``~/.keras/models``), or taken
from the folder ``$CENTERNET_KERAS_WEIGHTS_DIR`` when that is set (offline machines and
tests: nothing is downloaded then).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import keras

from centernet_core import strides
from centernet_core.errors import ConfigError
from centernet_core.strides import OUTPUT_STRIDE

IMAGENET = "imagenet"
WEIGHTS_DIR_ENV = "CENTERNET_KERAS_WEIGHTS_DIR"


@dataclasses.dataclass(frozen=True)
class ImagenetFile:
    """A keras.applications ImageNet weights file: its name, download address and MD5 (or None)."""

    name: str
    origin: str
    md5: str | None = None


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its builder, stack count and output stride; ``input_divisor``
    (the factor the input side must be a multiple of) comes from ``strides.INPUT_DIVISOR``."""

    name: str
    builder: Callable[..., keras.Model]
    num_stacks: int = 1
    stride: int = OUTPUT_STRIDE
    imagenet: Callable[[float], ImagenetFile] | None = None  # width -> the trunk's ImageNet file

    @property
    def input_divisor(self) -> int:
        return strides.input_divisor(self.name)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, num_stacks: int = 1, imagenet: Callable[[float], ImagenetFile] | None = None):
    """Decorator: ``@register_backbone("resnet18")`` over a builder function.

    ``imagenet(width)``: the keras.applications ImageNet file of the trunk, for
    ``model.backbone_weights: imagenet`` (None: the backbone has none).

    Registering a name twice is an error (two families must not silently shadow each other),
    and so is a name without an input divisor in ``strides.INPUT_DIVISOR``.
    """
    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"backbone '{name}' is already registered (by {_REGISTRY[name].builder.__module__})")
        if name not in strides.INPUT_DIVISOR:
            raise ValueError(f"backbone '{name}' has no input divisor: add it to centernet_core.strides.INPUT_DIVISOR")
        _REGISTRY[name] = BackboneSpec(name, builder, num_stacks, imagenet=imagenet)
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
    ``input_divisor``). ``weights``: a local Keras weights file for the backbone's trunk, or
    ``imagenet`` (see :func:`imagenet_weights_path`); empty: random initialisation.
    """
    spec = get_backbone_spec(name)
    if weights == IMAGENET:
        weights = imagenet_weights_path(spec, width)
    elif weights and not os.path.exists(weights):
        raise ConfigError(f"model.backbone_weights: file not found: {weights} (give a local weights file, "
                          "'imagenet' for a keras.applications trunk, or leave it empty for random initialisation)")
    return spec.builder(input_size=input_size, width=width, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                        weights=weights)


def imagenet_weights_path(spec: BackboneSpec, width: float) -> str:
    """The local path of ``spec``'s keras.applications ImageNet file at ``width``.

    From ``$CENTERNET_KERAS_WEIGHTS_DIR`` when set (never downloaded then), otherwise
    ``keras.utils.get_file`` (Keras's cache ``~/.keras/models``; downloads on first use and
    checks the MD5 where keras.applications has one). ConfigError when the backbone has no
    ImageNet file or the folder lacks it.
    """
    with_file = [n for n in backbone_names() if _REGISTRY[n].imagenet is not None]
    if spec.imagenet is None:
        raise ConfigError(f"model.backbone_weights=imagenet: {spec.name} has no keras.applications ImageNet file "
                          f"(those that do: {', '.join(with_file)}); resnet18 takes torchvision's through "
                          "`centernet import --from torchvision`, hourglass104 the original's through "
                          "`centernet import --from centernet-pth`")
    file = spec.imagenet(width)
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if folder:
        path = os.path.join(folder, file.name)
        if not os.path.exists(path):
            raise ConfigError(f"model.backbone_weights=imagenet: {path} not found (${WEIGHTS_DIR_ENV} is set, so "
                              f"nothing is downloaded; put {file.origin} there or unset it)")
        return path
    try:
        return keras.utils.get_file(file.name, file.origin, cache_subdir="models", file_hash=file.md5)
    except Exception as e:  # no network, proxy, bad hash: one line saying what to do
        raise ConfigError(f"model.backbone_weights=imagenet: could not fetch {file.origin} ({e}); download it "
                          f"into a folder and set {WEIGHTS_DIR_ENV} to that folder") from None


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
