"""`prepare check`: the writer's statistics and the findings on planted problems."""
import json
import os

import pytest

from centernet_core.data import check
from centernet_core.data.coco_writer import write_coco_tfrecords
from centernet_core.data.metadata import load_metadata
from test_prepare_voc import write_jpegs

# crowded.jpg (256 x 128): 8 one-pixel objects (half a cell at input 512: 1 px x 512/256 / 4)
# and 2 of 64 x 64 (32 cells); few.jpg (100 x 80): a 10 x 10 object (12.8 cells) and a crowd
# box; neg.jpg: nothing; class "empty": no boxes.
COCO = {
    "images": [{"id": 1, "file_name": "crowded.jpg"}, {"id": 2, "file_name": "few.jpg"},
               {"id": 3, "file_name": "neg.jpg"}],
    "annotations": [{"id": k, "image_id": 1, "category_id": 1, "bbox": [10 * k, 10, 1, 1]} for k in range(1, 9)]
    + [{"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 64]},
       {"id": 10, "image_id": 1, "category_id": 1, "bbox": [100, 50, 64, 64]},
       {"id": 11, "image_id": 2, "category_id": 2, "bbox": [5, 5, 10, 10]},
       {"id": 12, "image_id": 2, "category_id": 2, "bbox": [30, 30, 20, 20], "iscrowd": 1}],
    "categories": [{"id": 1, "name": "dot"}, {"id": 2, "name": "blob"}, {"id": 7, "name": "empty"}],
}


@pytest.fixture()
def dataset(tmp_path):
    images = tmp_path / "images"
    write_jpegs(images, {"crowded": (256, 128), "few": (100, 80), "neg": (50, 20)})
    (tmp_path / "ann.json").write_text(json.dumps(COCO))
    prefix = str(tmp_path / "out" / "ds")
    write_coco_tfrecords(str(images), str(tmp_path / "ann.json"), prefix, num_shards=2)
    return prefix


def test_writer_records_the_stats_and_the_shards_give_the_same(dataset):
    meta = load_metadata(dataset)
    stats = meta["stats"]
    assert stats["classes"] == [{"index": 0, "boxes": 10, "crowd": 0, "images": 1},
                                {"index": 1, "boxes": 1, "crowd": 1, "images": 1},
                                {"index": 2, "boxes": 0, "crowd": 0, "images": 0}]
    assert stats["boxes_per_image"] == {"0": 1, "2": 1, "10": 1}  # crowd counted: evaluation reads it
    assert [(m["file_name"], m["boxes"]) for m in stats["most_boxes"]] == [
        ("crowded.jpg", 10), ("few.jpg", 2), ("neg.jpg", 0)]
    # bins of 1/32 octave of sqrt(area) / long side: 1/256 -> -256, 64/256 -> -64, 10/100 -> floor(32 log2 0.1)
    assert stats["object_sizes"] == {"-256": 8, "-107": 1, "-64": 2}
    del meta["stats"]  # a dataset written before the stats: read back from the records
    assert check.load_stats(meta) == stats


def test_findings_on_planted_problems(dataset):
    meta = load_metadata(dataset)
    r = check.check_dataset(meta, meta["stats"], input_size=512, max_objects=8)
    assert r["sizes"] == [("<1", 8), ("1-2", 0), ("2-4", 0), ("4-8", 0), ("8-16", 1), ("16-32", 0), (">=32", 2)]
    assert [c["boxes"] for c in r["classes"]] == [10, 1, 0] and r["classes"][2]["id"] == 7
    assert r["summary"]["negatives"] == 1 and r["summary"]["boxes_per_image_max"] == 10
    found = {key: next(f for f in r["findings"] if key in f[1])
             for key in ("max_objects", "output cell", "'empty'", "imbalance", "no boxes (kept")}
    assert len(r["findings"]) == 5
    assert found["max_objects"] == ("error", "1 images have more than data.max_objects=8 boxes (most: 'crowded.jpg' "
                                        "(10)); training stops on them: --set data.max_objects=10")
    assert found["output cell"] == ("warning",
        "73% of the objects (8) are smaller than one output cell (4 px) at input size 512; "
        "--set model.input_size=1024 puts 100% of the objects at one cell or more")
    assert found["no boxes (kept"] == ("info", "1 of 3 images have no boxes (kept as negatives)")
    assert found["'empty'"][0] == "warning" and "has no boxes" in found["'empty'"][1]
    assert found["imbalance"] == ("warning", "class imbalance 10:1 ('dot' 10 boxes, 'blob' 1); expect a lower "
                                             "AP on 'blob': add examples of the rare classes")
    # at 1024 px the dots are one cell; 128 objects per image leave room (a smaller K is offered)
    r = check.check_dataset(meta, meta["stats"], input_size=1024, max_objects=128)
    levels = {level for level, text in r["findings"] if "max_objects" in text or "output cell" in text}
    assert levels == {"info"} and r["sizes"][0] == ("<1", 0) and r["sizes"][1] == ("1-2", 8)


def test_sizes_between_bin_edges_are_interpolated():
    sizes = {"-256": 8}  # 8 objects in the bin [2^-8, 2^(-8 + 1/32))
    edge = 2 ** (-8 + 0.5 / 32)  # half-way through that bin
    assert check._below(sizes, edge) == pytest.approx(4.0)
    assert check._below(sizes, 2 ** -8) == 0 and check._below(sizes, 2 ** (-8 + 1 / 32)) == 8


def test_cli_check_exits_1_on_an_error(dataset, capsys):
    from centernet_cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["prepare", "check", dataset, "--max-objects", "8"])
    out = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 1 and "error: 1 images have more than data.max_objects=8" in out
    assert "dot" in out and "<1 8, 1-2 0" in out
    main(["prepare", "check", os.path.dirname(dataset) + "/ds-*.tfrecord", "--input-size", "1024"])
    out = " ".join(capsys.readouterr().out.split())
    assert "object size in output cells at input 1024: <1 0, 1-2 8" in out and "error" not in out
