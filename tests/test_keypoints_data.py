"""Keypoint data: COCO keypoint json -> records and metadata; the pipeline maps joints like boxes."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from centernet_core import config as config_lib
from centernet_core.data import metadata as meta_lib
from centernet_core.data.coco_json import validate_coco
from centernet_core.errors import DataError


@pytest.fixture(scope="module")
def kites(tmp_path_factory) -> str:
    from centernet_core.data.shapes import make_shapes_dataset
    out = str(tmp_path_factory.mktemp("kites"))
    make_shapes_dataset(out, train=16, val=6, size="128", seed=0, shards=1, keypoints=True)
    return out


def test_flip_from_names():
    assert meta_lib.flip_from_names(meta_lib.COCO_KEYPOINTS) == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13,
                                                                   16, 15]
    assert meta_lib.flip_from_names(["top", "wing_left", "wing_right", "left_only"]) == [0, 2, 1, 3]


def test_coco_keypoint_json_is_validated():
    data = {"images": [{"id": 1, "file_name": "a.jpg"}],
            "categories": [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye", "right_eye"],
                            "skeleton": [[1, 2], [1, 3]]}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4],
                             "keypoints": [1, 1, 2, 0, 0, 0, 3, 1, 1]}]}
    index = validate_coco(data)
    assert index.categories[0].keypoints == ("nose", "left_eye", "right_eye")
    assert index.images[0].annotations[0][4] == [1, 1, 2, 0, 0, 0, 3, 1, 1]
    assert meta_lib.keypoint_metadata(index.categories)["keypoints"] == {
        "names": ["nose", "left_eye", "right_eye"], "skeleton": [[1, 2], [1, 3]], "flip": [0, 2, 1],
        "sigmas": [meta_lib.DEFAULT_SIGMA] * 3}
    data["annotations"][0]["keypoints"] = [1, 1, 2]
    with pytest.raises(DataError, match="9 numbers"):
        validate_coco(data)
    data["categories"][0]["skeleton"] = [[1, 4]]
    with pytest.raises(DataError, match="skeleton"):
        validate_coco(data)


def test_metadata_and_records_carry_the_keypoints(kites):
    meta = meta_lib.load_metadata(os.path.join(kites, "train"))
    assert meta["keypoints"]["names"] == ["top", "left_wing", "right_wing", "bottom"]
    assert meta["keypoints"]["flip"] == [0, 2, 1, 3] and meta["keypoints"]["sigmas"] == [0.08] * 4
    cfg = config_lib.fit_to_data(config_lib.resolve("shapes-keypoints-tiny"), meta)
    assert (cfg.model.num_keypoints, cfg.model.keypoint_flip, cfg.eval.keypoint_sigmas) == (4, (0, 2, 1, 3),
                                                                                            (0.08,) * 4)
    assert cfg.model.num_classes == 1


def _cfg(kites, *extra):
    cfg = config_lib.resolve("shapes-keypoints-tiny", overrides=[
        f"data.train={kites}/train-*.tfrecord", f"data.val={kites}/val-*.tfrecord", "data.deterministic=true",
        "runtime.global_batch_size=8", *extra])
    return config_lib.fit_to_data(cfg, meta_lib.load_metadata(f"{kites}/train"))


def test_eval_pipeline_ground_truth_keypoints_are_the_json(kites):
    from centernet_core.data.pipeline import build_dataset
    coco = json.load(open(os.path.join(kites, "instances_val.json")))
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(np.array(a["keypoints"]).reshape(-1, 3))
    for features, targets in build_dataset(f"{kites}/val-*.tfrecord", _cfg(kites), False, batch_size=6):
        for b, image_id in enumerate(features["source_id"].numpy()):
            n = int(features["gt_count"][b])
            got = features["gt_keypoints"].numpy()[b, :n]  # [n, J, 3] (y, x, v), largest first
            want = by_image[int(image_id)]
            for kp in got:
                assert any(np.allclose(kp[:, [1, 0, 2]], w, atol=1e-3) for w in want)
        assert targets["joints"].shape[2:] == (4, 2)


def test_training_flip_swaps_left_and_right_joints(kites):
    """Kites' left wing is left of the right wing and the top above the bottom, flipped or not:
    a flip without the permutation (or x and y swapped) breaks it; joints stay in their boxes."""
    from centernet_core.data.pipeline import build_dataset
    ds = build_dataset(f"{kites}/train-*.tfrecord", _cfg(kites, "data.crop_scales=[1.0]"), True)
    for _, t in ds.take(4):
        mask = t["joint_mask"].numpy()  # [B, K, J]
        full = mask.min(-1) > 0  # objects with all four joints on the map
        joints = t["joints"].numpy()[full]  # [n, J, 2] relative to the centre cell
        assert len(joints) > 0
        assert np.all(joints[:, 1, 1] < joints[:, 2, 1]), "left wing must be left of the right wing"
        assert np.all(joints[:, 0, 0] < joints[:, 3, 0]), "top must be above the bottom"
        size = t["size"].numpy()[full]  # [n, 2] cells
        centre = t["offset"].numpy()[full]  # centre minus the cell
        rel = joints - centre[:, None, :]  # joints relative to the exact centre
        assert np.all(np.abs(rel) <= size[:, None, :] / 2 + 0.26)
