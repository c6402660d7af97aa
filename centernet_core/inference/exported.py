"""Run an exported detector in its own runtime: SavedModel (TF), TFLite (LiteRT), ONNX (ONNX Runtime).

Every runner takes uint8 ``[N, h, w, 3]`` RGB (one size per call) and returns NumPy arrays
``detection_boxes`` [N, D, 4] (ymin, xmin, ymax, xmax original pixels), ``detection_scores``
[N, D], ``detection_classes`` [N, D] (original category ids), ``num_detections`` [N]: all
three formats hold the whole serving graph (letterbox, model, decode, category table).
``model_int8.tflite`` holds the whole graph too (network int8, the rest float).
``model_int8.onnx`` holds only the quantized network ("core", ``quantize.py``): ``CoreRunner``
puts the same ``serving.Detector`` around it, rebuilt from the export's ``config.yaml``.

``locate(path)`` maps what a user points at (an export directory, a SavedModel directory,
a ``.tflite`` or ``.onnx`` file) to (export directory, format): ``eval --model``,
``predict --model`` and the benchmarks all open exports through it.

A keypoints export adds ``detection_keypoints`` [N, D, J, 2] ((y, x) original pixels) and
``detection_keypoint_scores`` [N, D, J] in every format.
"""
from __future__ import annotations

import numpy as np

from centernet_core import storage
from centernet_core.errors import ConfigError

SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
TFLITE_FP16_FILE = "model_float16.tflite"
ONNX_FILE = "model.onnx"
TFLITE_INT8_FILE = "model_int8.tflite"
ONNX_INT8_FILE = "model_int8.onnx"
CATEGORIES_FILE = "categories.json"
CONFIG_FILE = "config.yaml"  # the run's config: CoreRunner's (ONNX int8) decode settings, eval's data defaults
INPUT_NAME = "images"

EXTRA_HINT = "install the export extra: pip install 'centernet[export]'"


def _missing(package: str, e: Exception) -> ConfigError:
    return ConfigError(f"{package} is not installed ({e}); {EXTRA_HINT}")


class SavedModelRunner:
    """The ``image_tensor`` signature of a SavedModel directory (or any of its signatures)."""

    def __init__(self, path: str, signature: str = "image_tensor"):
        import tensorflow as tf
        self.loaded = tf.saved_model.load(path)
        self.fn = self.loaded.signatures[signature]

    def __call__(self, images) -> dict:
        import tensorflow as tf
        return {k: v.numpy() for k, v in self.fn(tf.constant(images)).items()}

    def encoded(self, encoded: list[bytes]) -> dict:
        """The ``encoded_image`` signature: image file bytes of any sizes, one batch."""
        import tensorflow as tf
        fn = self.loaded.signatures["encoded_image"]
        return {k: v.numpy() for k, v in fn(encoded=tf.constant(encoded, dtype=tf.string)).items()}


class TFLiteRunner:
    """A ``.tflite`` export in ai-edge-litert's interpreter (input resized per call)."""

    def __init__(self, path: str, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise _missing("ai-edge-litert", e) from None
        self.interpreter = Interpreter(model_content=storage.read_bytes(path), num_threads=num_threads)
        try:
            self.runner = self.interpreter.get_signature_runner()
            given = self.runner.get_input_details().get(INPUT_NAME, {}).get("dtype")
        except ValueError:  # no signature (or several): not written by `centernet export`
            given = None
        if given is not np.uint8:  # e.g. an int8 file of an older export: the network alone, float input
            raise ConfigError(f"{storage.basename(path)} does not take uint8 '{INPUT_NAME}' "
                              f"(it takes {given.__name__ if given else 'no such input'}): not a whole-graph "
                              f"export of this version; export the checkpoint again")

    def __call__(self, images) -> dict:
        return dict(self.runner(**{INPUT_NAME: np.ascontiguousarray(images, np.uint8)}))


class OnnxRunner:
    """A ``.onnx`` export in ONNX Runtime (CPU)."""

    def __init__(self, path: str, num_threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise _missing("onnxruntime", e) from None
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(storage.read_bytes(path), options, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]

    def __call__(self, images) -> dict:
        dtype = np.uint8 if self.session.get_inputs()[0].type == "tensor(uint8)" else np.float32
        out = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(images, dtype)})
        return dict(zip(self.names, out))


