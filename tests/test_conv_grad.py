"""Kernel gradients as matrix products: equal to TensorFlow's and to a plain sum; used only where asked."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from centernet_core import config as config_lib
from centernet_core.modeling.layers import Conv2D
from centernet_core.training import conv_grad
from centernet_core.training import optim
from centernet_core.tasks.detection.losses import centernet_loss
from centernet_core.modeling.model import build_model
from centernet_core.tasks import build_task
from centernet_core.training.loop import make_train_loop


def _reference(x, dy, k, s, padding):
    """dW[i, j] = sum over n, y, x of xpad[n, s*y + i, s*x + j, :]^T dy[n, y, x, :], with TF's padding."""
    _, height, width, _ = x.shape
    _, out_h, out_w, _ = dy.shape
    pads = [(0, 0)]
    for size, out in ((height, out_h), (width, out_w)):
        total = max((out - 1) * s + k - size, 0) if padding == "SAME" else 0
        pads.append((total // 2, total - total // 2))
    xp = np.pad(x, pads + [(0, 0)])
    grad = np.zeros((k, k, x.shape[3], dy.shape[3]), np.float64)
    for i in range(k):
        for j in range(k):
            window = xp[:, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s, :]
            grad[i, j] = np.einsum("nyxc,nyxf->cf", window, dy)
    return grad


@pytest.mark.parametrize("size,k,s,padding", [
    ((9, 7), 3, 1, "SAME"), ((8, 8), 3, 2, "SAME"), ((9, 7), 3, 2, "SAME"), ((11, 10), 3, 2, "VALID"),
    ((8, 9), 1, 1, "SAME"), ((9, 8), 1, 2, "VALID"), ((13, 12), 7, 2, "VALID"), ((10, 10), 7, 2, "SAME"),
    ((6, 6), 5, 1, "SAME"), ((12, 11), 3, 3, "SAME"), ((11, 11), 3, 3, "VALID"), ((10, 9), 2, 2, "VALID"),
])
def test_kernel_gradient_equals_the_plain_sum_and_tensorflows(size, k, s, padding):
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((2, *size, 5)).astype(np.float32)
    kernel = tf.constant(rng.standard_normal((k, k, 5, 4)).astype(np.float32))
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        y = tf.nn.conv2d(x_t, kernel, s, padding)
        dy = tf.constant(rng.standard_normal(y.shape).astype(np.float32))
        loss = tf.reduce_sum(y * dy)
    tensorflows = tape.gradient(loss, kernel).numpy()
    ours = conv_grad.kernel_gradient(x_t, dy, k, s, padding).numpy()
    np.testing.assert_allclose(ours, _reference(x, dy.numpy(), k, s, padding), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours, tensorflows, rtol=1e-5, atol=1e-4)


def test_kernel_gradient_by_hand():
    # 1 image, 3x3 input 1..9, one channel, 3x3 'SAME' kernel, dy = 1 at the centre only:
    # the gradient is the 3x3 input itself; with dy = 1 at the top-left, the zero padding shows.
    x = tf.reshape(tf.range(1.0, 10.0), [1, 3, 3, 1])
    centre = tf.reshape(tf.one_hot(4, 9), [1, 3, 3, 1])
    corner = tf.reshape(tf.one_hot(0, 9), [1, 3, 3, 1])
    grad = conv_grad.kernel_gradient(x, centre, 3, 1, "SAME")
    np.testing.assert_array_equal(grad[..., 0, 0].numpy(), [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    grad = conv_grad.kernel_gradient(x, corner, 3, 1, "SAME")
    np.testing.assert_array_equal(grad[..., 0, 0].numpy(), [[0, 0, 0], [0, 1, 2], [0, 4, 5]])


@pytest.mark.parametrize("dtype,rtol", [(tf.float32, 1e-5), (tf.bfloat16, 0.02)])
def test_an_unknown_batch_size(dtype, rtol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 10, 10, 8)).astype(np.float32)
    dy = rng.standard_normal((3, 5, 5, 6)).astype(np.float32)
    grad = tf.function(lambda x, dy: conv_grad.kernel_gradient(x, dy, 3, 2, "SAME"), input_signature=[
        tf.TensorSpec([None, 10, 10, 8], dtype), tf.TensorSpec([None, 5, 5, 6], dtype)])
    ours = grad(tf.constant(x, dtype), tf.constant(dy, dtype))
    assert ours.dtype == dtype
    x, dy = (tf.cast(tf.constant(t, dtype), tf.float32).numpy() for t in (x, dy))  # the inputs as rounded
    np.testing.assert_allclose(tf.cast(ours, tf.float32).numpy(), _reference(x, dy, 3, 2, "SAME"), rtol=rtol,
                               atol=rtol)


@pytest.mark.parametrize("policy,channels", [("float32", 128), ("mixed_bfloat16", 256)])
def test_a_layer_over_the_thresholds_eagerly(policy, channels, monkeypatch):
    # Real thresholds, eager calls (a variable read inside tf.custom_gradient would fail here).
    layer = Conv2D(channels, 3, padding="same", dtype=policy)
    x = tf.constant(np.random.default_rng(1).standard_normal((1, 64, 64, channels)), tf.float32)
    layer.build(x.shape)
    routed = []
    conv2d = conv_grad.conv2d
    monkeypatch.setattr(conv_grad, "conv2d", lambda *a: routed.append(a[2:]) or conv2d(*a))

    def gradient(enabled):
        with tf.GradientTape() as tape, conv_grad.matmul_kernel_gradients(enabled):
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.linspace(-1.0, 1.0, channels))
        return tape.gradient(loss, layer.kernel.value)

    native = gradient(False)
    assert routed == []
    ours = gradient(True)
    assert routed == [(1, "SAME")] and ours.dtype == tf.float32  # the variable's gradient, whatever the policy
    scale = float(tf.reduce_max(tf.abs(native)))
    tolerance = 1e-5 if policy == "float32" else 2e-2
    np.testing.assert_allclose(ours.numpy(), native.numpy(), atol=tolerance * scale)


def test_worthwhile_follows_the_measurements():
    hg = lambda size, c, f, k, s, dtype=tf.float32: conv_grad.worthwhile((2, size, size, c), (k, k, c, f), s, dtype)  # noqa: E731
    assert hg(128, 256, 256, 3, 1)  # HG-104's 128 x 128 layers: 0.65-0.68x the native time
    assert hg(258, 128, 256, 3, 2) and hg(130, 256, 256, 3, 2)  # strided 3x3: 0.26x, 0.64x
    assert hg(128, 256, 2, 1, 1) and hg(128, 256, 80, 1, 1)  # the heads' 1x1 layers
    assert not hg(256, 128, 256, 1, 2)  # 1x1 stride 2: 1.4x
    assert not hg(518, 3, 128, 7, 2)  # the 7x7 stem on 3 channels: 6.5x
    assert not hg(32, 384, 384, 3, 1)  # 32 x 32: 1.06x
    assert not hg(128, 128, 128, 3, 1, tf.bfloat16) and hg(128, 256, 256, 3, 1, tf.bfloat16)
    assert not hg(128, 256, 256, 3, 1, tf.float16)
    assert not conv_grad.worthwhile((2, None, None, 256), (3, 3, 256, 256), 1, tf.float32)
    # Output pixels as the padding makes them: 130 'valid' stride 2 -> 64 x 64, 128 -> 63 x 63.
    assert conv_grad.worthwhile((2, 130, 130, 256), (3, 3, 256, 256), 2, tf.float32, "VALID")
    assert not conv_grad.worthwhile((2, 128, 128, 256), (3, 3, 256, 256), 2, tf.float32, "VALID")
    assert conv_grad.worthwhile((2, 128, 128, 256), (3, 3, 256, 256), 2, tf.float32, "SAME")


@pytest.fixture
def kernel_gradient_calls(monkeypatch):
    """``(k, s, padding)`` of each ``conv_grad.kernel_gradient`` call, with every layer ``worthwhile``."""
    calls = []
    kernel_gradient = conv_grad.kernel_gradient
    monkeypatch.setattr(conv_grad, "kernel_gradient", lambda *a: calls.append(a[2:]) or kernel_gradient(*a))
    monkeypatch.setattr(conv_grad, "worthwhile", lambda *a: True)  # every layer of the tiny model
    return calls


def _tiny_model_and_batch():
    cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=["model.input_size=64"])
    keras.utils.set_random_seed(3)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    image = tf.constant(rng.standard_normal((2, 64, 64, 3)).astype(np.float32))
    h, w = model(image, training=True)[0]["heatmap"].shape[1:3]
    targets = {"heatmap": tf.constant(rng.uniform(0, 1, (2, h, w, 3)).astype(np.float32) ** 8),
               "indices": tf.constant([[5, 40, 0], [7, 0, 0]], tf.int32),
               "mask": tf.constant([[1, 1, 0], [1, 0, 0]], tf.float32),
               "size": tf.constant(rng.uniform(1, 8, (2, 3, 2)).astype(np.float32)),
               "offset": tf.constant(rng.uniform(0, 1, (2, 3, 2)).astype(np.float32))}
    return model, image, targets


def test_layers_use_it_only_inside_the_block_and_the_gradients_agree(kernel_gradient_calls):
    model, image, targets = _tiny_model_and_batch()
    calls = kernel_gradient_calls

    @tf.function
    def gradients(enabled):
        with tf.GradientTape() as tape, conv_grad.matmul_kernel_gradients(enabled):
            loss = centernet_loss(model(image, training=True), targets, tf.constant(3.0))["total"]
        return tape.gradient(loss, model.trainable_variables)

    native = gradients(False)
    assert calls == []  # outside the block: Keras's own convolution
    ours = gradients(True)
    assert {(k, s) for k, s, _ in calls} >= {(3, 1), (3, 2), (1, 1)}  # 3x3, strided and 1x1 layers of ResNet-18 + heads
    assert len(calls) == sum("conv" in v.path and v.path.endswith("kernel") for v in model.trainable_variables)
    for a, b, v in zip(native, ours, model.trainable_variables, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5 * (np.abs(a.numpy()).max() + 1e-12),
                                   err_msg=v.path)


def test_the_train_step_uses_it_on_cpus_only(kernel_gradient_calls, monkeypatch):
    cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=["model.input_size=64"])
    model, image, targets = _tiny_model_and_batch()
    optimizer = optim.build_optimizer(cfg.train, "float32")
    optimizer.build(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensors(({"image": image}, targets)).repeat()
    calls = kernel_gradient_calls
    strategy = tf.distribute.get_strategy()
    for cpu_only, used in ((False, False), (True, True)):
        monkeypatch.setattr(conv_grad, "cpu_only", lambda: cpu_only)  # noqa: B023
        calls.clear()
        loop = make_train_loop(strategy, model, optimizer, build_task(cfg))
        done = loop(iter(strategy.distribute_datasets_from_function(lambda ctx: dataset)), tf.constant(1))[0]
        assert int(done) == 1
        assert bool(calls) == used
