"""Predict's failure promises: any storage path, unreadable files skipped and listed, model
failures raised (never reported as unreadable files), and an error when nothing was processed."""
import io
import json
import uuid

import numpy as np
import pytest
from PIL import Image

from centernet_core import storage
from centernet_core.errors import DataError
from centernet_core.inference import predict as predict_lib
from centernet_core.inference.predict import Predictor, collect_images, predict_images


class StubPredictor(Predictor):
    """One fixed detection per image (category id 12), or ``fail`` raised on every call."""

    def __init__(self, fail: Exception | None = None):
        self.categories = [{"index": 0, "id": 12, "name": "kite"}]
        self.names = {12: "kite"}
        self.fail = fail
        self.precision_note = ""
        self.keypoint_layout = None

    def __call__(self, encoded):
        if self.fail is not None:
            raise self.fail
        return [{"boxes_yxyx_abs": np.array([[2.0, 3.0, 20.0, 30.0]], np.float32),
                 "scores": np.array([0.9], np.float32), "category_ids": np.array([12])} for _ in encoded]


def _png(width=40, height=30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _ram_folder(files: dict) -> str:
    root = f"ram://predict-faults-{uuid.uuid4().hex[:8]}/photos"
    storage.makedirs(root)
    for name, data in files.items():
        storage.write_bytes_atomic(storage.join(root, name), data)
    return root


def test_inputs_and_outputs_on_a_non_local_file_system():
    root = _ram_folder({"a.png": _png(), "b.png": _png(50, 20), "notes.txt": b"not a picture"})
    folder = collect_images([root])
    globbed = collect_images([storage.join(root, "*.png")])
    assert [storage.basename(p) for p in folder] == ["a.png", "b.png"] == [storage.basename(p) for p in globbed]
    out = storage.join(storage.dirname(root), "out")
    summary = predict_images([storage.join(root, "*.png")], StubPredictor(), out, threshold=0.5)
    assert [r["output"] for r in summary.images] == ["a.png", "b.png"] and not summary.skipped
    results = json.loads(storage.read_text(storage.join(out, "detections.json")))
    assert [r["category_id"] for r in results] == [12, 12]
    record = json.loads(storage.read_text(storage.join(out, "b.png.json")))
    assert (record["width"], record["height"]) == (50, 20)


def test_a_model_failure_is_raised_not_reported_as_an_unreadable_file(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(_png())
    with pytest.raises(ValueError, match="model bug"):
        predict_images([str(tmp_path / "in")], StubPredictor(ValueError("model bug")), str(tmp_path / "out"))


def test_bytes_tensorflow_cannot_decode_are_skipped_and_listed(tmp_path, monkeypatch):
    import tensorflow as tf

    (tmp_path / "in").mkdir()
    for name in ("good.png", "odd.png"):
        (tmp_path / "in" / name).write_bytes(_png())
    real_open = predict_lib._open

    def opened(path):  # Pillow reads "odd.png"; TensorFlow is handed bytes it cannot decode
        data, image = real_open(path)
        return (b"\x89PNG garbage" if path.endswith("odd.png") else data), image

    class DecodingStub(StubPredictor):
        def __call__(self, encoded):
            for data in encoded:
                tf.io.decode_image(data, channels=3)  # raises on the garbage, as the serving graph does
            return super().__call__(encoded)

    monkeypatch.setattr(predict_lib, "_open", opened)
    summary = predict_images([str(tmp_path / "in")], DecodingStub(), str(tmp_path / "out"))
    assert [r["output"] for r in summary.images] == ["good.png"]
    assert [(p.rsplit("/", 1)[1], why.split(" (")[0]) for p, why in summary.skipped] == [
        ("odd.png", "TensorFlow cannot decode it")]


def test_nothing_processed_is_an_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(DataError, match=r"^no image could be processed \(1 skipped: .*broken.jpg: not a readable"):
        predict_images([str(tmp_path / "in")], StubPredictor(), str(tmp_path / "out"))


def test_nothing_processed_exits_non_zero(tmp_path, monkeypatch, capsys):
    from test_evaluate import cli

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    class FromPath(StubPredictor):
        def __init__(self, path, precision="float32"):
            super().__init__()
    monkeypatch.setattr(predict_lib, "Predictor", FromPath)
    code = cli(["predict", str(tmp_path / "in"), "--model", str(tmp_path), "--output", str(tmp_path / "out")])
    assert code == DataError.exit_code != 0
    assert "no image could be processed (1 skipped" in capsys.readouterr().err
