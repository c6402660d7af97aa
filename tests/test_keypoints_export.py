"""Serving outputs of the keypoints task: the SavedModel's signatures carry the keypoints."""
import os

import numpy as np
import pytest


@pytest.mark.slow
def test_saved_model_outputs_keypoints(tmp_path):
    import tensorflow as tf
    from centernet_core import config as config_lib
    from centernet_core.data.shapes import make_shapes_dataset
    from centernet_core.inference.export import export_checkpoint
    from centernet_core.inference.serving import build_detector
    from centernet_core.inference.trained import load_trained
    from centernet_core.training.loop import train

    data = str(tmp_path / "kites")
    make_shapes_dataset(data, train=8, val=2, size="128", seed=2, shards=1, keypoints=True)
    cfg = config_lib.resolve("shapes-keypoints-tiny", profile="cpu", overrides=[
        "train.steps=10", "train.warmup_steps=2", "train.log_every=5", "train.checkpoint_every=10",
        f"data.train={data}/train-*.tfrecord", "data.deterministic=true"])
    run = str(tmp_path / "run")
    train(cfg, run, show_progress=False)
    out = str(tmp_path / "export")
    export_checkpoint(run, out, overrides=["export.formats=[saved_model]"])
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        os.path.join(data, "images", "val", "000001.jpg")).convert("RGB"))[None]
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    got = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=tf.constant(image)).items()}
    assert got["detection_keypoints"].shape == (1, 100, 4, 2)
    assert got["detection_keypoint_scores"].shape == (1, 100, 4)
    detector = build_detector(load_trained(run))  # held: its tf.functions refer to it weakly
    want = detector.image_tensor(tf.constant(image))
    np.testing.assert_allclose(got["detection_keypoints"], want["detection_keypoints"].numpy(), atol=1e-3)
    assert got["detection_keypoints"].max() <= 128.0 and got["detection_keypoints"].min() >= 0.0
