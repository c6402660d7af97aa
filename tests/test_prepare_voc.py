"""`prepare voc`: VOC XML -> the same records as the equivalent COCO json through `prepare coco`."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from centernet_core.data import voc
from centernet_core.data.coco_json import validate_coco
from centernet_core.data.coco_writer import write_coco_tfrecords
from centernet_core.errors import ConfigError, DataError
from test_prepare_coco import _records

SIZES = {"a": (64, 48), "b": (40, 30), "c": (50, 20)}  # (width, height), none square


def _object(name, box, difficult=None):
    diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name>{diff}<bndbox>{coords}</bndbox></object>"


XML = {  # the quirks: 1-based corners, difficult, no <size>, fractional corners, a box leaving the image
    "a": "<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height><depth>3</depth></size>"
         + _object("dog", (9, 5, 24, 16), 0) + _object("cat", (1, 1, 64, 48), 1) + _object("zebra", (57, 41, 76, 60))
         + "</annotation>",
    "b": "<annotation><filename>b.jpg</filename>" + _object("zebra", (2.5, 3.25, 12.5, 20.75)) + "</annotation>",
    "c": "<annotation><filename>c.jpg</filename><size><width>50</width><height>20</height></size></annotation>",
}
# The same dataset written by hand as COCO: bbox = [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1],
# difficult = crowd, image ids in list order (trainval.txt: b, a, c), categories by sorted name.
COCO = {
    "images": [{"id": 1, "file_name": "b.jpg"}, {"id": 2, "file_name": "a.jpg", "height": 48, "width": 64},
               {"id": 3, "file_name": "c.jpg", "height": 20, "width": 50}],
    "annotations": [{"id": 1, "image_id": 2, "category_id": 2, "bbox": [8, 4, 16, 12]},
                    {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1},
                    {"id": 3, "image_id": 2, "category_id": 3, "bbox": [56, 40, 20, 20]},
                    {"id": 4, "image_id": 1, "category_id": 3, "bbox": [1.5, 2.25, 11.0, 18.5]}],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "zebra"}],
}


def write_jpegs(folder, sizes):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(folder, f"{stem}.jpg"))


@pytest.fixture()
def voc_root(tmp_path):
    root = tmp_path / "VOC"
    write_jpegs(root / "JPEGImages", SIZES)
    (root / "Annotations").mkdir()
    for stem, xml in XML.items():
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("b\na\nc\n")
    return str(root)


def coco_records(tmp_path, images_dir, coco, name="coco"):
    """Records of ``coco`` written through `prepare coco`'s json path."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(coco))
    write_coco_tfrecords(images_dir, str(path), str(tmp_path / name / "ds"))
    return _records(str(tmp_path / name / "ds-*.tfrecord"))


def assert_same_records(got, want):
    assert sorted(got) == sorted(want)
    for sid in want:
        assert sorted(got[sid]) == sorted(want[sid])
        for key, value in want[sid].items():
            np.testing.assert_array_equal(got[sid][key], value, err_msg=f"image {sid}: {key}")


def test_voc_root_matches_coco_json(tmp_path, voc_root):
    files = voc.voc_root_files(voc_root, "trainval")[1]
    index = validate_coco(voc.voc_to_coco(files), source="voc")
    summary = write_coco_tfrecords(os.path.join(voc_root, "JPEGImages"), index, str(tmp_path / "voc" / "ds"))
    c = summary["counts"]
    assert (c["images"], c["negatives"], c["boxes"], c["crowd"], c["clipped"]) == (3, 1, 4, 1, 1)
    assert c["size_mismatch"] == 0 and summary["categories"][0] == {"index": 0, "id": 1, "name": "cat"}
    got = _records(str(tmp_path / "voc" / "ds-*.tfrecord"))
    assert_same_records(got, coco_records(tmp_path, os.path.join(voc_root, "JPEGImages"), COCO))
    a = got[2]  # values by hand: 64 x 48, dog pixels 9..24 x 5..16 -> [4, 8, 16, 24] / (48, 64)
    np.testing.assert_allclose([a[f"image/object/bbox/{k}"][0] for k in ("ymin", "xmin", "ymax", "xmax")],
                               [4 / 48, 8 / 64, 16 / 48, 24 / 64], rtol=1e-6)
    assert a["image/object/is_crowd"].tolist() == [0, 1, 0]  # the difficult cat
    np.testing.assert_allclose(a["image/object/bbox/ymax"][2], 1.0)  # zebra clipped to the image
    np.testing.assert_allclose(got[1]["image/object/bbox/xmin"], [1.5 / 40], rtol=1e-6)  # fractional, no <size>
    assert (got[1]["image/height"], got[1]["image/width"]) == (30, 40)


