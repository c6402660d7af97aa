"""Backbones registered by name; importing this package registers every family."""
from centernet_core.modeling.backbones.registry import (OUTPUT_STRIDE, BackboneSpec, backbone_names, build_backbone,
                                               get_backbone_spec, register_backbone)
from centernet_core.modeling.backbones import dla, hourglass, mobilenet, resnet  # noqa: F401  (registration)

__all__ = ["OUTPUT_STRIDE", "BackboneSpec", "backbone_names", "build_backbone", "get_backbone_spec",
           "register_backbone"]
