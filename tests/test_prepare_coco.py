import copy
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from centernet_core.data import example_proto as ep
from centernet_core.data import tfrecord
from centernet_core.data.coco_writer import write_coco_tfrecords
from centernet_core.data.metadata import index_to_coco_id, load_metadata
from centernet_core.errors import DataError

CATS = [{"id": 90, "name": "zebra"}, {"id": 5, "name": "cat"}, {"id": 17, "name": "dog"}]  # unsorted, gaps


def _save(path, mode, size, fmt, **kw):
    colour = {"L": 128, "CMYK": (10, 200, 30, 5), "RGBA": (10, 20, 30, 255)}.get(mode, (200, 30, 60))
    Image.new(mode, size, colour).save(path, format=fmt, **kw)


@pytest.fixture()
def coco(tmp_path):
    """Six images covering the quirks; returns (images_dir, coco dict)."""
    d = tmp_path / "imgs"
    d.mkdir()
    _save(d / "plain.jpg", "RGB", (64, 48), "JPEG")
    _save(d / "gray.jpg", "L", (40, 30), "JPEG")
    _save(d / "cmyk.jpg", "CMYK", (32, 32), "JPEG")
    _save(d / "alpha.png", "RGBA", (50, 20), "PNG")
    _save(d / "old.bmp", "RGB", (30, 30), "BMP")
    _save(d / "ünï cødé 1.jpg", "RGB", (60, 40), "JPEG")  # spaces and non-ASCII
    images = [{"id": 10, "file_name": "plain.jpg", "height": 48, "width": 64},
              {"id": 11, "file_name": "gray.jpg", "height": 30, "width": 40},
              {"id": 12, "file_name": "cmyk.jpg", "height": 32, "width": 32},
              {"id": 13, "file_name": "alpha.png", "height": 99, "width": 99},  # wrong size in json
              {"id": 14, "file_name": "old.bmp", "height": 30, "width": 30},
              {"id": 15, "file_name": "ünï cødé 1.jpg", "height": 40, "width": 60}]  # no annotations
    anns = [{"id": 1, "image_id": 10, "category_id": 17, "bbox": [8, 4, 16, 12], "area": 150.0, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 5, "bbox": [0, 0, 64, 48], "iscrowd": 1},  # crowd
            {"id": 3, "image_id": 10, "category_id": 90, "bbox": [56, 40, 20, 20]},  # partly outside: clipped
            {"id": 4, "image_id": 11, "category_id": 5, "bbox": [5, 5, 0, 10]},  # zero width: dropped
            {"id": 5, "image_id": 11, "category_id": 90, "bbox": [50, 5, 10, 10]},  # outside: dropped
            {"id": 6, "image_id": 11, "category_id": 90, "bbox": [2, 3, 10, 20]},
            {"id": 7, "image_id": 12, "category_id": 5, "bbox": [1, 1, 10, 10]},
            {"id": 8, "image_id": 13, "category_id": 17, "bbox": [10, 5, 20, 10]},
            {"id": 9, "image_id": 14, "category_id": 5, "bbox": [0, 0, 30, 30]}]
    return str(d), {"images": images, "annotations": anns, "categories": CATS}


def _write_json(tmp_path, data, name="ann.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(p)


def _records(pattern):
    files = tf.io.gfile.glob(pattern)
    spec = {k: tf.io.VarLenFeature(t) for k, t in [
        ("image/object/bbox/ymin", tf.float32), ("image/object/bbox/xmin", tf.float32),
        ("image/object/bbox/ymax", tf.float32), ("image/object/bbox/xmax", tf.float32),
        ("image/object/class/label", tf.int64), ("image/object/class/text", tf.string),
        ("image/object/area", tf.float32), ("image/object/is_crowd", tf.int64)]}
    spec.update({k: tf.io.FixedLenFeature([], t) for k, t in [
        ("image/encoded", tf.string), ("image/format", tf.string), ("image/height", tf.int64),
        ("image/width", tf.int64), ("image/source_id", tf.string), ("image/filename", tf.string)]})
    out = {}
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(raw, spec)
        ex = {k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v).numpy() for k, v in ex.items()}
        out[int(ex["image/source_id"])] = ex
    return out


