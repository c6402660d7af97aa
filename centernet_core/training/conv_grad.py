"""Convolution kernel gradients as matrix products, for training on CPUs.

TensorFlow's CPU kernel for a convolution's weight gradient (oneDNN's
``jit:avx512_core`` backward-weights primitive on CPUs without AMX; there is no brgemm one
for float32) is much slower than the same layer's forward pass, strided layers most of all
(figures in docs/benchmarks.md, "Train step"). The gradient is one sum per kernel tap:

    dW[i, j] = sum over n, y, x of  X[n, s*y + i, s*x + j, :]^T  dY[n, y, x, :]    # [Cin, F]

With the (padded) input flattened to rows of pixels, the pixels a tap needs are one
contiguous run of rows, shifted by ``i * width + j``: each tap is one matrix product on a
view of the same buffer, and oneDNN runs those near the forward pass's speed. A stride
``s > 1`` splits the input into its ``s x s`` phases first (one transpose in all), so
that inside a phase the taps are again stride-1 shifts. Rows that a shift carries past
the end of an image line meet zeros in the (padded) output gradient, so they add nothing.

``conv2d`` is ``tf.nn.conv2d`` with that kernel gradient; the input gradient is
TensorFlow's own (``Conv2DBackpropInput``), and the result equals TensorFlow's gradient up
to float summation order. The model's convolutions (``modeling.layers.Conv2D``) switch to
it only inside a ``matmul_kernel_gradients()`` block (the train step, on CPUs), through
the layer's ``convolution_override`` hook, and only where it pays (``worthwhile``):
inference and exported graphs never contain it.

Letters: N batch, H, W input size, Ho, Wo output size, C input channels, F filters,
k kernel size, s stride.
"""
from __future__ import annotations

import tensorflow as tf

from centernet_core.modeling.layers import convolution_override

# Where the matrix products beat the native kernel (bench/conv_grad.py, docs/benchmarks.md;
# per layer, HG-104 and ResNet-18 shapes at 512 px, batch 2): at least this many output
# pixels per image; then 1x1 stride-1 layers with >= 64 input channels, strided layers with
# >= 64 channels in and out (the native strided kernel gradient is the slowest),
# and stride-1 layers with at least MIN_CHANNELS channels in and out. A 1x1 stride-2
# layer never pays: picking its pixels out costs more than the native kernel.
MIN_OUTPUT_PIXELS = 64 * 64
MIN_CHANNELS = {tf.float32: 128, tf.bfloat16: 256}  # other dtypes keep the native kernel


def matmul_kernel_gradients(enabled: bool = True):
    """A block in which the model's ``Conv2D`` layers called (or traced) use the matrix-product
    kernel gradient where ``worthwhile`` (``enabled`` False: Keras's own everywhere).

    The switch is per thread: enter it where the layers are called, e.g. inside the replica
    function given to ``strategy.run`` (MirroredStrategy calls each replica on its own thread).
    """
    return convolution_override(_matmul_convolution if enabled else None)


def cpu_only() -> bool:
    """True when TensorFlow sees no GPU and no TPU: the case the matrix-product gradient is for."""
    return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def worthwhile(input_shape, kernel_shape, strides: int, dtype, padding: str = "SAME") -> bool:
    """Whether the matrix-product gradient is used for this layer (static shapes only).

    input_shape: ``[N, H, W, C]``; kernel_shape: ``[k, k, C, F]``; dtype: the compute dtype;
    padding: ``"SAME"`` or ``"VALID"``.
    """
    height, width, channels = input_shape[1], input_shape[2], input_shape[3]
    k, filters, dtype = kernel_shape[0], kernel_shape[3], tf.as_dtype(dtype)
    if None in (height, width, channels) or k != kernel_shape[1] or dtype not in MIN_CHANNELS:
        return False
    out_h, out_w = (_output_size(size, k, strides, padding) for size in (height, width))
    if out_h * out_w < MIN_OUTPUT_PIXELS:
        return False
    if k == 1:
        return strides == 1 and channels >= 64
    return min(channels, filters) >= (64 if strides > 1 else MIN_CHANNELS[dtype])


