"""``centernet predict``: detections on image files, drawn and written as json.

Inputs are files, globs or directories (their image files, not recursive). The model is an
export directory (``centernet export``), a SavedModel directory, or a run directory /
checkpoint of ``centernet train`` (wrapped in the same ``serving.Detector`` graph in memory).
Images are decoded by TensorFlow inside the graph, as in training; Pillow only checks that a
file is a picture (unreadable files are skipped and listed) and draws.

Writes into ``output_dir`` (never next to the inputs: a directory holding an input is refused):
``NAME`` (the picture with labelled boxes), ``NAME.json`` (its detections), ``detections.json``
(COCO results, ``image_id`` as in ``images.json``) and ``images.json`` (id, file, size).
A keypoints model's pictures also show each object's skeleton (the run's keypoint layout:
``dataset.meta.json`` of a run, the categories of an export; ``tasks.keypoints.layout``) and
its json rows carry COCO's keypoint results, ``keypoints: [x, y, v] * J`` in original pixels.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from centernet_core import storage
from centernet_core.inference import coco_eval
from centernet_core.inference import exported
from centernet_core.draw import draw_detections
from centernet_core.errors import ConfigError, DataError
from centernet_core.tasks.keypoints import layout as keypoint_layout

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_TF_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "WEBP"}  # what tf.io.decode_image reads
_SAVE_AS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp"}


def collect_images(inputs: Sequence[str]) -> list[str]:
    """Expand files, globs and directories (any storage path) into a duplicate-free list."""
    found: list[str] = []
    for item in inputs:
        if storage.isdir(item):
            found += [p for p in storage.glob(storage.join(item, "*"))
                      if p.lower().endswith(IMAGE_EXTENSIONS) and not storage.isdir(p)]
        elif storage.exists(item):
            found.append(item)
        else:
            matches = [p for p in storage.glob(item) if not storage.isdir(p)]
            if not matches:
                raise DataError(f"no image files match {item!r}")
            found += matches
    seen, out = set(), []
    for p in found:
        key = storage.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    if not out:
        raise DataError(f"no image files found in {', '.join(inputs)} (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return out


def check_output_dir(output_dir: str, paths: Sequence[str]) -> None:
    """Refuse an output directory that holds any input: outputs must never overwrite inputs."""
    out = storage.realpath(output_dir)
    for p in paths:
        if storage.dirname(storage.realpath(p)) == out:
            raise ConfigError(f"--output {output_dir} is where the input {p} lives; choose another directory "
                              "(predict never writes next to its inputs)")


def _one_by_one(runner, encoded: list[bytes]) -> dict:
    """A uint8 runner (TFLite, ONNX: one size per call) over encoded images, one at a time."""
    import tensorflow as tf
    outs = [runner(tf.io.decode_image(data, channels=3, expand_animations=False).numpy()[None]) for data in encoded]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


class Predictor:
    """Loads a model from ``path`` and maps encoded image bytes to serving outputs (NumPy).

    ``path``: an export directory or SavedModel (its ``encoded_image`` signature), one of an
    export's ``.tflite`` / ``.onnx`` files (``exported.locate``: int8 ones too), or a run
    directory / checkpoint, built under ``precision`` (``inference.precision``: auto,
    float32, bfloat16; exports run as written).
    """

    def __init__(self, path: str, precision: str = "float32"):
        sm_dir = storage.join(path, exported.SAVED_MODEL_DIR)
        self.precision_note = ""
        if path.endswith((".tflite", ".onnx")):
            export_dir, fmt = exported.locate(path)
            runner = exported.open_runner(export_dir, fmt)
            self.categories = exported.load_categories(export_dir)
            self._encoded = lambda data: _one_by_one(runner, data)
        elif storage.exists(storage.join(sm_dir, "saved_model.pb")) or storage.exists(storage.join(path, "saved_model.pb")):
            sm_dir = sm_dir if storage.exists(storage.join(sm_dir, "saved_model.pb")) else path
            self._runner = exported.SavedModelRunner(sm_dir)
            self._encoded = self._runner.encoded
            table = storage.join(sm_dir, "assets", exported.CATEGORIES_FILE)
            self.categories = json.loads(storage.read_text(table))
        else:
            import tensorflow as tf
            from centernet_core.inference.serving import build_detector
            from centernet_core.inference import precision as precision_lib
            from centernet_core.inference.trained import load_trained
            self.precision_note = precision_lib.apply(precision) if precision != "float32" else ""
            trained = load_trained(path)
            detector = build_detector(trained)
            self.categories = keypoint_layout.annotate(trained.categories, keypoint_layout.of_run(path))
            self._encoded = lambda data: {k: v.numpy() for k, v in
                                          detector.encoded_image(tf.constant(data, dtype=tf.string)).items()}
        self.names = {int(c["id"]): str(c["name"]) for c in self.categories}
        self.keypoint_layout = keypoint_layout.of_categories(self.categories)  # None: no keypoints

    def __call__(self, encoded: list[bytes]) -> list[dict]:
        """Serving outputs per image: ``boxes_yxyx_abs`` [n, 4], ``scores`` [n], ``category_ids`` [n]
        (keypoints task: ``keypoints_yx_abs`` [n, J, 2] and ``keypoint_scores`` [n, J] too)."""
        out = self._encoded(encoded)
        result = []
        for b in range(len(encoded)):
            n = int(out["num_detections"][b])
            result.append({"boxes_yxyx_abs": out["detection_boxes"][b, :n], "scores": out["detection_scores"][b, :n],
                           "category_ids": out["detection_classes"][b, :n].astype(np.int64)})
            if "detection_keypoints" in out:
                result[-1].update(keypoints_yx_abs=out["detection_keypoints"][b, :n],
                                  keypoint_scores=out["detection_keypoint_scores"][b, :n])
        return result


@dataclass
class _Item:
    path: str
    data: bytes
    image: Image.Image
    name: str


@dataclass
class PredictSummary:
    """``images``: per written image {file, output, detections, by_category}; ``skipped``: (path, reason)."""

    output_dir: str
    images: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def _open(path: str) -> tuple[bytes, Image.Image]:
    data = storage.read_bytes(path)
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.format not in _TF_FORMATS:  # TIFF etc.: hand TensorFlow a PNG of the same pixels
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        data = buf.getvalue()
    return data, image


def _output_name(path: str, image: Image.Image, taken: set) -> str:
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ext if image.format in _SAVE_AS and ext.lower() in IMAGE_EXTENSIONS else _SAVE_AS.get(image.format, ".png")
    name, k = stem + ext, 1
    while name.lower() in taken:  # two inputs with one name (from different directories)
        name, k = f"{stem}_{k}{ext}", k + 1
    taken.add(name.lower())
    return name


def _write(item: _Item, det: dict, names: dict, output_dir: str, image_id: int, threshold: float,
           edges=()) -> tuple[dict, list]:
    """Draw and write one image's outputs; return its summary row and its COCO results.
    ``edges``: the skeleton's 0-based joint pairs (keypoints task)."""
    keep = det["scores"] >= threshold
    yxyx, scores, ids = det["boxes_yxyx_abs"][keep], det["scores"][keep], det["category_ids"][keep]
    keypoints = det["keypoints_yx_abs"][keep] if "keypoints_yx_abs" in det else None  # [n, J, 2]
    labels = [names.get(int(c), str(int(c))) for c in ids]
    picture = draw_detections(item.image, yxyx, scores, ids, labels, keypoints, edges)
    buf = io.BytesIO()
    picture.save(buf, format=Image.registered_extensions()[os.path.splitext(item.name)[1].lower()])
    storage.write_bytes_atomic(storage.join(output_dir, item.name), buf.getvalue())
    results = coco_eval.image_results(image_id, yxyx, scores, ids, keypoints)  # the COCO rows of detections.json
    rows = [{"category_id": r["category_id"], "category": label, "score": r["score"], "bbox_xywh": r["bbox"],
             "bbox_yxyx": [round(float(v), 2) for v in y], **({"keypoints": r["keypoints"]} if "keypoints" in r else {})}
            for r, label, y in zip(results, labels, yxyx)]
    record = {"file": item.path, "width": item.image.width, "height": item.image.height, "detections": rows}
    storage.write_text_atomic(storage.join(output_dir, item.name + ".json"),
                              json.dumps(record, indent=1, ensure_ascii=False))
    counts: dict = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return {"file": item.path, "output": item.name, "detections": len(rows), "by_category": counts}, results


