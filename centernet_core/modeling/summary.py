"""What a model costs: parameters, output shapes and inference FLOPs (``centernet info``)."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def count_params(model: keras.Model) -> dict:
    """``{"trainable": n, "total": n}``; total includes batch norm moving statistics."""
    size = lambda ws: int(sum(int(np.prod(w.shape)) for w in ws))  # noqa: E731
    return {"trainable": size(model.trainable_weights), "total": size(model.weights)}


def _macs(op) -> int:
    """Multiply-accumulates of one convolution / matmul graph op (0 for other ops)."""
    def dims(t):
        return [int(d) for d in t.shape]
    if op.type == "Conv2D":  # filter [kh, kw, Cin, Cout]; output [B, Ho, Wo, Cout]
        kh, kw, cin, _ = dims(op.inputs[1])
        return int(np.prod(dims(op.outputs[0]))) * kh * kw * cin
    if op.type == "DepthwiseConv2dNative":  # filter [kh, kw, Cin, mult]
        kh, kw, _, _ = dims(op.inputs[1])
        return int(np.prod(dims(op.outputs[0]))) * kh * kw
    if op.type == "Conv2DBackpropInput":  # transposed conv; filter [kh, kw, Cout, Cin], input = out_backprop
        kh, kw, cout, _ = dims(op.inputs[1])
        return int(np.prod(dims(op.inputs[2]))) * kh * kw * cout
    if op.type in ("MatMul", "BatchMatMulV2"):
        a, out = dims(op.inputs[0]), dims(op.outputs[0])
        k = a[-2] if op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x") else a[-1]
        return int(np.prod(out)) * k
    return 0


def count_flops(graph) -> int:
    """FLOPs (2 x multiply-accumulates) of the convolutions and matmuls in ``graph``.

    Elementwise ops (bias, batch norm, ReLU, adds, upsampling) are left out: they are under
    1 % of a CNN's arithmetic and every published FLOP figure leaves them out too.
    """
    return 2 * sum(_macs(op) for op in graph.get_operations())


def describe_model(model: keras.Model, input_size: int) -> dict:
    """Parameters, output shapes and inference FLOPs per image at ``input_size``.

    Returns ``{"params_total", "params_trainable", "params_non_trainable", "flops",
    "input_shape", "outputs": {"stack{i}/{name}": shape}}``; FLOPs are counted on the traced
    inference graph (batch 1, all stacks' heads included).
    """
    spec = tf.TensorSpec([1, input_size, input_size, 3], tf.float32)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    structured = fn.structured_outputs
    outputs = {f"stack{i}/{name}": [int(d) for d in stack[name].shape]
               for i, stack in enumerate(structured) for name in stack}
    params = count_params(model)
    return {"params_total": params["total"], "params_trainable": params["trainable"],
            "params_non_trainable": params["total"] - params["trainable"],
            "flops": count_flops(fn.graph), "input_shape": [1, input_size, input_size, 3], "outputs": outputs}