class _CoreModel:
    """A quantized core as the ``model`` of ``serving.Detector``: ``model(images, training=False)``
    -> ``[maps]``, each image run in the core's runtime (``tf.numpy_function``)."""

    variables: list = []

    def __init__(self, core, keys: tuple[str, ...]):
        self.core, self.keys = core, keys

    def _run(self, images):
        outs = [self.core(np.ascontiguousarray(img[None], np.float32)) for img in images]
        return [np.concatenate([o[k] for o in outs]).astype(np.float32) for k in self.keys]

    def __call__(self, images, training=False):
        import tensorflow as tf
        maps = tf.numpy_function(self._run, [images], [tf.float32] * len(self.keys), stateful=False)
        return [dict(zip(self.keys, maps))]


class CoreRunner:
    """An int8 ONNX core (``model_int8.onnx``) inside the float serving graph: the same
    inputs and outputs as the other runners."""

    def __init__(self, path: str, num_threads: int | None = None):
        from centernet_core.inference.serving import build_detector
        from centernet_core.inference.trained import TrainedModel
        export_dir = storage.dirname(path)
        cfg, categories = load_config(export_dir), load_categories(export_dir)
        self.core = OnnxRunner(path, num_threads)
        core = _CoreModel(self.core.__call__, tuple(self.core.names))
        self.detector = build_detector(TrainedModel(core, cfg, categories, path))

    def __call__(self, images) -> dict:
        import tensorflow as tf
        return {k: v.numpy() for k, v in self.detector.image_tensor(tf.constant(images, tf.uint8)).items()}


def load_config(export_dir: str, overrides=()):
    """The run config saved with the export (``config.yaml``), with ``overrides`` applied."""
    from centernet_core import config as config_lib
    path = storage.join(export_dir, CONFIG_FILE)
    if not storage.exists(path):
        raise ConfigError(f"{path} not found: the export predates config.yaml; export the checkpoint again")
    return config_lib.from_yaml_text(storage.read_text(path), path, list(overrides))


def load_categories(export_dir: str) -> list[dict]:
    """The export's category table ``[{"index", "id", "name"}]`` (``categories.json``)."""
    import json
    for path in (storage.join(export_dir, CATEGORIES_FILE),
                 storage.join(export_dir, "assets", CATEGORIES_FILE)):
        if storage.exists(path):
            return sorted(json.loads(storage.read_text(path)), key=lambda c: int(c["index"]))
    raise ConfigError(f"no {CATEGORIES_FILE} in {export_dir}: not an export of `centernet export`")


FORMAT_FILES = {"saved_model": (SAVED_MODEL_DIR, SavedModelRunner), "tflite": (TFLITE_FILE, TFLiteRunner),
                "tflite_float16": (TFLITE_FP16_FILE, TFLiteRunner), "onnx": (ONNX_FILE, OnnxRunner),
                "tflite_int8": (TFLITE_INT8_FILE, TFLiteRunner), "onnx_int8": (ONNX_INT8_FILE, CoreRunner)}


def locate(path: str) -> tuple[str, str]:
    """(export directory, format) of an export directory (its SavedModel), a SavedModel
    directory, or one of the export's files (``model.tflite``, ``model_int8.onnx``, ...)."""
    path = path.rstrip("/")
    base = storage.basename(path)
    for fmt, (name, _) in FORMAT_FILES.items():
        if base == name and (fmt != "saved_model" or storage.exists(storage.join(path, "saved_model.pb"))):
            return storage.dirname(path), fmt
    if storage.exists(storage.join(path, SAVED_MODEL_DIR, "saved_model.pb")):
        return path, "saved_model"
    if path.endswith((".tflite", ".onnx")) and storage.exists(path):
        raise ConfigError(f"{path}: not a file written by `centernet export` (expected one of "
                          f"{', '.join(n for n, _ in FORMAT_FILES.values() if '.' in n)} beside categories.json)")
    raise ConfigError(f"--model {path}: not an export (a directory of `centernet export`, its saved_model/, "
                      "or one of its .tflite / .onnx files)")


