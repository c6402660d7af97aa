"""``centernet export``: a trained model -> SavedModel / TFLite / ONNX, each checked after writing.

Layout of the output directory::

    saved_model/            signatures image_tensor (uint8 [N, h, w, 3], any h, w; also
                            serving_default), encoded_image (string [N]), tf_example (string [N]);
                            assets/categories.json
    model.tflite            the image_tensor graph, float32 (model_float16.tflite: float16 weights)
    model.onnx              the image_tensor graph (tf2onnx, opset export.onnx_opset)
    model_int8.tflite       with export.int8: the image_tensor graph, network int8, letterbox and
                            decode float (``quantize.py``): same input and outputs as model.tflite
    model_int8.onnx         with export.int8: the quantized network only; ``exported.CoreRunner``
                            runs letterbox and decode around it in float
    categories.json         training index -> original id and name
    config.yaml             the run's config (the int8 runners' decode settings; eval --model's data)
    export.json             what was written, input size, and each format's check

All three formats hold the whole serving graph (``serving.Detector``): letterbox, RGB ->
normalised BGR, model, decode, original pixels and category ids, so a runtime needs no
preprocessing code. TFLite and ONNX take the ``image_tensor`` input with dynamic batch and
size (resize the interpreter's input per call). They are converted from a frozen copy of
the graph: the TFLite converter keeps Keras 3 variables as resource variables otherwise,
which the interpreter reads as garbage.

Check: each written format is loaded by its own runtime and run on a test picture; its
detections must match the SavedModel's (``exported.match_detections``: boxes within 1 px,
scores within 1e-3; float16 weights: 2 px and 2e-2, since weights lose bits).
A keypoints run's ``detection_keypoints`` must agree within the box tolerance too; its
``categories.json`` entries carry COCO's ``keypoints`` / ``skeleton`` fields and ``export.json``
its keypoint layout (``tasks.keypoints.layout``), so ``predict`` on any format draws the skeleton.

AP of each variant: with ``export.validation_data`` (or, for int8, the run's ``data.val``),
every written format is evaluated on those records (``eval_export.evaluate_runner``, the AP
that ``eval --model`` prints) into ``export.json``'s ``"ap"``. An int8 file whose AP50 is more
than ``export.int8_ap_tolerance`` points below its runtime's float file is refused
(``Int8Rejected``; nothing is written) unless ``export.force``; so is an int8 export that
cannot be evaluated.

All or nothing: the converters and runtimes of the requested formats are imported before
anything is written; the files go into a temporary sibling directory that is renamed to
the output directory at the end and deleted if anything fails, so an output directory
always holds a complete export with its ``export.json``.
"""
from __future__ import annotations

import importlib
import json
import os
import tempfile
from typing import Callable, Sequence

import numpy as np

from centernet_core import config as config_lib
from centernet_core import storage
from centernet_core.inference import exported
from centernet_core.inference.serving import build_detector
from centernet_core.tasks.keypoints import layout as keypoint_layout
from centernet_core.errors import CenterNetError, ConfigError

TOLERANCE = {"saved_model": (1.0, 1e-3), "tflite": (1.0, 1e-3), "onnx": (1.0, 1e-3), "tflite_float16": (2.0, 2e-2)}
# The modules each format needs to be written (converter) and checked (runtime).
REQUIRES = {"tflite": ("tensorflow.lite", "ai_edge_litert.interpreter"), "onnx": ("tf2onnx", "onnxruntime"),
            "onnx_int8": ("onnxruntime.quantization",)}
INT8_OF = {"tflite": "tflite_int8", "onnx": "onnx_int8"}  # the float file each int8 file is judged against


class Int8Rejected(ConfigError):
    """An int8 export loses more AP than ``export.int8_ap_tolerance`` (or cannot be checked)."""


class ExportCheckFailed(CenterNetError):
    """An exported file does not reproduce the SavedModel's detections."""


