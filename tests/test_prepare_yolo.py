"""`prepare yolo`: data.yaml + labels -> the same records as the equivalent COCO json through `prepare coco`."""
import os

import numpy as np
import pytest

from centernet_core.data import yolo
from centernet_core.data.coco_json import validate_coco
from centernet_core.data.coco_writer import write_coco_tfrecords
from centernet_core.errors import ConfigError, DataError
from test_prepare_coco import _records
from test_prepare_voc import assert_same_records, coco_records, write_jpegs

# Pixel boxes (x, y, w, h) per image (width x height), written below as normalised cx cy w h.
BOXES = {"a": ((64, 48), [(1, (8, 4, 16, 12)), (2, (56, 40, 20, 20))]),  # the second leaves the image
         "b": ((40, 30), [(0, (1.5, 2.25, 11.0, 18.5))]),
         "neg": ((50, 20), None)}  # no label file: a negative
# The same dataset as COCO: images sorted by path (ids 1..3), category id = class index + 1.
COCO = {
    "images": [{"id": 1, "file_name": "images/train/a.jpg"}, {"id": 2, "file_name": "images/train/b.jpg"},
               {"id": 3, "file_name": "images/train/neg.jpg"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [8, 4, 16, 12]},
                    {"id": 2, "image_id": 1, "category_id": 3, "bbox": [56, 40, 20, 20]},
                    {"id": 3, "image_id": 2, "category_id": 1, "bbox": [1.5, 2.25, 11.0, 18.5]}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "zebra"}],
}


def _line(k, box, wh):
    (x, y, w, h), (iw, ih) = box, wh
    return f"{k} {(x + w / 2) / iw!r} {(y + h / 2) / ih!r} {w / iw!r} {h / ih!r}"


@pytest.fixture()
def yolo_dir(tmp_path):
    root = tmp_path / "pets"
    write_jpegs(root / "images" / "train", {stem: wh for stem, (wh, _) in BOXES.items()})
    (root / "labels" / "train").mkdir(parents=True)
    for stem, (wh, boxes) in BOXES.items():
        if boxes is not None:
            lines = [_line(k, box, wh) for k, box in boxes]
            (root / "labels" / "train" / f"{stem}.txt").write_text("\n".join(lines[:1] + [""] + lines[1:]) + "\n")
    (root / "val.txt").write_text("images/train/b.jpg\n")
    (root / "data.yaml").write_text("train: images/train\nval: val.txt\nnames:\n  0: cat\n  1: dog\n  2: zebra\n")
    return root


def test_yolo_matches_coco_json(tmp_path, yolo_dir):
    root, coco = yolo.yolo_to_coco(str(yolo_dir / "data.yaml"), "train")
    assert root == str(yolo_dir)
    summary = write_coco_tfrecords(root, validate_coco(coco, source="yolo"), str(tmp_path / "yolo" / "ds"))
    c = summary["counts"]
    assert (c["images"], c["negatives"], c["boxes"], c["crowd"], c["clipped"]) == (3, 1, 3, 0, 1)
    got = _records(str(tmp_path / "yolo" / "ds-*.tfrecord"))
    assert_same_records(got, coco_records(tmp_path, root, COCO))
    a = got[1]  # by hand: 64 x 48, dog at x 8..24, y 4..16
    np.testing.assert_allclose([a[f"image/object/bbox/{k}"][0] for k in ("ymin", "xmin", "ymax", "xmax")],
                               [4 / 48, 8 / 64, 16 / 48, 24 / 64], rtol=1e-6)
    assert a["image/object/class/text"].tolist() == [b"dog", b"zebra"]
    assert got[3]["image/object/bbox/ymin"].size == 0  # the negative


def test_list_names_txt_split_and_cli(tmp_path, yolo_dir, capsys):
    from centernet_cli.main import main

    (yolo_dir / "data.yaml").write_text("path: .\ntrain: images/train\nval: val.txt\nnames: [cat, dog, zebra]\n")
    main(["prepare", "yolo", "--data", str(yolo_dir / "data.yaml"), "--split", "val",
          "--output", str(tmp_path / "yolo" / "val")])
    out = " ".join(capsys.readouterr().out.split())
    assert "1 images (0 without boxes), 1 boxes (0 crowd)" in out and "class 'dog' (id 2) has no boxes" in out
    coco = {"images": [{"id": 1, "file_name": "images/train/b.jpg"}], "annotations": [COCO["annotations"][2]],
            "categories": COCO["categories"]}
    coco["annotations"][0]["image_id"] = 1
    assert_same_records(_records(str(tmp_path / "yolo" / "val-*.tfrecord")),
                        coco_records(tmp_path, str(yolo_dir), coco))
    with pytest.raises(ConfigError, match="has no 'test' split; pass --split with one of: train, val"):
        yolo.yolo_to_coco(str(yolo_dir / "data.yaml"), "test")


@pytest.mark.parametrize("line, message", [
    ("7 0.5 0.5 0.1 0.1", r"/labels/train/a.txt:4: class index 7 is not in the names of data.yaml \(0..2\)"),
    ("1 0.5 0.5 0.1", r"/labels/train/a.txt:4: expected 5 values 'class cx cy w h', got 4"),
    ("1 0.5 half 0.1 0.1", r"/labels/train/a.txt:4: expected numbers"),
    ("1 0.5 0.5 -0.1 0.1", r"/labels/train/a.txt:4: cx cy w h must be finite with w, h >= 0"),
])
def test_bad_label_names_file_and_line_and_writes_nothing(tmp_path, yolo_dir, line, message):
    from centernet_cli.main import main

    with open(yolo_dir / "labels" / "train" / "a.txt", "a") as f:
        f.write(line + "\n")  # line 4 (line 2 is blank)
    with pytest.raises(DataError, match=message) as e:
        yolo.yolo_to_coco(str(yolo_dir / "data.yaml"), "train")
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        main(["prepare", "yolo", "--data", str(yolo_dir / "data.yaml"), "--output", str(tmp_path / "out" / "ds")])
    assert e.value.code == 1 and not (tmp_path / "out").exists()


def test_names_with_a_gap_and_label_paths(yolo_dir):
    (yolo_dir / "data.yaml").write_text("train: images/train\nnames: {0: cat, 2: zebra}\n")
    with pytest.raises(DataError, match=r"a.txt:1: class index 1 is not in the names"):
        yolo.yolo_to_coco(str(yolo_dir / "data.yaml"), "train")
    (yolo_dir / "labels" / "train" / "a.txt").write_text(_line(2, (8, 4, 16, 12), (64, 48)) + "\n")
    _, coco = yolo.yolo_to_coco(str(yolo_dir / "data.yaml"), "train")
    assert coco["categories"] == [{"id": 1, "name": "cat"}, {"id": 3, "name": "zebra"}]
    assert [a["category_id"] for a in coco["annotations"]] == [3, 1]
    assert yolo.label_path("/d/images/x/images/train/a.b.jpg") == "/d/images/x/labels/train/a.b.txt"
    assert yolo.label_path("/d/pics/a.png") == "/d/pics/a.txt"
