"""Pretrained starts (issue 16): ImageNet trunks, torchvision ResNet imports, fine-tuning, and AP-0 warnings.

No test touches the network: ``model.backbone_weights: imagenet`` reads a local file of
keras.applications' own layout (``$CENTERNET_KERAS_WEIGHTS_DIR``), and the torchvision side
is tests/torch_reference/torchvision_resnet.py (torchvision's module names, random weights).
"""
import os
import sys

import h5py
import keras
import numpy as np
import pytest

from centernet_core.errors import ConfigError
from centernet_core.modeling.backbones import build_backbone, registry

try:
    import torch
except ImportError:  # the `dev` extra pins torch; without it only the torch-free tests run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the `dev` extra) builds the reference network")
TOLERANCE = 1e-4


# ---------------------------------------------------------------- model.backbone_weights: imagenet

def _application(name):
    if name == "resnet50":
        return keras.applications.ResNet50(include_top=False, weights=None)
    return keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(224, 224, 3))


def _write_imagenet_file(name, folder, seed=0):
    """A keras.applications ``include_top=False`` file (legacy HDF5, layer order) with known random values.

    Returns ``{layer name: [arrays]}`` of what the file holds.
    """
    from keras.src.legacy.saving import legacy_h5_format  # the writer of keras.applications' .h5 files

    app = _application(name)
    rng = np.random.default_rng(seed)
    for w in app.weights:
        value = rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path else rng.standard_normal(w.shape)
        w.assign(value.astype(np.float32))
    width = 1.0 if name == "resnet50" else 0.35
    path = os.path.join(folder, registry.get_backbone_spec(name).imagenet(width).name)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, app)
    return path, {layer.name: [w.numpy() for w in layer.weights] for layer in app.layers if layer.weights}


@pytest.mark.parametrize("name, width", [("resnet50", 1.0), ("mobilenetv2", 0.35)])
def test_imagenet_weights_come_from_keras_applications_file(tmp_path, monkeypatch, name, width):
    def no_network(*args, **kwargs):
        raise AssertionError("tests never download")
    monkeypatch.setattr(keras.utils, "get_file", no_network)
    path, expected = _write_imagenet_file(name, str(tmp_path))
    # The file has keras.applications' own layout: keras.applications itself loads it.
    kwargs = {} if name == "resnet50" else {"alpha": width, "input_shape": (224, 224, 3)}
    app = getattr(keras.applications, "ResNet50" if name == "resnet50" else "MobileNetV2")(
        include_top=False, weights=path, **kwargs)
    np.testing.assert_array_equal(app.layers[-3].weights[0].numpy(), expected[app.layers[-3].name][0])

    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(tmp_path))
    backbone = build_backbone(name, width=width, weights="imagenet")
    checked = 0
    for layer_name, values in expected.items():
        for w, value in zip(backbone.get_layer(layer_name).weights, values, strict=True):
            np.testing.assert_array_equal(w.numpy(), value, err_msg=w.path)
            checked += 1
    assert checked == len(app.weights) > 100  # every trunk weight, BN moving statistics included
    fresh = build_backbone(name, width=width)
    assert not np.array_equal(fresh.get_layer("Conv_1" if name != "resnet50" else "conv1_conv").weights[0].numpy(),
                              expected["Conv_1" if name != "resnet50" else "conv1_conv"][0])


def test_imagenet_resolves_through_keras_cache_and_names_what_has_none(tmp_path, monkeypatch):
    path, _ = _write_imagenet_file("resnet50", str(tmp_path))
    asked = []

    def cached(fname, origin, cache_subdir, file_hash):  # keras.utils.get_file, offline
        asked.append((fname, origin, cache_subdir, file_hash))
        return path
    monkeypatch.delenv(registry.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(keras.utils, "get_file", cached)
    spec = registry.get_backbone_spec("resnet50")
    assert registry.imagenet_weights_path(spec, 1.0) == path
    assert asked == [("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                      "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                      "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "models",
                      "4d473c1dd8becc155b73f8504c6f6626")]
    mobile = registry.get_backbone_spec("mobilenetv2").imagenet(0.5)
    assert mobile.name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
    with pytest.raises(ConfigError, match="keras.applications has MobileNetV2 ImageNet weights for model.width"):
        registry.get_backbone_spec("mobilenetv2").imagenet(0.25)
    with pytest.raises(ConfigError, match="resnet18 has no keras.applications ImageNet file .*--from torchvision"):
        build_backbone("resnet18", width=0.25, weights="imagenet")
    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="not found .*nothing is downloaded"):
        build_backbone("resnet50", weights="imagenet")
