"""Heads: initial biases, layer names, config round trip, and the config fields they read."""
import math

import numpy as np
import tensorflow as tf

from centernet_core import config as config_lib
from centernet_core.modeling.heads import CenterNetHead, head_name, make_heads
from centernet_core.modeling.model import build_model
from centernet_core.modeling.summary import count_params
from centernet_core.tasks.detection import DetectionTask


def test_head_biases_and_output_shapes():
    heads = make_heads(1, DetectionTask(num_classes=3, heatmap_bias=-2.19).heads(), channels=8)
    assert [h.name for h in heads.values()] == ["head_heatmap_1", "head_size_1", "head_offset_1"]
    x = tf.random.stateless_normal((2, 4, 4, 16), seed=(0, 1))
    for name, head in heads.items():
        y = head(x)
        assert y.shape == (2, 4, 4, 3 if name == "heatmap" else 2)
        assert head.conv.kernel.shape == (3, 3, 16, 8) and head.conv.use_bias
        bias = head.out.bias.numpy()
        np.testing.assert_allclose(bias, -2.19 if name == "heatmap" else 0.0)
    # with a zero feature map the head outputs exactly its last bias: sigmoid(-2.19) ~ 0.1 prior
    y = heads["heatmap"](tf.zeros((1, 4, 4, 16)))
    np.testing.assert_allclose(tf.sigmoid(y).numpy(), 1 / (1 + math.exp(2.19)), rtol=1e-5)
    assert head_name("size", 0) == "head_size_0"


def test_head_config_round_trip():
    head = CenterNetHead(5, 12, bias_init=-1.5, name="head_heatmap_0")
    clone = CenterNetHead.from_config(head.get_config())
    assert (clone.num_outputs, clone.channels, clone.bias_init, clone.name) == (5, 12, -1.5, "head_heatmap_0")


def test_model_config_fields_change_the_heads():
    base = config_lib.resolve("shapes-tiny")
    model = build_model(base)
    x = tf.zeros((1, 64, 64, 3))
    assert model(x)[-1]["heatmap"].shape == (1, 16, 16, 3)
    more = build_model(config_lib.resolve("shapes-tiny", overrides=["model.num_classes=7"]))
    assert more(x)[-1]["heatmap"].shape == (1, 16, 16, 7)
    wide = build_model(config_lib.resolve("shapes-tiny", overrides=["model.head_channels=64"]))
    c_in = model.heads[0]["size"].conv.kernel.shape[2]
    # three heads, each 3x3 conv (c_in -> 32 or 64, + bias) and 1x1 conv to C or 2 outputs (+ bias)
    delta = 3 * (9 * c_in + 1) * 32 + (3 + 2 + 2) * 32
    assert count_params(wide)["total"] - count_params(model)["total"] == delta
    biased = build_model(config_lib.resolve("shapes-tiny", overrides=["model.heatmap_bias=-4.6"]))
    np.testing.assert_allclose(biased.heads[0]["heatmap"].out.bias.numpy(), -4.6)