def _predict_one(predictor, data: bytes):
    """One image's detections, or the reason TensorFlow cannot decode it (a str).

    A failure on bytes that TensorFlow decodes is the model's, not the file's: it is raised.
    """
    try:
        return predictor([data])[0]
    except Exception as e:
        import tensorflow as tf
        try:
            tf.io.decode_image(data, channels=3, expand_animations=False)
        except tf.errors.OpError:
            return f"TensorFlow cannot decode it ({type(e).__name__})"
        raise


def predict_images(inputs: Sequence[str], model: str | Predictor, output_dir: str, threshold: float = 0.3,
                   batch_size: int = 8, on_image: Callable[[str], None] | None = None,
                   on_start: Callable[[int], None] | None = None, precision: str = "float32") -> PredictSummary:
    """Detect objects in ``inputs`` with ``model`` and write pictures and json into ``output_dir``.

    Args:
      inputs: image files, globs or directories.
      model: export dir, SavedModel dir, .tflite / .onnx export file, run dir / checkpoint, or a ``Predictor``.
      precision: for a checkpoint: auto, float32 or bfloat16 (``Predictor``).
      threshold: keep detections with score >= this.
      batch_size: images per model call.
      on_start(total), on_image(path): progress callbacks.
    Returns: ``PredictSummary``; unreadable files are in ``skipped`` with the reason.
    Raises: DataError when no image could be processed; a model failure on a decodable
      image is raised as it is (never reported as an unreadable file).
    """
    if not 0.0 <= threshold <= 1.0 or batch_size < 1:
        raise ConfigError("--threshold must be in [0, 1] and --batch-size at least 1")
    paths = collect_images(inputs)
    check_output_dir(output_dir, paths)
    predictor = model if isinstance(model, Predictor) else Predictor(model, precision)
    storage.makedirs(output_dir)
    if on_start:
        on_start(len(paths))
    summary, results, images, taken = PredictSummary(output_dir), [], [], {"detections.json", "images.json"}
    batch: list[_Item] = []

    def flush():
        try:
            outputs = predictor([it.data for it in batch])
        except Exception:  # noqa: BLE001  one undecodable file fails the whole call: retry one by one
            outputs = [_predict_one(predictor, it.data) for it in batch]
        for it, det in zip(batch, outputs):
            if isinstance(det, str):
                summary.skipped.append((it.path, det))
            else:
                image_id = len(images) + 1
                row, res = _write(it, det, predictor.names, output_dir, image_id, threshold,
                                  keypoint_layout.edges(getattr(predictor, "keypoint_layout", None)))
                images.append({"id": image_id, "file_name": it.name, "source": it.path,
                               "width": it.image.width, "height": it.image.height})
                summary.images.append(row)
                results.extend(res)
            if on_image:
                on_image(it.path)
        batch.clear()

    for path in paths:
        try:
            data, image = _open(path)
        except Exception as e:  # noqa: BLE001 (Pillow raises many types for broken files)
            summary.skipped.append((path, f"not a readable image ({type(e).__name__}: {e})"))
            if on_image:
                on_image(path)
            continue
        batch.append(_Item(path, data, image, _output_name(path, image, taken)))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    storage.write_text_atomic(storage.join(output_dir, "detections.json"), json.dumps(results))
    if not images:
        listed = "; ".join(f"{p}: {why}" for p, why in summary.skipped[:3])
        raise DataError(f"no image could be processed ({len(summary.skipped)} skipped: {listed}"
                        f"{'; ...' if len(summary.skipped) > 3 else ''})")
    storage.write_text_atomic(storage.join(output_dir, "images.json"), json.dumps(images, indent=1, ensure_ascii=False))
    return summary
