"""Int8 exports: the network ("core") quantized, letterbox and decode kept in float.

Full-integer quantization needs fixed shapes and calibrated ranges, and would damage the
decode (a 3 x 3 max-pool peak test on int8 scores ties neighbours; top-k on 256 levels).
So only the core is quantized: normalised B, G, R float32 ``[1, S, S, 3]`` -> the last
stack's raw maps (detection: ``heatmap`` [1, H, W, C] logits, ``size``, ``offset``),
float at both ends (a quantize op after the input, dequantize ops before the outputs).
``exported.CoreRunner`` wraps the core in the same ``serving.Detector`` as every other
export (letterbox, decode, original ids), so ``eval --model`` scores it like the rest.

- ``model_int8.tflite``: TFLite full integer (int8 weights and activations), calibrated
  with ``representative_dataset``; the layers named in ``export.float_layers`` stay float
  (TFLite selective quantization: ``QuantizationDebugOptions.denylisted_nodes``).
- ``model_int8.onnx``: ONNX static QDQ (``onnxruntime.quantization.quantize_static``,
  uint8 activations, per-channel int8 weights), calibrated on the same inputs; float
  layers are ``nodes_to_exclude``.

Calibration inputs are training pictures from the TFRecords (``calibration_inputs``), put
through ``serving.letterbox``: exactly what the core sees at run time.
Letters: S input size, H W the output map (S / 4), C classes.
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterable, Sequence

import numpy as np

from centernet_core import storage
from centernet_core.errors import ConfigError, DataError
from centernet_core.inference import exported


def record_images(pattern: str, limit: int) -> list[np.ndarray]:
    """The first ``limit`` decodable pictures of the TFRecords matching ``pattern``: uint8 [h, w, 3]."""
    import tensorflow as tf
    files = storage.glob(pattern)
    if not files:
        raise DataError(f"no TFRecord files match {pattern!r} (--calibration-data)")
    ds = tf.data.TFRecordDataset(files).map(
        lambda s: tf.io.parse_single_example(s, {"image/encoded": tf.io.FixedLenFeature([], tf.string)}))
    images = []
    for rec in ds:
        try:
            images.append(tf.io.decode_image(rec["image/encoded"], channels=3, expand_animations=False).numpy())
        except tf.errors.OpError:
            continue
        if len(images) >= limit:
            break
    if not images:
        raise DataError(f"no decodable images in {pattern!r} (--calibration-data)")
    return images


def calibration_inputs(images: Iterable[np.ndarray], input_size: int) -> list[np.ndarray]:
    """Each picture letterboxed as the serving graph does: float32 [1, S, S, 3] normalised B, G, R."""
    from centernet_core.inference.serving import letterbox
    return [letterbox(img[None], input_size)[0].numpy() for img in images]


def frozen_core(model, input_size: int):
    """A tf.function ``images`` float32 [1, S, S, 3] -> the last stack's raw maps, variables as constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    @tf.function(input_signature=[tf.TensorSpec([1, input_size, input_size, 3], tf.float32)])
    def core(images):
        return {k: tf.cast(v, tf.float32) for k, v in model(images, training=False)[-1].items()}
    concrete = core.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    keys = tf.nest.flatten({k: k for k in concrete.structured_outputs})

    @tf.function(input_signature=[tf.TensorSpec([1, input_size, input_size, 3], tf.float32,
                                                name=exported.INPUT_NAME)])
    def named(images):
        return dict(zip(keys, frozen(images)))
    return named


def _matching(names: Iterable[str], float_layers: Sequence[str]) -> list[str]:
    """The names that contain one of ``float_layers`` as a path component prefix ("head_" keeps every head)."""
    return sorted({n for n in names for layer in float_layers if f"/{layer}" in f"/{n}"})


def write_tflite_int8(core_fn, path: str, inputs: list[np.ndarray], float_layers: Sequence[str] = ()) -> list[str]:
    """Full-integer TFLite of ``core_fn`` calibrated on ``inputs``; returns the tensors kept float."""
    import tensorflow as tf
    holder = tf.Module()
    holder.core = core_fn

    def converter():
        c = tf.lite.TFLiteConverter.from_concrete_functions([core_fn.get_concrete_function()], holder)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([x] for x in inputs)
        # Float input and output (the default types); int8 kernels inside. TFLITE_BUILTINS
        # lets the layers left float run as float kernels.
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
            [tf.lite.OpsSet.TFLITE_BUILTINS] if float_layers else [])
        return c
    if not float_layers:
        storage.write_bytes_atomic(path, converter().convert())
        return []
    from ai_edge_litert.interpreter import Interpreter
    plain = tf.lite.TFLiteConverter.from_concrete_functions([core_fn.get_concrete_function()], holder).convert()
    names = [t["name"] for t in Interpreter(model_content=plain).get_tensor_details()]
    keep = _matching(names, float_layers)
    if not keep:
        raise ConfigError(f"export.float_layers {list(float_layers)} match no tensor of the model; "
                          f"e.g. {', '.join(names[1:4])}")
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep, fully_quantize=False)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter(), debug_dataset=lambda: ([x] for x in inputs[:1]), debug_options=options)
    storage.write_bytes_atomic(path, debugger.get_nondebug_quantized_model())
    return keep


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of inputs."""

    def __init__(self, inputs: list[np.ndarray]):
        self._it = iter(inputs)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {exported.INPUT_NAME: x}


def write_onnx_int8(core_fn, path: str, inputs: list[np.ndarray], opset: int,
                    float_layers: Sequence[str] = ()) -> list[str]:
    """Static QDQ int8 ONNX of ``core_fn`` calibrated on ``inputs``; returns the nodes kept float."""
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    spec = [tf.TensorSpec(core_fn.input_signature[0].shape, tf.float32, name=exported.INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_function(core_fn, input_signature=spec, opset=opset)
    keep = _matching([n.name for n in proto.graph.node], float_layers) if float_layers else []
    if float_layers and not keep:
        raise ConfigError(f"export.float_layers {list(float_layers)} match no node of the ONNX model")
    CalibrationDataReader.register(_Reader)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "core.onnx"), os.path.join(tmp, "core_int8.onnx")
        onnx.save(proto, src)
        quantize_static(src, dst, _Reader(inputs), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
        with open(dst, "rb") as f:
            storage.write_bytes_atomic(path, f.read())
    return keep
