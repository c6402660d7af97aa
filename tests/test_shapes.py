import json
import os

import numpy as np
import pytest

from centernet_core.data import shapes
from centernet_core.data.metadata import load_metadata
from centernet_core.errors import ConfigError


def test_dataset_files_and_statistics(shapes_dataset):
    for split, n in (("train", 24), ("val", 8)):
        coco = json.load(open(os.path.join(shapes_dataset, f"instances_{split}.json")))
        assert [c["name"] for c in coco["categories"]] == ["circle", "square", "triangle"]
        assert [im["id"] for im in coco["images"]] == list(range(1, n + 1))
        per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=n + 1)[1:]
        assert per_image.min() >= 1 and per_image.max() <= 5
        b = np.array([a["bbox"] for a in coco["annotations"]])  # [n, 4] xywh
        assert (b[:, :2] >= 0).all() and (b[:, 0] + b[:, 2] <= 128).all() and (b[:, 1] + b[:, 3] <= 128).all()
        long_side = b[:, 2:].max(1)
        assert long_side.min() >= 12 and long_side.max() <= 52
        meta = load_metadata(os.path.join(shapes_dataset, split))
        assert meta["images"] == n and meta["boxes"] == len(coco["annotations"])
        assert [(c["index"], c["id"]) for c in meta["categories"]] == [(0, 1), (1, 2), (2, 3)]
        assert all(os.path.exists(s) for s in meta["shards"])


def test_same_seed_same_dataset_other_seed_differs(tmp_path, shapes_dataset):
    path = shapes.write_split(str(tmp_path / "a"), "val", 8, (128, 128), seed=0)
    assert open(path).read() == open(os.path.join(shapes_dataset, "instances_val.json")).read()
    same = open(tmp_path / "a" / "images" / "val" / "000003.jpg", "rb").read()
    assert same == open(os.path.join(shapes_dataset, "images", "val", "000003.jpg"), "rb").read()
    other = shapes.write_split(str(tmp_path / "b"), "val", 8, (128, 128), seed=1)
    assert json.load(open(other))["annotations"] != json.load(open(path))["annotations"]


def test_objects_scale_with_the_short_side_and_stay_inside():
    counts, categories = [], set()
    for i in range(20):
        image, objects = shapes.draw_image(np.random.default_rng([5, i]), (96, 160))
        assert image.size == (160, 96)
        counts.append(len(objects))
        for obj in objects:
            x, y, w, h = obj["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 160 and y + h <= 96
            assert 0.1 * 96 - 1 <= max(w, h) <= 0.4 * 96 + 1
            categories.add(obj["category_id"])
    assert min(counts) >= 1 and max(counts) <= 5 and categories == {1, 2, 3}


@pytest.mark.parametrize("text, hw", [("128", (128, 128)), ("640x480", (480, 640)), ("64X32", (32, 64))])
def test_parse_size(text, hw):
    assert shapes.parse_size(text) == hw


@pytest.mark.parametrize("text", ["12", "axb", "1x2x3", ""])
def test_parse_size_errors(text):
    with pytest.raises(ConfigError, match="--size"):
        shapes.parse_size(text)
