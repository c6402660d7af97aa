"""Config rules that guard runtime promises: width on fixed-width backbones, loss and batch-norm
ranges, and a decoder that takes output maps with fewer cells than ``eval.max_detections``."""
import numpy as np
import pytest

from centernet_core import config as config_lib
from centernet_core.errors import ConfigError


def _resolve(*overrides):
    return config_lib.resolve("shapes-tiny", profile="cpu", overrides=list(overrides))


@pytest.mark.parametrize("backbone", ["hourglass52", "hourglass104", "resnet50", "dla34"])
def test_width_on_a_fixed_width_backbone_is_refused(backbone):
    size = 128 if backbone.startswith("hourglass") else 64
    with pytest.raises(ConfigError, match=rf"^model.width=0.5: {backbone} has fixed channels; "
                                          r"use --set model.width=1.0"):
        _resolve(f"model.backbone={backbone}", f"model.input_size={size}", "model.width=0.5")


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv2"])
def test_width_is_accepted_where_it_scales_channels(backbone):
    assert _resolve(f"model.backbone={backbone}", "model.width=0.5").model.width == 0.5


@pytest.mark.parametrize("item, key", [
    ("train.size_weight=-0.1", "train.size_weight=-0.1"),
    ("train.offset_weight=-1", "train.offset_weight=-1"),
    ("train.focal_alpha=0", "train.focal_alpha=0"),
    ("train.focal_beta=-4", "train.focal_beta=-4"),
    ("model.bn_momentum=1.0", "model.bn_momentum=1.0"),
    ("model.bn_momentum=-0.1", "model.bn_momentum=-0.1"),
])
def test_loss_and_batch_norm_ranges(item, key):
    with pytest.raises(ConfigError) as raised:
        _resolve(item)
    message = str(raised.value)
    assert key.split("=")[0] in message and "--set" in message and "\n" not in message


def test_zero_loss_weights_and_momentum_are_valid():
    cfg = _resolve("train.size_weight=0", "train.offset_weight=0", "model.bn_momentum=0")
    assert (cfg.train.size_weight, cfg.model.bn_momentum) == (0.0, 0.0)


@pytest.mark.parametrize("nms_iou", [0.0, 0.5])
def test_decode_with_fewer_cells_than_max_detections(nms_iou):
    import tensorflow as tf
    from centernet_core.tasks.detection.decode import decode

    # a 2 x 2 map of 2 classes: 8 cells, 20 detections asked for (a small image in an exported graph)
    logits = np.full([1, 2, 2, 2], -8.0, np.float32)
    logits[0, 1, 0, 1] = 3.0
    size = np.full([1, 2, 2, 2], 2.0, np.float32)
    out = decode(tf.constant(logits), tf.constant(size), tf.zeros([1, 2, 2, 2]), max_detections=20,
                 nms_iou=nms_iou, score_threshold=0.5)
    assert out["boxes_yxyx_abs"].shape == (1, 20, 4) and out["scores"].shape == (1, 20)
    assert int(out["num_detections"][0]) == 1
    assert int(out["classes"][0, 0]) == 1
    np.testing.assert_allclose(out["boxes_yxyx_abs"][0, 0], [0.0, -4.0, 8.0, 4.0])
    assert float(out["scores"][0, 0]) == pytest.approx(1 / (1 + np.exp(-3.0)))
    np.testing.assert_array_equal(out["scores"][0, 1:], 0.0)
    # no threshold: all 8 cells' peaks may come back, the padded rows never
    loose = decode(tf.constant(logits), tf.constant(size), tf.zeros([1, 2, 2, 2]), max_detections=20)
    assert int(loose["num_detections"][0]) <= 8
    np.testing.assert_array_equal(loose["scores"][0, 8:], 0.0)