def open_runner(export_dir: str, fmt: str = "saved_model", **kwargs):
    """The runner of format ``fmt`` (a key of ``FORMAT_FILES``) in ``export_dir``."""
    files = FORMAT_FILES
    if fmt not in files:
        raise ConfigError(f"unknown export format '{fmt}'; valid: {', '.join(files)}")
    name, cls = files[fmt]
    path = storage.join(export_dir, name)
    if not storage.exists(path):
        raise ConfigError(f"{path} not found: export it first (centernet export --format {fmt.split('_')[0]})")
    return cls(path, **kwargs)


def match_detections(reference: dict, other: dict, box_tol: float = 1.0, score_tol: float = 1e-3) -> dict:
    """Do ``other``'s detections agree with ``reference``'s?

    The sorted scores of each image must agree within ``score_tol``, and every reference
    detection safely inside the top D (score above the D-th score + ``score_tol``: below
    that, order among equal scores decides who is in) must have a partner in ``other`` of
    the same class, score within ``score_tol`` and every box side within ``box_tol`` pixels.
    With ``detection_keypoints`` in ``reference`` (the keypoints task), the partner's
    keypoints must also lie within ``box_tol`` pixels on each axis (``other`` without them
    fails). Matching by value, not by row, makes ties harmless.
    Returns ``{"ok", "checked", "unmatched", "max_box_diff", "max_score_diff"}`` (and
    ``"max_keypoint_diff"`` with keypoints).
    """
    checked = unmatched = 0
    max_box = max_score = max_kp = 0.0
    ref_kp = reference.get("detection_keypoints")  # [N, D, J, 2] or None
    oth_kp = other.get("detection_keypoints") if ref_kp is not None else None
    if ref_kp is not None and oth_kp is None:  # a keypoints export's format that lost them
        oth_kp = np.full_like(ref_kp, np.inf)
    for b in range(reference["detection_scores"].shape[0]):
        ref_s, oth_s = reference["detection_scores"][b], other["detection_scores"][b]
        max_score = max(max_score, float(np.abs(np.sort(ref_s) - np.sort(oth_s)).max()))
        ref_b, oth_b = reference["detection_boxes"][b], other["detection_boxes"][b]
        ref_c, oth_c = reference["detection_classes"][b], other["detection_classes"][b]
        floor = ref_s[-1] + score_tol
        for i in np.flatnonzero(ref_s > floor):
            checked += 1
            box_diff = np.abs(oth_b - ref_b[i]).max(axis=-1)  # [D]
            score_diff = np.abs(oth_s - ref_s[i])
            ok = (oth_c == ref_c[i]) & (box_diff <= box_tol) & (score_diff <= score_tol)
            kp_diff = np.abs(oth_kp[b] - ref_kp[b, i]).max(axis=(-2, -1)) if ref_kp is not None else 0.0 * box_diff
            ok &= kp_diff <= box_tol
            if not ok.any():
                unmatched += 1
                continue
            j = int(np.argmin(np.where(ok, box_diff, np.inf)))
            max_box, max_score = max(max_box, float(box_diff[j])), max(max_score, float(score_diff[j]))
            max_kp = max(max_kp, float(kp_diff[j]))
    out = {"ok": unmatched == 0 and max_score <= score_tol, "checked": checked, "unmatched": unmatched,
           "max_box_diff": max_box, "max_score_diff": max_score}
    return dict(out, max_keypoint_diff=max_kp) if ref_kp is not None else out
