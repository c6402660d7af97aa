"""Backbone registry, shared layers, every backbone's outputs, and Hourglass-104's exact size."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from centernet_core import config as config_lib, strides
from centernet_core.modeling.backbones import backbone_names, build_backbone, get_backbone_spec, register_backbone
from centernet_core.errors import ConfigError
from centernet_core.data.augment import normalize_bgr
from centernet_core.modeling.layers import ChannelAffine, ConvBN

# name -> (kwargs, two input sizes, feature channels, stacks)
CASES = {
    "hourglass104": ({}, (128, 256), 256, 2),
    "hourglass52": ({}, (128, 256), 256, 1),
    "resnet18": ({"width": 0.25}, (64, 96), 16, 1),
    "resnet50": ({}, (64, 96), 64, 1),
    "dla34": ({}, (64, 96), 64, 1),
    "mobilenetv2": ({"width": 0.35}, (64, 96), 64, 1),
}


def test_registry_matches_config_divisors():
    assert sorted(strides.INPUT_DIVISOR) == backbone_names() == sorted(CASES)
    for name, divisor in strides.INPUT_DIVISOR.items():
        spec = get_backbone_spec(name)
        assert (spec.input_divisor, spec.stride, spec.num_stacks) == (divisor, 4, CASES[name][3])


def test_registry_errors():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet18")(lambda **kw: None)
    with pytest.raises(ConfigError, match="unknown backbone 'resnet19'; valid: dla34, hourglass104"):
        get_backbone_spec("resnet19")
    with pytest.raises(ConfigError, match="file not found: /nonexistent.weights.h5"):
        build_backbone("resnet18", weights="/nonexistent.weights.h5")
    with pytest.raises(ConfigError, match="model.width"):
        build_backbone("resnet50", width=0.5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_shapes_and_stride(name):
    kwargs, sizes, channels, stacks = CASES[name]
    model = build_backbone(name, **kwargs)
    assert model.name == "backbone"
    assert [layer for layer in model.output_names] == [f"features_{i}" for i in range(stacks)]
    for size in sizes:
        x = tf.random.stateless_uniform((2, size, size, 3), seed=(1, 2))
        feats = model(x, training=False)
        feats = feats if isinstance(feats, list) else [feats]
        assert len(feats) == stacks
        for f in feats:
            assert f.shape == (2, size // 4, size // 4, channels)
            assert np.all(np.isfinite(f.numpy()))
        assert float(tf.math.reduce_std(feats[-1])) > 0  # not a dead (all-constant) map


def test_convbn_folded_inference_equals_batch_norm():
    layer, x = _convbn_with_statistics()
    bn = layer.bn
    conv = layer.conv(x)
    expected = (conv - bn.moving_mean) / np.sqrt(bn.moving_variance.numpy() + 1e-5) * bn.gamma + bn.beta
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(bn(conv, training=False).numpy(), expected.numpy(), atol=1e-4)


def _convbn_with_statistics(dtype="float32"):
    layer = ConvBN(6, 3, 1, relu=False, epsilon=1e-5, dtype=dtype)
    x = tf.random.stateless_normal((2, 8, 8, 4), seed=(3, 4))
    layer(x)
    rng = np.random.default_rng(0)
    bn = layer.bn
    for var, value in ((bn.gamma, rng.uniform(0.5, 2, 6)), (bn.beta, rng.normal(size=6)),
                       (bn.moving_mean, rng.normal(size=6)), (bn.moving_variance, rng.uniform(0.5, 2, 6))):
        var.assign(value.astype("float32"))
    layer.conv.kernel.assign(layer.conv.kernel.numpy() + 1e-3)  # off the bfloat16 grid
    return layer, x


def test_convbn_bfloat16_fold_rounds_once_from_the_float32_variables():
    layer, x = _convbn_with_statistics("mixed_bfloat16")
    bn = layer.bn
    scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + 1e-5)
    kernel, bias = layer.folded_weights(tf.bfloat16)
    assert kernel.dtype == tf.bfloat16 and layer.conv.kernel.dtype == "float32"
    exact = tf.cast(tf.constant(layer.conv.kernel.numpy() * scale), tf.bfloat16)  # one rounding
    np.testing.assert_array_equal(tf.cast(kernel, tf.float32).numpy(), tf.cast(exact, tf.float32).numpy())
    np.testing.assert_allclose(tf.cast(bias, tf.float32).numpy(),
                               bn.beta.numpy() - bn.moving_mean.numpy() * scale, rtol=1e-2)
    assert layer(x, training=False).dtype == tf.bfloat16


def test_convbn_frozen_fold_equals_per_call_fold_and_training_drops_it():
    layer, x = _convbn_with_statistics()
    per_call = layer(x, training=False).numpy()
    layer.freeze_for_inference()
    np.testing.assert_array_equal(layer(x, training=False).numpy(), per_call)
    layer.bn.moving_mean.assign(layer.bn.moving_mean + 1.0)
    stale = layer(x, training=False).numpy()  # frozen: the documented contract
    np.testing.assert_array_equal(stale, per_call)
    layer(x, training=True)  # a training call drops the frozen weights
    np.testing.assert_allclose(layer(x, training=False).numpy(), layer.bn(layer.conv(x), training=False).numpy(),
                               atol=1e-4)
    layer.freeze_for_inference()
    layer.bn.moving_mean.assign(layer.bn.moving_mean + 1.0)
    layer.unfreeze()
    np.testing.assert_allclose(layer(x, training=False).numpy(), layer.bn(layer.conv(x), training=False).numpy(),
                               atol=1e-4)


def test_convbn_stride2_pads_symmetrically_like_pytorch():
    layer = ConvBN(3, 3, 2, relu=False)
    x = tf.random.stateless_normal((1, 8, 8, 2), seed=(5, 6))
    y = layer(x, training=False)
    manual = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), layer.conv.kernel, 2, "VALID")
    manual = layer.bn(manual, training=False)
    assert y.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(y.numpy(), manual.numpy(), atol=1e-5)
    same = layer.bn(tf.nn.conv2d(x, layer.conv.kernel, 2, "SAME"), training=False)
    assert not np.allclose(y.numpy(), same.numpy(), atol=1e-3)  # TF 'same' would shift the grid


def test_convbn_training_updates_moving_statistics():
    layer = ConvBN(4, 1, 1, relu=False, momentum=0.9)
    x = 3.0 + tf.random.stateless_normal((4, 6, 6, 2), seed=(7, 8))
    layer(x)
    layer.bn.moving_mean.assign(tf.zeros(4))
    y = layer(x, training=True)
    batch_mean = tf.reduce_mean(layer.conv(x), axis=[0, 1, 2])
    np.testing.assert_allclose(layer.bn.moving_mean.numpy(), 0.1 * batch_mean.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tf.reduce_mean(y, axis=[0, 1, 2]).numpy(), np.zeros(4), atol=1e-4)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-4), ("mixed_bfloat16", 3e-2)])
def test_convbn_fused_training_equals_keras_batch_norm(dtype, tol):
    """The fused training batch norm gives the Keras layer's output, gradients and moving statistics."""
    layer, x = _convbn_with_statistics(dtype)
    bn = layer.bn
    x = 2.0 + x
    start = [v.numpy() for v in (bn.moving_mean, bn.moving_variance)]
    variables = [layer.conv.kernel, bn.gamma, bn.beta]
    probe = tf.random.stateless_normal((2, 8, 8, 6), seed=(9, 9))  # a loss with no symmetry

    def run(call):
        for v, value in zip((bn.moving_mean, bn.moving_variance), start):
            v.assign(value)
        with tf.GradientTape() as tape:
            y = call()
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * probe)
        grads = tape.gradient(loss, variables)
        return [y] + grads + [bn.moving_mean.value, bn.moving_variance.value]

    fused = run(lambda: layer(x, training=True))
    keras_bn = run(lambda: bn(layer.conv(x), training=True))
    assert fused[0].dtype == keras_bn[0].dtype == layer.compute_dtype
    for a, b in zip(fused, keras_bn):
        a, b = (tf.cast(t, tf.float32).numpy() for t in (a, b))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))
    assert not np.allclose(fused[-1].numpy(), start[1])  # the moving variance did move