def _output_size(size: int, k: int, s: int, padding: str) -> int:
    return -(-size // s) if padding == "SAME" else max((size - k) // s + 1, 0)


def _matmul_convolution(layer, inputs, kernel):
    """``conv2d`` for a channels-last, ungrouped, undilated ``layer`` with square kernel and
    strides where ``worthwhile``; None (Keras's own convolution) for everything else."""
    if (layer.data_format == "channels_last" and layer.groups == 1 and tuple(layer.dilation_rate) == (1, 1)
            and layer.strides[0] == layer.strides[1]
            and worthwhile(inputs.shape, kernel.shape, layer.strides[0], inputs.dtype, layer.padding.upper())):
        return conv2d(inputs, kernel, layer.strides[0], layer.padding.upper())
    return None


def conv2d(x, kernel, strides: int, padding: str):
    """``tf.nn.conv2d(x, kernel, strides, padding)`` whose kernel gradient is ``kernel_gradient``.

    x: ``[N, H, W, C]`` with static H, W, C; kernel: ``[k, k, C, F]``; padding ``"SAME"`` or
    ``"VALID"``. Returns ``[N, Ho, Wo, F]`` in x's dtype. The input gradient is TensorFlow's.
    """

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):  # [N, Ho, Wo, F]
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                                                strides=[1, strides, strides, 1], padding=padding)
            return dx, kernel_gradient(x, dy, kernel.shape[0], strides, padding)
        return tf.nn.conv2d(x, kernel, strides, padding), grad

    # A tensor, not the (Keras / autocast) variable: run eagerly, a variable read inside the
    # function would make tf.custom_gradient ask for a variables-aware gradient.
    return conv(x, tf.convert_to_tensor(kernel))


def kernel_gradient(x, dy, kernel_size: int, strides: int, padding: str):
    """The gradient of ``sum(conv2d(x, W) * dy)`` with respect to W: ``[k, k, C, F]``.

    x: ``[N, H, W, C]`` (static H, W), dy: ``[N, Ho, Wo, F]`` (static Ho, Wo).
    """
    k, s = int(kernel_size), int(strides)
    out_h, out_w = dy.shape[1], dy.shape[2]
    x = _pad_input(x, k, s, padding, out_h, out_w)
    # Per phase the taps i = 0 .. reach - 1 on each axis; every phase is cut to the same size.
    reach = (k - 1) // s + 1
    phase_h, phase_w = out_h + reach - 1, out_w + reach - 1
    dy = tf.pad(dy, [[0, 0], [0, phase_h - out_h], [0, phase_w - out_w], [0, 0]])
    dy = tf.reshape(dy, [-1, dy.shape[-1]])  # [N * phase_h * phase_w, F]
    rows = dy.shape[0] if dy.shape[0] is not None else tf.shape(dy)[0]
    span = rows - ((reach - 1) * phase_w + reach - 1)  # rows every tap of a phase can read
    dy = dy[:span]
    channels = x.shape[-1]
    if s > 1:  # [N, s * phase_h, s * phase_w, C] -> [s, s, N * phase_h * phase_w, C]: one copy
        x = tf.reshape(x, [-1, phase_h, s, phase_w, s, channels])
        x = tf.reshape(tf.transpose(x, [2, 4, 0, 1, 3, 5]), [s, s, -1, channels])
        phases = {(a, b): x[a, b] for a in range(min(s, k)) for b in range(min(s, k))}
    else:
        phases = {(0, 0): tf.reshape(x, [-1, channels])}
    taps = {}
    for (a, b), phase in phases.items():  # phase: [N * phase_h * phase_w, C], rows a, a + s, ..., columns b, b + s, ...
        for i in range((k - 1 - a) // s + 1):
            for j in range((k - 1 - b) // s + 1):
                shift = i * phase_w + j
                taps[(a + s * i, b + s * j)] = tf.matmul(phase[shift:shift + span], dy, transpose_a=True)
    grad = tf.stack([taps[(i, j)] for i in range(k) for j in range(k)])  # [k * k, C, F]
    return tf.reshape(grad, [k, k, grad.shape[1], grad.shape[2]])


def _pad_input(x, k: int, s: int, padding: str, out_h: int, out_w: int):
    """x padded as the convolution pads it, then cut or zero-extended to ``s * (Ho + reach - 1)`` rows.

    That length lets every phase ``x[:, a::s]`` have exactly ``Ho + reach - 1`` rows (same
    for columns); the extra rows only ever meet zeros of the padded output gradient.
    """
    reach = (k - 1) // s + 1
    pads = []
    for size, out in ((x.shape[1], out_h), (x.shape[2], out_w)):
        before = max((out - 1) * s + k - size, 0) // 2 if padding == "SAME" else 0
        need = s * (out + reach - 1)
        after = need - size - before
        pads.append((before, after))
    x = tf.pad(x, [[0, 0], [pads[0][0], max(pads[0][1], 0)], [pads[1][0], max(pads[1][1], 0)], [0, 0]])
    need_h, need_w = s * (out_h + reach - 1), s * (out_w + reach - 1)
    return x[:, :need_h, :need_w, :]