def test_quirks_counts_boxes_and_categories(tmp_path, coco):
    images_dir, data = coco
    summary = write_coco_tfrecords(images_dir, _write_json(tmp_path, data), str(tmp_path / "out" / "ds"), num_shards=2)
    c = summary["counts"]
    assert (c["images"], c["negatives"], c["boxes"], c["crowd"]) == (6, 1, 7, 1)
    assert (c["clipped"], c["dropped_empty"], c["reencoded"], c["size_mismatch"]) == (1, 2, 2, 1)
    # categories sorted by COCO id -> contiguous index, and back through the metadata file
    meta = load_metadata(str(tmp_path / "out" / "ds-*.tfrecord"))
    assert meta["categories"] == [{"index": 0, "id": 5, "name": "cat"}, {"index": 1, "id": 17, "name": "dog"},
                                  {"index": 2, "id": 90, "name": "zebra"}]
    assert index_to_coco_id(meta) == {0: 5, 1: 17, 2: 90}
    assert [os.path.basename(s) for s in meta["shards"]] == ["ds-00000-of-00002.tfrecord", "ds-00001-of-00002.tfrecord"]
    recs = _records(str(tmp_path / "out" / "ds-*.tfrecord"))
    assert sorted(recs) == [10, 11, 12, 13, 14, 15]
    r = recs[10]
    boxes = np.stack([r[f"image/object/bbox/{k}"] for k in ("ymin", "xmin", "ymax", "xmax")], -1)
    np.testing.assert_allclose(boxes, [[4 / 48, 8 / 64, 16 / 48, 24 / 64], [0, 0, 1, 1], [40 / 48, 56 / 64, 1, 1]],
                               rtol=1e-6)
    assert r["image/object/class/label"].tolist() == [1, 0, 2]
    assert r["image/object/class/text"].tolist() == [b"dog", b"cat", b"zebra"]
    assert r["image/object/is_crowd"].tolist() == [0, 1, 0]
    np.testing.assert_allclose(r["image/object/area"], [150.0, 64 * 48, 8 * 8])  # json area kept, else clipped
    assert r["image/format"] == b"jpeg" and r["image/encoded"] == open(os.path.join(images_dir, "plain.jpg"), "rb").read()
    assert recs[11]["image/object/class/label"].tolist() == [2]  # the two empty boxes are gone
    np.testing.assert_allclose(recs[11]["image/object/bbox/ymax"], [23 / 30], rtol=1e-6)
    for sid, fmt, hw in [(12, b"jpeg", (32, 32)), (13, b"png", (20, 50)), (14, b"jpeg", (30, 30)),
                         (11, b"jpeg", (30, 40))]:
        assert recs[sid]["image/format"] == fmt
        assert (recs[sid]["image/height"], recs[sid]["image/width"]) == hw  # decoded size, not the json's
        image = tf.io.decode_image(recs[sid]["image/encoded"], channels=3, expand_animations=False)
        assert tuple(image.shape) == hw + (3,)
    np.testing.assert_allclose(recs[13]["image/object/bbox/xmax"], [30 / 50], rtol=1e-6)
    assert recs[15]["image/filename"].decode("utf-8") == "ünï cødé 1.jpg"
    assert recs[15]["image/object/bbox/ymin"].size == 0
    report = json.load(open(summary["report"], encoding="utf-8"))
    assert report["size_mismatches"] == [{"file_name": "alpha.png", "image_id": 13, "json_hw": [99, 99],
                                          "decoded_hw": [20, 50]}]


