"""Category ids pinned end to end with gapped ids (5, 12, 77) on non-square pictures.

prepare coco -> train -> eval (results json) -> export (SavedModel, TFLite, ONNX) -> predict:
every stage must report the dataset's own ids, never training indices or index + 1, and the
exported graph must give the same (id, box) as the checkpoint's evaluation of the same image.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from centernet_core import config as config_lib
from centernet_core.data.coco_writer import write_coco_tfrecords
from centernet_core.data.shapes import write_split
from centernet_core.inference import exported
from centernet_core.inference.evaluate import evaluate_checkpoint
from centernet_core.inference.export import export_checkpoint
from centernet_core.inference.predict import predict_images
from centernet_core.training.loop import train

GAPPED = {1: 77, 2: 5, 3: 12}  # the shapes set's ids -> gapped ids, out of name order too


def _regap(path):
    coco = json.load(open(path))
    for a in coco["annotations"]:
        a["category_id"] = GAPPED[a["category_id"]]
    for c in coco["categories"]:
        c["id"] = GAPPED[c["id"]]
    json.dump(coco, open(path, "w"))
    return coco


@pytest.mark.slow
def test_gapped_category_ids_survive_every_stage(tmp_path):
    data = str(tmp_path / "data")
    names = {}
    for split, count in (("train", 24), ("val", 6)):
        gt = _regap(write_split(data, split, count, (96, 160), seed=3))  # 96 high, 160 wide
        names = {c["id"]: c["name"] for c in gt["categories"]}
        write_coco_tfrecords(os.path.join(data, "images", split), os.path.join(data, f"instances_{split}.json"),
                             os.path.join(data, split), num_shards=1, workers=1)
    meta = json.load(open(os.path.join(data, "train.meta.json")))
    assert sorted(int(c["id"]) for c in meta["categories"]) == [5, 12, 77]

    cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=[
        "train.steps=12", "train.warmup_steps=2", "train.log_every=6", "train.checkpoint_every=12",
        "model.input_size=128", "eval.batch_size=3", f"data.train={data}/train-*.tfrecord",
        f"data.val={data}/val-*.tfrecord"])
    run = str(tmp_path / "run")
    train(cfg, run, show_progress=False)

    results_path = str(tmp_path / "results.json")
    evaluate_checkpoint(run, output=results_path)
    results = json.load(open(results_path))
    assert {r["category_id"] for r in results} == {5, 12, 77}  # 100 detections per image reach every class

    out = str(tmp_path / "export")
    export_checkpoint(run, out, overrides=["export.formats=saved_model,tflite,onnx"])
    saved_model = exported.open_runner(out, "saved_model")
    found = set()  # over the val pictures, as the results json above (one picture's top 100 may miss a class)
    for name in sorted(os.listdir(os.path.join(data, "images", "val"))):
        seen = saved_model(np.asarray(Image.open(os.path.join(data, "images", "val", name)).convert("RGB"))[None])
        found |= set(seen["detection_classes"][0, :int(seen["num_detections"][0])].astype(int).tolist())
    assert found == {5, 12, 77}
    picture = os.path.join(data, "images", "val", "000001.jpg")
    pixels = np.asarray(Image.open(picture).convert("RGB"))[None]
    reference = saved_model(pixels)
    n = int(reference["num_detections"][0])
    ids = reference["detection_classes"][0, :n].astype(int)
    assert set(ids) <= {5, 12, 77}
    # row by row, the exported ids are the run's table applied to the in-memory model's class indices
    import tensorflow as tf
    from centernet_core.inference.detect import detect
    from centernet_core.inference.serving import letterbox
    from centernet_core.inference.trained import load_trained
    from centernet_core.tasks import build_task
    trained = load_trained(run)
    images, scale, hw = letterbox(tf.constant(pixels), trained.cfg.model.input_size)
    det = detect(trained.model, build_task(trained.cfg), images, scale, hw, max_detections=100)
    table = {int(c["index"]): int(c["id"]) for c in trained.categories}
    expected = [table[int(i)] for i in det["classes"][0, :n].numpy()]
    assert list(ids) == expected and sorted(table.values()) == [5, 12, 77]
    np.testing.assert_allclose(reference["detection_boxes"][0, :n], det["boxes_yxyx_abs"][0, :n].numpy(), atol=1e-3)
    for fmt in ("tflite", "onnx"):
        other = exported.open_runner(out, fmt)(pixels)
        np.testing.assert_array_equal(other["detection_classes"][0, :n], reference["detection_classes"][0, :n])

    summary = predict_images([picture], out, str(tmp_path / "predictions"), threshold=0.0)
    rows = json.load(open(os.path.join(summary.output_dir, "detections.json")))
    assert {r["category_id"] for r in rows} == {5, 12, 77}
    per_image = json.load(open(os.path.join(summary.output_dir, "000001.jpg.json")))["detections"]
    assert {(d["category_id"], d["category"]) for d in per_image} == set(names.items())