def test_folders_and_classes_order_through_cli(tmp_path, voc_root, capsys):
    from centernet_cli.main import main

    images, xml = os.path.join(voc_root, "JPEGImages"), os.path.join(voc_root, "Annotations")
    main(["prepare", "voc", "--images", images, "--annotations", xml, "--classes", "zebra,dog,cat,bird",
          "--output", str(tmp_path / "voc" / "ds"), "--shards", "2", "--workers", "2"])
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "3 images (1 without boxes), 4 boxes (1 crowd)" in out
    assert "class 'bird' (id 4) has no boxes" in out  # the check summary follows every prepare
    coco = {  # files by name (a, b, c), categories in the order of --classes
        "images": [{"id": 1, "file_name": "a.jpg", "height": 48, "width": 64}, {"id": 2, "file_name": "b.jpg"},
                   {"id": 3, "file_name": "c.jpg", "height": 20, "width": 50}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [8, 4, 16, 12]},
                        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 64, 48], "iscrowd": 1},
                        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [56, 40, 20, 20]},
                        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [1.5, 2.25, 11.0, 18.5]}],
        "categories": [{"id": i, "name": n} for i, n in enumerate(["zebra", "dog", "cat", "bird"], 1)]}
    assert_same_records(_records(str(tmp_path / "voc" / "ds-*.tfrecord")), coco_records(tmp_path, images, coco))


@pytest.mark.parametrize("xml, message", [
    ("<annotation><object><name>dog</name></object></annotation>", r"^a.xml: object 1 \('dog'\) has no <bndbox>"),
    ("<annotation>" + _object("dog", (9, 5, "x", 16)) + "</annotation>",
     r"^a.xml: object 1 \('dog'\): <xmax> must be a number, got 'x'"),
    ("<annotation>" + _object("dog", (30, 5, 20, 16)) + "</annotation>", r"^a.xml: object 1 \('dog'\): max below min"),
    ("<annotation>" + _object("dog", (1, 1, 5, 5), 2) + "</annotation>", r"<difficult> must be 0 or 1"),
    ("<annotation><object>", r"^a.xml: not valid XML"),
])
def test_bad_annotation_is_one_line_and_writes_nothing(tmp_path, voc_root, xml, message):
    from centernet_cli.main import main

    (tmp_path / "VOC" / "Annotations" / "a.xml").write_text(xml)
    with pytest.raises(DataError, match=message) as e:
        voc.voc_to_coco(voc.voc_root_files(voc_root, "trainval")[1])
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        main(["prepare", "voc", "--root", voc_root, "--output", str(tmp_path / "out" / "ds")])
    assert e.value.code == 1 and not (tmp_path / "out").exists()


def test_missing_image_fails_whole_or_is_skipped(tmp_path, voc_root, capsys):
    from centernet_cli.main import main

    os.remove(os.path.join(voc_root, "JPEGImages", "c.jpg"))
    args = ["prepare", "voc", "--root", voc_root, "--output", str(tmp_path / "out" / "ds")]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 1 and not os.listdir(tmp_path / "out")
    assert "1 of 3 images are missing or undecodable: 'c.jpg'" in " ".join(capsys.readouterr().err.split())
    main(args + ["--skip-bad"])
    assert sorted(_records(str(tmp_path / "out" / "ds-*.tfrecord"))) == [1, 2]


def test_class_outside_classes_and_bad_layouts(tmp_path, voc_root):
    files = voc.voc_root_files(voc_root, "trainval")[1]
    with pytest.raises(DataError, match=r"^a.xml: object 1 has class 'dog', which is not in --classes \(cat, zebra\)"):
        voc.voc_to_coco(files, ["cat", "zebra"])
    with pytest.raises(DataError, match=r"no split list .*train.txt; pass --split with one of: trainval"):
        voc.voc_root_files(voc_root, "train")
    from centernet_cli.prepare import voc as voc_cmd

    with pytest.raises(ConfigError, match="either --root"):
        voc_cmd(output="x", root=voc_root, split="trainval", images="i", annotations=None, classes=None,
                shards=0, workers=1, skip_bad=False)
