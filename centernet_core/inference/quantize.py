"""Int8 exports.

``model_int8.tflite`` is self-contained: the WHOLE ``image_tensor`` graph (uint8 [N, h, w, 3]
in, the serving outputs out, like ``model.tflite``) with the network's ops in int8 (int8
weights per channel, int8 activations) and the letterbox, normalisation and decode left as
float kernels (TFLite selective quantization, ``QuantizationDebugOptions``): every tensor
outside the Keras model's name scope is denylisted, and so is ``TOPK_V2`` (top-k on 256
levels ties the peaks; a 3 x 3 max-pool on int8 scores ties neighbours). One interpreter
runs it; no TensorFlow around it.

``model_int8.onnx`` holds only the network ("core"): normalised B, G, R float32
``[1, S, S, 3]`` -> the last stack's raw maps, ONNX static QDQ
(``onnxruntime.quantization.quantize_static``, uint8 activations, per-channel int8 weights);
``exported.CoreRunner`` puts the float ``serving.Detector`` around it.

Calibration pictures are training pictures from the TFRecords (``record_images``), each
letterboxed as the serving graph does (``letterboxed_pictures``): the network sees exactly
what it sees at run time. Layers named in ``export.float_layers`` stay float in both files.
Letters: S input size, H W the output map (S / 4), C classes.
"""
from __future__ import annotations

import os
import re
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
    """Each picture letterboxed as the serving graph does: float32 [1, S, S, 3] normalised B, G, R
    (the ONNX core's input)."""
    from centernet_core.inference.serving import letterbox
    return [letterbox(img[None], input_size)[0].numpy() for img in images]


def letterboxed_pictures(images: Iterable[np.ndarray], input_size: int) -> list[np.ndarray]:
    """Each picture letterboxed, back in uint8 RGB: [1, S, S, 3], the padding the mean colour.

    The TFLite calibrator sizes the graph once, so every calibration input has one shape;
    the graph's own letterbox is the identity on an S x S picture (scale 1, taps on the
    pixels), so the network is calibrated on what it sees at run time, within uint8 rounding.
    """
    from centernet_core.pixels import to_rgb_uint8
    return [to_rgb_uint8(x) for x in calibration_inputs(images, input_size)]


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


def outside_network(names: Iterable[str], model_name: str) -> list[str]:
    """The tensor names not under the Keras model's scope (``centernet_resnet18_1/...``): letterbox and decode."""
    inside = re.compile(r"(^|[/;])" + re.escape(model_name) + r"(_\d+)?/")
    return sorted({n for n in names if n and not inside.search(n)})


def write_tflite_int8(image_tensor_fn, path: str, pictures: list[np.ndarray], model_name: str,
                      float_layers: Sequence[str] = ()) -> list[str]:
    """The whole serving graph as TFLite, its network int8, calibrated on ``pictures``
    (uint8 [1, S, S, 3], ``letterboxed_pictures``); returns the network tensors that
    ``float_layers`` kept float (letterbox and decode are float as well).

    ``image_tensor_fn``: ``export.frozen_image_tensor`` (uint8 [N, h, w, 3] -> outputs);
    ``model_name``: the Keras model's name, which scopes the network's tensors.
    """
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    holder = tf.Module()
    holder.image_tensor = image_tensor_fn
    concrete = image_tensor_fn.get_concrete_function()
    plain = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder).convert()
    names = [t["name"] for t in Interpreter(model_content=plain).get_tensor_details()]
    network = set(names) - set(outside_network(names, model_name))
    if not network:
        raise ConfigError(f"no tensor of the TFLite graph lies under the model's scope {model_name!r}")
    layers = _matching(network, float_layers)
    if float_layers and not layers:
        raise ConfigError(f"export.float_layers {list(float_layers)} match no tensor of the model; "
                          f"e.g. {', '.join(sorted(network)[:3])}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in pictures)
    # int8 kernels where allowed; TFLITE_BUILTINS runs the denylisted ops as float kernels.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    keep = outside_network(names, model_name) + layers
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=keep, denylisted_ops=["TOPK_V2"], fully_quantize=False)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([x] for x in pictures[:1]), debug_options=options)
    storage.write_bytes_atomic(path, debugger.get_nondebug_quantized_model())
    return layers


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