def test_two_workers_write_the_same_bytes(tmp_path, coco):
    images_dir, data = coco
    ann = _write_json(tmp_path, data)
    write_coco_tfrecords(images_dir, ann, str(tmp_path / "a" / "ds"), num_shards=1, workers=1)
    write_coco_tfrecords(images_dir, ann, str(tmp_path / "b" / "ds"), num_shards=1, workers=2)
    name = "ds-00000-of-00001.tfrecord"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # several shards, each written by a worker: image i in shard i mod 4, in json order
    write_coco_tfrecords(images_dir, ann, str(tmp_path / "c" / "ds"), num_shards=4, workers=1)
    write_coco_tfrecords(images_dir, ann, str(tmp_path / "d" / "ds"), num_shards=4, workers=2)
    for i in range(4):
        name = f"ds-0000{i}-of-00004.tfrecord"
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "d" / name).read_bytes()
        ids = [int(tf.io.parse_single_example(r, {"image/source_id": tf.io.FixedLenFeature([], tf.string)})
                   ["image/source_id"]) for r in tf.data.TFRecordDataset(str(tmp_path / "d" / name))]
        assert ids == [im["id"] for im in data["images"][i::4]]
    assert sorted(os.listdir(tmp_path / "d")) == sorted(os.listdir(tmp_path / "c"))  # no temporary files left


def test_rewrite_with_fewer_shards_leaves_no_stale_shards(tmp_path, coco, monkeypatch):
    from centernet_core import storage

    images_dir, data = coco
    ann = _write_json(tmp_path, data)
    out = tmp_path / "out"
    write_coco_tfrecords(images_dir, ann, str(out / "ds"), num_shards=4)
    write_coco_tfrecords(images_dir, ann, str(out / "ds-extra"), num_shards=1)  # another dataset, same dir
    renames = []
    real_rename = storage.rename

    def rename(src, dst):  # is the old metadata still there while shards are being replaced?
        renames.append(os.path.exists(out / "ds.meta.json"))
        real_rename(src, dst)

    monkeypatch.setattr(storage, "rename", rename)
    summary = write_coco_tfrecords(images_dir, ann, str(out / "ds"), num_shards=2)
    assert renames[:2] == [False, False]  # the shard renames; the later ones are the json files
    assert sorted(p.name for p in out.glob("*.tfrecord")) == [
        "ds-00000-of-00002.tfrecord", "ds-00001-of-00002.tfrecord", "ds-extra-00000-of-00001.tfrecord"]
    assert sorted(_records(str(out / "ds-0*-of-*.tfrecord"))) == [10, 11, 12, 13, 14, 15]
    assert load_metadata(str(out / "ds"))["images"] == summary["images"] == 6


