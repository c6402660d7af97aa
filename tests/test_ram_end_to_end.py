"""Every reader and writer goes through ``storage``: prepare -> train -> eval -> export -> predict
with every path on TensorFlow's in-memory ``ram://`` file system (a stand-in for gs://)."""
import json
import uuid

import pytest

from centernet_core import config as config_lib, storage

pytestmark = pytest.mark.slow


def test_prepare_train_eval_export_predict_on_ram():
    from centernet_core.data.shapes import make_shapes_dataset
    from centernet_core.inference.evaluate import evaluate_checkpoint
    from centernet_core.inference.export import export_trained
    from centernet_core.inference.predict import predict_images
    from centernet_core.inference.trained import load_trained
    from centernet_core.training.loop import train

    root = f"ram://e2e-{uuid.uuid4().hex[:8]}"
    data = storage.join(root, "shapes")
    make_shapes_dataset(data, train=8, val=4, size="64", seed=0, workers=1, shards=1)
    cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=[
        "model.input_size=64", "runtime.global_batch_size=4", "train.scale_with_batch=false", "train.steps=4",
        "train.warmup_steps=1", "runtime.steps_per_loop=2", "train.log_every=2", "train.checkpoint_every=2",
        "data.shuffle_buffer=8", "eval.batch_size=4",
        f"data.train={storage.join(data, 'train-*.tfrecord')}", f"data.val={storage.join(data, 'val-*.tfrecord')}"])
    run = storage.join(root, "run")
    assert train(cfg, run, show_progress=False).step == 4
    assert storage.exists(storage.join(run, "ckpt-4.index"))

    results = storage.join(root, "results.json")
    metrics = evaluate_checkpoint(run, output=results)
    assert metrics["images"] == metrics["images_expected"] == 4
    assert json.loads(storage.read_text(results)) is not None

    export = storage.join(root, "export")
    export_trained(load_trained(run), export, formats=("saved_model",))
    assert storage.exists(storage.join(export, "saved_model", "saved_model.pb"))

    out = storage.join(root, "predictions")
    summary = predict_images([storage.join(data, "images", "val")], export, out, threshold=0.0)
    assert len(summary.images) == 4 and not summary.skipped
    images = json.loads(storage.read_text(storage.join(out, "images.json")))
    assert [i["id"] for i in images] == [1, 2, 3, 4]
    detections = json.loads(storage.read_text(storage.join(out, "detections.json")))
    assert {d["category_id"] for d in detections} <= {1, 2, 3}