def test_backbone_weights_file_is_loaded(tmp_path):
    source = build_backbone("resnet18", width=0.25)
    path = str(tmp_path / "trunk.weights.h5")
    trunk = tf.keras.Model(source.input, source.get_layer("stage4_1_relu").output)
    trunk.save_weights(path)
    loaded = build_backbone("resnet18", width=0.25, weights=path)
    np.testing.assert_array_equal(loaded.get_layer("stem_conv").conv.kernel.numpy(),
                                  source.get_layer("stem_conv").conv.kernel.numpy())
    with pytest.raises(ConfigError, match="does not fit"):
        build_backbone("dla34", weights=path)


@pytest.mark.slow
def test_hourglass104_parameter_count_matches_model_garden():
    """REFERENCE.md: 191,289,148 trainable + 117,504 BN statistics with 90 classes at 512."""
    from centernet_core.modeling.model import build_model
    from centernet_core.modeling.summary import count_params
    cfg = config_lib.resolve("hourglass104-coco", overrides=["model.num_classes=90"])
    model = build_model(cfg)
    assert count_params(model) == {"trainable": 191_289_148, "total": 191_406_652}
    bb = model.backbone
    module = sum(int(np.prod(w.shape)) for layer in bb.layers if layer.name.startswith("hg0") for w in layer.weights)
    assert module == 92_190_720
    heads = sum(int(np.prod(w.shape)) for stack in model.heads for h in stack.values() for w in h.weights)
    assert heads == 3_588_796


