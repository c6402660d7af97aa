"""The model's two size rules, each stated once: the output stride and the input divisors.

``OUTPUT_STRIDE``: every backbone's feature maps, the training targets and the decoder work
at input size / 4. ``INPUT_DIVISOR``: per backbone, the factor the input side must be a
multiple of (the total downsampling of its deepest feature map). The backbone registry takes
its divisors from here, and config validation reads them without importing TensorFlow.
"""
from __future__ import annotations

from centernet_core.errors import ConfigError

OUTPUT_STRIDE = 4

INPUT_DIVISOR = {
    "hourglass104": 128,  # five downsamplings below stride 4: 4 * 32
    "hourglass52": 128,
    "resnet18": 32,
    "resnet50": 32,
    "dla34": 32,
    "mobilenetv2": 32,
}


def input_divisor(backbone: str) -> int:
    """The input divisor of ``backbone``; ConfigError listing the known names otherwise."""
    if backbone not in INPUT_DIVISOR:
        raise ConfigError(f"unknown backbone '{backbone}'; valid: {', '.join(INPUT_DIVISOR)} (model.backbone)")
    return INPUT_DIVISOR[backbone]
