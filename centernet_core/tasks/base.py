"""What a task is: the model's named outputs, how targets are encoded, the loss, the decoder.

A task ("detection"; later "keypoints") owns everything that depends on what the model
predicts. The rest of the toolkit talks to it through this small interface:

- ``heads()``: the named outputs the model grows a head for, per stack
  (``HeadSpec``: name, channels, initial bias of the last conv).
- ``encode(objects, output_hw)``: one batch of objects in input pixels -> the targets
  dict the loss reads (pure, graph-safe; called inside ``tf.data``).
- ``object_mask(targets)``: ``[B, K]`` 1 for each object that counts in the loss's
  normaliser (summed over replicas by the training loop).
- ``loss(outputs, targets, num_objects)``: float32 scalars, ``"total"`` among them, keys
  ``loss_keys``.
- ``decode(maps, ...)``, ``merge_flip``, ``rescale``, ``merge_scales``, ``to_original``:
  raw maps of the last stack -> detections, test-time augmentation, and the mapping back
  to original-image pixels (graph-only, exportable).

A new task is new modules plus ``@register_task("name")``; ``model.task`` selects it and
``build_task(cfg)`` is the one place a config becomes the task's constructor values.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from centernet_core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One named model output: ``channels`` wide, its head's last bias starting at ``bias_init``."""

    name: str
    channels: int
    bias_init: float = 0.0


class Task:
    """The interface every task implements (see the module docstring for the contracts)."""

    name = ""
    num_classes = 0  # C: the category count the model predicts
    loss_keys: tuple[str, ...] = ("total",)

    def heads(self) -> tuple[HeadSpec, ...]:
        raise NotImplementedError

    def encode(self, objects: dict, output_hw: tuple[int, int]) -> dict:
        raise NotImplementedError

    def object_mask(self, targets: dict):
        raise NotImplementedError

    def loss(self, outputs, targets: dict, num_objects) -> dict:
        raise NotImplementedError

    def decode(self, maps: dict, max_detections: int, score_threshold: float, nms_iou: float) -> dict:
        raise NotImplementedError

    def merge_flip(self, maps: dict, maps_flipped: dict) -> dict:
        raise NotImplementedError

    def rescale(self, detections: dict, factor: float) -> dict:
        raise NotImplementedError

    def merge_scales(self, parts: list[dict], max_detections: int, iou: float, score_threshold: float) -> dict:
        raise NotImplementedError

    def to_original(self, detections: dict, scale, original_hw) -> dict:
        raise NotImplementedError


_REGISTRY: dict[str, Callable] = {}


def register_task(name: str):
    """Class decorator: ``@register_task("detection")`` over a ``Task`` subclass with a
    ``from_config(cfg)`` classmethod. Registering a name twice is an error."""
    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"task '{name}' is already registered (by {_REGISTRY[name].__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def build_task(cfg) -> Task:
    """The task of ``cfg`` (``model.task``) with its values from the config."""
    name = cfg.model.task
    if not isinstance(cfg.model.num_classes, int):
        raise ConfigError(f"model.num_classes is {cfg.model.num_classes}: it is taken from the training data when "
                          "training starts; to build the model without data give --set model.num_classes=N")
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model.task '{name}'; valid: {', '.join(task_names())}")
    return _REGISTRY[name].from_config(cfg)