def test_bn_momentum_reaches_application_trunks():
    model = build_backbone("resnet50", bn_momentum=0.8)
    assert model.get_layer("conv1_bn").momentum == 0.8
    assert model.get_layer("up0_deconv_bn").momentum == 0.8


# Known R, G, B pixels (0..255) for the application-trunk input tests: black, white, two colours.
PIXELS_RGB = np.array([[[0, 0, 0], [255, 255, 255]], [[10, 128, 200], [250, 3, 77]]], np.float32)  # [2, 2, 3]


@pytest.mark.parametrize("name, kwargs, trunk_first_layer, preprocess", [
    ("resnet50", {}, "conv1_pad", keras.applications.resnet50.preprocess_input),
    ("mobilenetv2", {"width": 0.35}, "Conv1", keras.applications.mobilenet_v2.preprocess_input),
])
def test_application_trunk_sees_its_imagenet_preprocessing(name, kwargs, trunk_first_layer, preprocess):
    """Pipeline input (normalize_bgr) -> what the trunk's first layer gets == the Keras preprocess_input."""
    model = build_backbone(name, **kwargs)
    normalised = normalize_bgr(tf.constant(np.tile(PIXELS_RGB, (16, 16, 1))))[None]  # [1, 32, 32, 3] B, G, R
    probe = keras.Model(model.input, model.get_layer(trunk_first_layer).input)
    expected = preprocess(np.tile(PIXELS_RGB, (16, 16, 1))[None].copy())  # caffe: B, G, R - mean; mobilenet: R, G, B
    np.testing.assert_allclose(probe(normalised).numpy(), expected, atol=1e-4)
    conversions = [layer for layer in model.layers if isinstance(layer, ChannelAffine)]
    assert len(conversions) == 1 and not conversions[0].weights  # fixed: nothing to train or save


def test_channel_affine_hand_case_and_config_round_trip():
    layer = ChannelAffine([1.0, 2.0, 3.0], [0.5, 0.0, -1.0], reverse_channels=True, name="conv")
    x = tf.constant([[[1.0, 10.0, 100.0]]])  # [1, 1, 3]
    np.testing.assert_allclose(layer(x).numpy(), [[[100.5, 20.0, 2.0]]])
    clone = ChannelAffine.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())


def test_application_weights_file_loads_behind_the_input_conversion(tmp_path):
    """A weights file of the plain Keras trunk (no conversion layer) still fits the backbone's trunk."""
    plain = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3), alpha=0.35)
    path = str(tmp_path / "mobilenetv2.weights.h5")
    plain.save_weights(path)
    loaded = build_backbone("mobilenetv2", width=0.35, weights=path)
    for name in ("Conv1", "block_16_project"):
        np.testing.assert_array_equal(loaded.get_layer(name).kernel.numpy(), plain.get_layer(name).kernel.numpy())


# name -> (trainable, total) parameters of build_backbone(name, **CASES[name][0]); pinned from
# the current code: a layer added, dropped or resized anywhere in a backbone changes them.
BACKBONE_PARAMS = {
    "hourglass104": (187_700_352, 187_817_856),
    "hourglass52": (93_662_848, 93_721_472),
    "resnet18": (885_328, 888_176),
    "resnet50": (29_999_872, 30_054_784),
    "dla34": (18_513_328, 18_532_144),
    "mobilenetv2": (1_085_152, 1_101_152),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_backbone_parameter_counts_are_pinned(name):
    from centernet_core.modeling.summary import count_params
    counts = count_params(build_backbone(name, **CASES[name][0]))
    assert (counts["trainable"], counts["total"]) == BACKBONE_PARAMS[name]


def _batch_norms(model):
    """Every BatchNormalization and ConvBN in ``model``, nested layers included."""
    layers = model._flatten_layers(include_self=False, recursive=True)
    return [layer for layer in layers if isinstance(layer, (keras.layers.BatchNormalization, ConvBN))]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bn_momentum_reaches_every_batch_norm(name):
    """build_backbone(bn_momentum=...) reaches each batch norm: ours (ConvBN, whose fused
    training step reads its own ``momentum``), the deconv stages' and the Keras trunks'."""
    norms = _batch_norms(build_backbone(name, bn_momentum=0.77, **CASES[name][0]))
    assert len(norms) > 10
    wrong = [(layer.name, layer.momentum) for layer in norms if layer.momentum != pytest.approx(0.77)]
    assert not wrong, wrong[:5]


def test_model_bn_momentum_reaches_the_backbone():
    from centernet_core.modeling.model import build_model
    for backbone in ("resnet18", "mobilenetv2"):
        cfg = config_lib.resolve("shapes-tiny", overrides=[f"model.backbone={backbone}", "model.bn_momentum=0.66"])
        momenta = {round(layer.momentum, 6) for layer in _batch_norms(build_model(cfg))}
        assert momenta == {0.66}, backbone
