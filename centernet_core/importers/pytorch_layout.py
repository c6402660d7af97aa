"""PyTorch state dicts into this toolkit's Keras layers: what every weight importer shares.

``state_dict_of`` takes the tensors out of a loaded checkpoint; ``ConvBNEntry`` names a
PyTorch conv + BatchNorm2d pair that becomes one ``ConvBN``; ``hwio`` turns an OIHW kernel
into Keras's HWIO; ``flat_layers`` finds a model's layers by name (nested models too);
``listing`` writes the one-line lists of keys that an import refuses with.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from centernet_core.importers.torch_pickle import CheckpointError

BN_FIELDS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
             ("running_var", "moving_variance"))
LIST_LIMIT = 12


@dataclasses.dataclass(frozen=True)
class ConvBNEntry:
    """A PyTorch conv (``{conv}.weight``) + BatchNorm2d (``{bn}.*``) pair -> one Keras ConvBN layer."""

    conv: str
    bn: str
    layer: str

    def keys(self) -> list[str]:
        return [f"{self.conv}.weight"] + [f"{self.bn}.{k}" for k, _ in BN_FIELDS]


def state_dict_of(checkpoint, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """The tensors of a loaded checkpoint, ``module.`` prefixes and BN batch counters removed.

    Accepts the original CenterNet's ``{'epoch', 'state_dict'[, 'optimizer']}`` and a bare
    state dict (CornerNet / ExtremeNet snapshots).
    """
    sd = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, np.ndarray) for v in sd.values()):
        raise CheckpointError(f"{source}: expected a dict with 'state_dict' (CenterNet) or a state dict of tensors "
                              "(CornerNet / ExtremeNet); found neither")
    out = {}
    for key, value in sd.items():
        name = str(key)
        while name.startswith("module."):
            name = name[len("module."):]
        if not name.endswith(".num_batches_tracked"):
            out[name] = value
    return out


def listing(title: str, items: list[str]) -> str:
    more = f", ... ({len(items) - LIST_LIMIT} more)" if len(items) > LIST_LIMIT else ""
    shown = ", ".join(items[:LIST_LIMIT]) + more
    return f"{title} ({len(items)}): {shown}"


def flat_layers(model) -> dict:
    """Every layer of ``model`` by name, descending into nested models (the backbone)."""
    out = {}
    for layer in model.layers:
        out[layer.name] = layer
        if hasattr(layer, "layers"):
            out.update(flat_layers(layer))
    return out


def hwio(weight: np.ndarray) -> np.ndarray:
    """PyTorch OIHW conv weight -> Keras HWIO (other ranks pass through to fail the shape check)."""
    return weight.transpose(2, 3, 1, 0) if weight.ndim == 4 else weight