def test_tfrecord_framing_matches_tensorflow(tmp_path):
    records = [b"", b"x", bytes(range(256)) * 400, ep.serialize_example({"a": ep.int64_feature([1])})]
    ours, theirs = str(tmp_path / "ours.tfrecord"), str(tmp_path / "tf.tfrecord")
    w = tfrecord.open_writer(ours)
    for r in records:
        w.write(r)
    w.close()
    with tf.io.TFRecordWriter(theirs) as w:
        for r in records:
            w.write(r)
    assert open(ours, "rb").read() == open(theirs, "rb").read()
    assert [r.numpy() for r in tf.data.TFRecordDataset(ours)] == records
    assert tfrecord.masked_crc32c(b"123456789") == (((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8) % 2**32


def test_bad_images_fail_with_no_output_or_skip_with_report(tmp_path, coco):
    images_dir, data = coco
    data = copy.deepcopy(data)
    full = open(os.path.join(images_dir, "plain.jpg"), "rb").read()
    with open(os.path.join(images_dir, "truncated.jpg"), "wb") as f:
        f.write(full[: len(full) // 2])
    with open(os.path.join(images_dir, "text.jpg"), "wb") as f:
        f.write(b"not an image")
    with open(os.path.join(images_dir, "no_tables.jpg"), "wb") as f:  # header and EOI fine, data undecodable
        f.write(_strip_jpeg_segments(full, 0xDB))
    data["images"] += [{"id": 20, "file_name": "missing.jpg"}, {"id": 21, "file_name": "truncated.jpg"},
                       {"id": 22, "file_name": "text.jpg"}, {"id": 23, "file_name": "no_tables.jpg"}]
    ann = _write_json(tmp_path, data)
    out = tmp_path / "out"
    for workers in (1, 2):
        with pytest.raises(DataError, match=r"^4 of 10 images are missing or undecodable: 'missing.jpg'") as e:
            write_coco_tfrecords(images_dir, ann, str(out / "ds"), num_shards=2, workers=workers)
        assert "truncated.jpg" in str(e.value) and "--skip-bad" in str(e.value) and "\n" not in str(e.value)
        assert os.listdir(out) == []  # no shard, temporary file, report or metadata left behind
    summary = write_coco_tfrecords(images_dir, ann, str(out / "ds"), num_shards=2, skip_bad=True)
    assert summary["counts"]["images"] == 6 and summary["counts"]["skipped_images"] == 4
    report = json.load(open(summary["report"], encoding="utf-8"))
    reasons = {s["file_name"]: s["reason"] for s in report["skipped_images"]}
    assert set(reasons) == {"missing.jpg", "truncated.jpg", "text.jpg", "no_tables.jpg"}
    assert reasons["missing.jpg"].startswith("cannot read file")
    assert reasons["text.jpg"].startswith("not a decodable image")
    assert reasons["no_tables.jpg"].startswith("not a decodable image")
    assert sorted(_records(str(out / "ds-*.tfrecord"))) == [10, 11, 12, 13, 14, 15]


def _strip_jpeg_segments(data, marker):
    """``data`` without its JPEG header segments of type ``marker`` (0xDB: quantisation tables)."""
    out, i = bytearray(data[:2]), 2
    while data[i + 1] != 0xDA:  # up to the start of scan
        n = 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] != marker:
            out += data[i:i + n]
        i += n
    return bytes(out + data[i:])


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("categories"), r"missing top-level key 'categories'"),
    (lambda d: d["images"][1].pop("file_name"), r"images\[1\] \(id 11\) has no 'file_name' key"),
    (lambda d: d["annotations"][3].update(bbox=[1, 2, 3]),
     r"annotations\[3\] \(id 4\): 'bbox' must be 4 numbers \[x, y, width, height\], got \[1, 2, 3\]"),
    (lambda d: d["annotations"][0].update(image_id=777), r"annotations\[0\] \(id 1\) refers to image_id 777"),
    (lambda d: d["annotations"][2].update(category_id=1), r"annotations\[2\] \(id 3\) refers to category_id 1"),
    (lambda d: d["images"][4].update(id=10), r"images\[4\] repeats image id 10 of images\[0\]"),
])
def test_json_validation_errors_before_any_output(tmp_path, coco, mutate, message):
    images_dir, data = coco
    data = copy.deepcopy(data)
    mutate(data)
    with pytest.raises(DataError, match=message) as e:
        write_coco_tfrecords(images_dir, _write_json(tmp_path, data), str(tmp_path / "out" / "ds"))
    assert str(e.value).startswith("ann.json: ") and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_example_proto_parses_like_tf_train_example():
    raw = ep.serialize_example({"a": ep.bytes_feature([b"x\x00y", "ü"]), "b": ep.float_feature([1.5, -2.25]),
                                "c": ep.int64_feature([0, 300, -5]), "d": ep.float_feature([])})
    ex = tf.train.Example.FromString(raw)
    f = ex.features.feature
    assert list(f["a"].bytes_list.value) == [b"x\x00y", "ü".encode()]
    assert list(f["b"].float_list.value) == [1.5, -2.25]
    assert list(f["c"].int64_list.value) == [0, 300, -5]
    assert list(f["d"].float_list.value) == []
    assert raw == ex.SerializeToString(deterministic=True)


def test_cli_prints_one_line_error(tmp_path, coco, capsys):
    from centernet_cli.main import main

    images_dir, data = coco
    data["annotations"][0]["bbox"] = [1, 2]
    with pytest.raises(SystemExit) as e:
        main(["prepare", "coco", "--images", images_dir, "--annotations", _write_json(tmp_path, data),
              "--output", str(tmp_path / "o" / "ds")])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ann.json: annotations[0] (id 1)") and "Traceback" not in err