def sample_images() -> list[np.ndarray]:
    """Two check pictures, uint8 [h, w, 3], with odd sizes (one tall, one wide): seeded
    coloured rectangles on a gradient, so the model has edges and blobs to respond to."""
    pictures = []
    for seed, (h, w) in ((7, (181, 97)), (8, (75, 203))):
        rng = np.random.default_rng(seed)
        ramp = np.linspace(40, 200, w, dtype=np.float32)[None, :, None]
        image = np.broadcast_to(ramp, (h, w, 3)).copy()
        for _ in range(6):
            y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            y1, x1 = y0 + rng.integers(6, max(7, h // 2)), x0 + rng.integers(6, max(7, w // 2))
            image[y0:y1, x0:x1] = rng.integers(0, 256, 3)
        pictures.append(image.astype(np.uint8))
    return pictures


def frozen_image_tensor(detector):
    """The ``image_tensor`` function with every variable folded into constants, outputs named."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    concrete = detector.image_tensor.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    keys = tf.nest.flatten({k: k for k in concrete.structured_outputs})  # the frozen outputs' order

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=exported.INPUT_NAME)])
    def image_tensor(images):
        return dict(zip(keys, frozen(images)))
    return image_tensor


def write_saved_model(detector, categories: list[dict], path: str) -> None:
    """``tf.saved_model.save`` with the four signatures and ``assets/categories.json``."""
    import tensorflow as tf
    with tempfile.TemporaryDirectory() as tmp:  # the asset is copied from here into saved_model/assets/
        local = os.path.join(tmp, exported.CATEGORIES_FILE)
        with open(local, "w", encoding="utf-8") as f:
            json.dump(categories, f, indent=1, ensure_ascii=False)
        detector.categories_file = tf.saved_model.Asset(local)
        tf.saved_model.save(detector, path, signatures=detector.signatures())


def write_tflite(frozen_fn, path: str, float16: bool = False) -> None:
    import tensorflow as tf
    holder = tf.Module()
    holder.image_tensor = frozen_fn
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_fn.get_concrete_function()], holder)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    storage.write_bytes_atomic(path, converter.convert())


def write_onnx(frozen_fn, path: str, opset: int) -> None:
    import tensorflow as tf
    import tf2onnx
    spec = [tf.TensorSpec([None, None, None, 3], tf.uint8, name=exported.INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_function(frozen_fn, input_signature=spec, opset=opset)
    storage.write_bytes_atomic(path, proto.SerializeToString())


def check_format(export_dir: str, fmt: str, reference: list[dict], images: list[np.ndarray]) -> dict:
    """Run format ``fmt`` on ``images`` and match it against the ``reference`` outputs."""
    box_tol, score_tol = TOLERANCE[fmt]
    runner = exported.open_runner(export_dir, fmt)
    checks = [exported.match_detections(ref, runner(img[None]), box_tol, score_tol) for ref, img in zip(reference, images)]
    out = {"ok": all(c["ok"] for c in checks), "checked": sum(c["checked"] for c in checks),
           "unmatched": sum(c["unmatched"] for c in checks), "box_tol": box_tol, "score_tol": score_tol,
           "max_box_diff": max(c["max_box_diff"] for c in checks),
           "max_score_diff": max(c["max_score_diff"] for c in checks)}
    if "max_keypoint_diff" in checks[0]:  # the keypoints task: keypoints within box_tol too
        out["max_keypoint_diff"] = max(c["max_keypoint_diff"] for c in checks)
    return out


def require_converters(formats: Sequence[str]) -> None:
    """Import what ``formats`` need (``REQUIRES``); a one-line ConfigError naming the extra if one fails."""
    for fmt in formats:
        for module in REQUIRES.get(fmt, ()):
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001 (ImportError, or a broken install failing as it loads)
                why = (str(e).splitlines() or [type(e).__name__])[0]
                raise ConfigError(f"--format {fmt} needs {module.split('.')[0]}, which does not import ({why}); "
                                  f"{exported.EXTRA_HINT}") from None


def refuse_soft_nms_merge(cfg, formats: Sequence[str]) -> None:
    """ConfigError when ``eval.scales`` (several) merge by soft-NMS into a TFLite or ONNX graph.

    The serving graph carries the test-time augmentation. The soft-NMS merge runs
    ``NonMaxSuppressionV5`` with a sigma, per class in a ``map_fn``: ONNX's NonMaxSuppression
    has no soft variant and TFLite's builtin neither, so those formats would not convert or
    would silently merge another way. SavedModel runs it as evaluation does.
    """
    e = cfg.eval
    bad = [f for f in formats if f in ("tflite", "onnx")]
    if bad and len(e.scales) > 1 and e.merge == "soft_nms":
        raise ConfigError(f"--format {','.join(bad)} cannot hold the soft-NMS merge of eval.scales="
                          f"{','.join(str(s) for s in e.scales)}: add --set eval.merge=nms for those formats "
                          "(or export saved_model only)")


def refuse_existing(output_dir: str) -> None:
    """ConfigError unless ``output_dir`` is absent or an empty directory: exports never overwrite."""
    if storage.exists(output_dir) and (not storage.isdir(output_dir) or storage.glob(storage.join(output_dir, "*"))):
        raise ConfigError(f"{output_dir} already exists and is not empty; choose a new --output directory")


def export_trained(trained, output_dir: str, formats: Sequence[str] | None = None, tflite_float16: bool | None = None,
                   onnx_opset: int | None = None, images: list[np.ndarray] | None = None,
                   on_step: Callable[[str], None] | None = None) -> dict:
    """Write the exports of ``trained`` (a ``trained.TrainedModel``) into ``output_dir`` and check them.

    ``formats``, ``tflite_float16`` and ``onnx_opset`` default to ``cfg.export``; ``images``
    (uint8 [h, w, 3] each) to ``sample_images()``; int8 and the AP report follow
    ``cfg.export`` (module docstring). ``on_step(message)`` reports progress.
    Returns the ``export.json`` dict; raises ExportCheckFailed when a format disagrees and
    Int8Rejected (nothing written) when an int8 file loses too much AP.
    Leaves ``trained.model`` unfrozen (``model.unfreeze``: see ``_write_and_check``).
    """
    x = trained.cfg.export
    formats = tuple(formats or x.formats)
    unknown = [f for f in formats if f not in TOLERANCE or f == "tflite_float16"]
    if unknown:
        raise ConfigError(f"--format {','.join(unknown)}: valid formats are saved_model, tflite, onnx")
    refuse_soft_nms_merge(trained.cfg, formats)
    refuse_existing(output_dir)
    int8 = [INT8_OF[f] for f in formats if x.int8 and f in INT8_OF]
    if x.int8 and not int8:
        raise ConfigError("--int8 quantizes the tflite and onnx formats: add one to --format")
    require_converters(formats + tuple(int8))
    validation = x.validation_data or (trained.cfg.data.val if int8 else "")
    if int8 and not validation and not x.force:
        raise Int8Rejected("an int8 export is checked on validation records: pass --val-data PATTERN "
                           "(or --force to write it unchecked)")
    float16 = x.tflite_float16 if tflite_float16 is None else tflite_float16
    opset = onnx_opset or x.onnx_opset
    images = images or sample_images()
    say = on_step or (lambda message: None)
    with storage.staged_directory(output_dir) as staging:  # renamed to output_dir once complete
        summary = _write_and_check(trained, staging, formats, float16, opset, images, say)
        if int8:
            summary["files"].update(_write_int8(trained, staging, int8, opset, say))
        if validation:
            summary["ap"] = _ap_report(trained, staging, summary["files"], validation, say)
            _judge_int8(summary["ap"], int8, x.int8_ap_tolerance, x.force)
        summary["files"] = {fmt: storage.join(output_dir, name) for fmt, name in summary["files"].items()}
        storage.write_text_atomic(storage.join(staging, "export.json"), json.dumps(summary, indent=1))
    bad = [f"{fmt} ({r['unmatched']} of {r['checked']} detections differ; max box diff {r['max_box_diff']:.3g} px, "
           f"score {r['max_score_diff']:.3g}"
           + (f", keypoint {r['max_keypoint_diff']:.3g} px" if "max_keypoint_diff" in r else "") + ")"
           for fmt, r in summary["checks"].items() if not r["ok"]]
    if bad:  # the export is complete and export.json records the failed checks: kept for inspection
        raise ExportCheckFailed(f"exports written to {output_dir} disagree with the in-memory model: {'; '.join(bad)}")
    return summary


def _write_int8(trained, export_dir: str, int8: Sequence[str], opset: int, say: Callable[[str], None]) -> dict:
    """Calibrate and write the int8 files (TFLite: the whole graph; ONNX: the core); ``{format: file name}``."""
    from centernet_core.inference import quantize
    x, size = trained.cfg.export, trained.cfg.model.input_size
    pattern = x.calibration_data or trained.cfg.data.train
    if not pattern:
        raise ConfigError("int8 calibration needs training pictures: pass --calibration-data PATTERN")
    say(f"int8 calibration on {x.calibration_images} images of {pattern}")
    pictures = quantize.record_images(pattern, x.calibration_images)
    written = {}
    if "tflite_int8" in int8:
        say("TFLite int8")
        written["tflite_int8"] = exported.TFLITE_INT8_FILE
        quantize.write_tflite_int8(frozen_image_tensor(build_detector(trained)),
                                   storage.join(export_dir, exported.TFLITE_INT8_FILE),
                                   quantize.letterboxed_pictures(pictures, size), trained.model.name, x.float_layers)
    if "onnx_int8" in int8:
        say("ONNX int8")
        written["onnx_int8"] = exported.ONNX_INT8_FILE
        quantize.write_onnx_int8(quantize.frozen_core(trained.model, size),
                                 storage.join(export_dir, exported.ONNX_INT8_FILE),
                                 quantize.calibration_inputs(pictures, size), opset, x.float_layers)
    return written


def _ap_report(trained, export_dir: str, files: dict, pattern: str, say: Callable[[str], None]) -> dict:
    """``{format: {"AP", "AP50"}}`` of every written file on the records ``pattern``."""
    from centernet_core.inference.eval_export import evaluate_runner
    report = {}
    for fmt in files:
        say(f"AP of {fmt} on {pattern}")
        m = evaluate_runner(exported.open_runner(export_dir, fmt), trained.cfg, pattern, trained.categories)
        report[fmt] = {"AP": m["AP"], "AP50": m["AP50"]}
    return report


def _judge_int8(ap: dict, int8: Sequence[str], tolerance: float, force: bool) -> None:
    """Int8Rejected when an int8 file's AP50 is more than ``tolerance`` points below its float file's."""
    reference = {v: k for k, v in INT8_OF.items()}
    for fmt in int8:
        base = reference[fmt] if reference[fmt] in ap else "saved_model"
        drop = 100 * (ap[base]["AP50"] - ap[fmt]["AP50"])
        ap[fmt]["AP50_drop"] = drop
        if drop > tolerance and not force:
            raise Int8Rejected(f"{fmt} loses {drop:.1f} AP50 points against {base} ({100 * ap[fmt]['AP50']:.1f} vs "
                               f"{100 * ap[base]['AP50']:.1f}; tolerance export.int8_ap_tolerance={tolerance:g}): "
                               "nothing written; calibrate on more typical images (--calibration-data), keep layers "
                               "float (--set export.float_layers=...), or pass --force")


def _write_and_check(trained, export_dir: str, formats: Sequence[str], float16: bool, opset: int,
                     images: list[np.ndarray], say: Callable[[str], None]) -> dict:
    """Write every format into ``export_dir`` and check it; the ``export.json`` dict (file names relative)."""
    import tensorflow as tf
    from centernet_core.modeling.model import unfreeze
    # The serving graph must read the model's variables: traced on a frozen model
    # (``trained.load_trained`` freezes), it would bake every folded conv weight into
    # saved_model.pb as a constant, storing the weights twice and leaving the saved
    # variables unused. TFLite and ONNX fold the batch norms when they convert anyway.
    unfreeze(trained.model)
    detector = build_detector(trained)
    layout = keypoint_layout.of_run(trained.checkpoint)  # keypoints task: names and skeleton for predict
    categories = keypoint_layout.annotate(trained.categories, layout)
    storage.write_text_atomic(storage.join(export_dir, exported.CATEGORIES_FILE),
                              json.dumps(categories, indent=1, ensure_ascii=False))
    storage.write_text_atomic(storage.join(export_dir, exported.CONFIG_FILE), config_lib.dump_yaml(trained.cfg))
    say("SavedModel")  # always written: it is the reference the other formats are checked against
    sm_path = storage.join(export_dir, exported.SAVED_MODEL_DIR)
    write_saved_model(detector, categories, sm_path)
    memory = [{k: v.numpy() for k, v in detector.image_tensor(tf.constant(img[None])).items()} for img in images]
    reference = [exported.SavedModelRunner(sm_path)(img[None]) for img in images]
    written = {"saved_model": exported.SAVED_MODEL_DIR}
    report = {"saved_model": check_format(export_dir=export_dir, fmt="saved_model", reference=memory, images=images)}
    frozen = frozen_image_tensor(detector) if set(formats) & {"tflite", "onnx"} else None
    if "tflite" in formats:
        say("TFLite")
        written["tflite"] = exported.TFLITE_FILE
        write_tflite(frozen, storage.join(export_dir, exported.TFLITE_FILE))
        if float16:
            written["tflite_float16"] = exported.TFLITE_FP16_FILE
            write_tflite(frozen, storage.join(export_dir, exported.TFLITE_FP16_FILE), float16=True)
    if "onnx" in formats:
        say("ONNX")
        written["onnx"] = exported.ONNX_FILE
        write_onnx(frozen, storage.join(export_dir, exported.ONNX_FILE), opset)
    for fmt in written:
        if fmt != "saved_model":
            say(f"checking {fmt}")
            report[fmt] = check_format(export_dir, fmt, reference, images)
    return {"input_size": trained.cfg.model.input_size, "checkpoint": trained.checkpoint,
            "max_detections": trained.cfg.eval.max_detections, "files": written, "checks": report,
            **({"keypoints": layout} if layout else {}),
            "inputs": {"image_tensor": "uint8 [N, H, W, 3] RGB, any H, W",
                       "encoded_image": "string [N] (SavedModel only)", "tf_example": "string [N] (SavedModel only)"}}


def export_checkpoint(path: str, output_dir: str, overrides: Sequence[str] = (),
                      on_step: Callable[[str], None] | None = None) -> dict:
    """``centernet export --ckpt PATH``: restore the run at ``path`` and ``export_trained`` it.

    ``overrides`` (``a.b=value``) apply to the run's config; the CLI's ``--format`` and
    ``--tflite-float16`` arrive as ``export.formats=...`` and ``export.tflite_float16=...``.
    """
    from centernet_core.inference.trained import load_trained
    refuse_existing(output_dir)  # before the slow restore
    return export_trained(load_trained(path, overrides), output_dir, on_step=on_step)
