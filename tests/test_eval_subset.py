"""Eval refuses AP from a subset: records the pipeline cannot decode are counted against the
metadata's image count, and only ``eval.allow_subset`` (``--allow-subset``) accepts fewer."""
import json
import os
import shutil

import pytest
import tensorflow as tf

from centernet_core import config as config_lib
from centernet_core.errors import DataError
from centernet_core.inference.evaluate import evaluate_model


def _one_undecodable(shapes_dataset, folder):
    """The val set with its first record's image replaced by bytes that start like a JPEG."""
    os.makedirs(folder)
    src = os.path.join(shapes_dataset, "val-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(os.path.join(folder, "val-00000-of-00001.tfrecord")) as writer:
        for i, raw in enumerate(tf.data.TFRecordDataset(src).as_numpy_iterator()):
            example = tf.train.Example.FromString(raw)
            if i == 0:
                example.features.feature["image/encoded"].bytes_list.value[:] = [b"\xff\xd8\xff\xe0" + b"\0" * 64]
            writer.write(example.SerializeToString())
    shutil.copy(os.path.join(shapes_dataset, "val.meta.json"), folder)
    return os.path.join(folder, "val-*.tfrecord")


def test_eval_refuses_a_subset_unless_allowed(shapes_dataset, tmp_path):
    from centernet_core.modeling.model import build_model

    cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=["model.input_size=64", "eval.batch_size=4"])
    categories = json.load(open(os.path.join(shapes_dataset, "val.meta.json")))["categories"]
    pattern = _one_undecodable(shapes_dataset, str(tmp_path / "val"))
    model = build_model(cfg)
    with pytest.raises(DataError, match=r"^evaluated 7 of the 8 images that the metadata of .* lists "
                                        r".*pass --allow-subset \(eval.allow_subset=true\)$"):
        evaluate_model(model, cfg, pattern, categories)
    allowed = config_lib.override(cfg, ["eval.allow_subset=true"])
    metrics = evaluate_model(model, allowed, pattern, categories)
    assert (metrics["images"], metrics["images_expected"]) == (7, 8)
    full = evaluate_model(model, cfg, os.path.join(shapes_dataset, "val-*.tfrecord"), categories)
    assert (full["images"], full["images_expected"]) == (8, 8)


def test_allow_subset_flag_becomes_the_override():
    from centernet_cli.common import flag_overrides

    assert flag_overrides(**{"eval.allow_subset": True}) == ["eval.allow_subset=true"]
    cfg = config_lib.resolve("shapes-tiny", profile="cpu", overrides=flag_overrides(**{"eval.allow_subset": True}))
    assert cfg.eval.allow_subset is True
