import json
import os

import numpy as np
import tensorflow as tf

from centernet_core.inference import coco_eval
from centernet_core import config as config_lib
from centernet_core.data import augment
from centernet_core.tasks.detection import DetectionTask
from centernet_core.data.coco_writer import write_coco_tfrecords
from centernet_core.data.metadata import index_to_coco_id, load_metadata
from centernet_core.data.pipeline import build_dataset
from centernet_core.inference.detect import detect
from centernet_core.data.shapes import make_shapes_dataset


def _cfg(*overrides):
    return config_lib.resolve("shapes-tiny", None, None, ["data.deterministic=true", *overrides])


def _first(ds):
    f, t = next(iter(ds))
    return {k: v.numpy() for k, v in f.items()}, {k: v.numpy() for k, v in t.items()}


def _normalised(features):
    """The model's input for a batch of numpy features (training batches are normalised here)."""
    return augment.model_input({k: tf.constant(v) for k, v in features.items()}).numpy()


def test_train_batch_contract_and_determinism(shapes_dataset):
    cfg = _cfg()
    pattern = os.path.join(shapes_dataset, "train-*.tfrecord")
    f, t = _first(build_dataset(pattern, cfg, True, batch_size=4))
    assert f["image"].shape == (4, 128, 128, 3) and f["image"].dtype == np.uint8
    assert f["colour_transform"].shape == (4, 4, 3) and f["content"].shape == (4, 4)
    model_input = _normalised(f)
    assert model_input.dtype == np.float32 and np.abs(model_input).max() < 4
    assert t["heatmap"].shape == (4, 32, 32, 3) and t["size"].shape == (4, 32, 2)
    assert t["indices"].dtype == np.int32 and t["mask"].shape == (4, 32)
    assert f["skipped_records"].tolist() == [0, 0, 0, 0] and f["dropped_objects"].tolist() == [0, 0, 0, 0]
    for b in range(4):  # every training row is a heatmap peak of value 1, padded rows index 0
        rows = t["mask"][b] > 0
        assert rows.sum() >= 1
        peaks = t["heatmap"][b].reshape(-1, 3).max(-1)[t["indices"][b][rows]]
        np.testing.assert_allclose(peaks, 1.0)
        assert (t["indices"][b][~rows] == 0).all()
    f2, t2 = _first(build_dataset(pattern, cfg, True, batch_size=4))
    np.testing.assert_array_equal(f["image"], f2["image"])
    np.testing.assert_array_equal(t["heatmap"], t2["heatmap"])
    # a run resumed at step 8 draws another (reproducible) sequence instead of replaying step 0's
    resumed = [_first(build_dataset(pattern, cfg, True, batch_size=4, start_step=8))[0]["image"] for _ in range(2)]
    np.testing.assert_array_equal(resumed[0], resumed[1])
    assert not np.allclose(resumed[0], f["image"])


def test_config_fields_change_behaviour(shapes_dataset):
    pattern = os.path.join(shapes_dataset, "train-*.tfrecord")
    plain = ["data.crop_scales=[1.0]", "data.random_flip=false", "data.color_jitter=false", "data.shuffle_buffer=1"]
    cfg = _cfg(*plain)
    # square images, one crop scale of 1.0, no flip or jitter: training sees the eval image
    ft, tt = _first(build_dataset(pattern, cfg, True, batch_size=2))
    fe, te = _first(build_dataset(pattern, cfg, False, batch_size=24))
    train_input = _normalised(ft)
    for k in range(2):  # each training image equals the eval image of the same record (up to uint8 rounding)
        match = [n for n in range(24) if np.allclose(train_input[k], fe["image"][n], atol=0.5 / 255 / 0.27 + 1e-4)]
        assert len(match) == 1
        np.testing.assert_allclose(tt["heatmap"][k], te["heatmap"][match[0]], atol=1e-6)
    base = _normalised(_first(build_dataset(pattern, cfg, True, batch_size=8))[0])
    for change in ("data.random_flip=true", "data.color_jitter=true", "data.crop_scales=0.6,1.3"):
        changed = _normalised(_first(build_dataset(pattern, _cfg(*plain, change), True, batch_size=8))[0])
        assert not np.allclose(changed, base), change
    # data.min_overlap: the CornerNet radius grows as the overlap asked for shrinks; peaks stay put
    heat = {v: _first(build_dataset(pattern, _cfg(*plain, f"data.min_overlap={v}"), False, batch_size=24))[1]["heatmap"]
            for v in (0.7, 0.3)}
    np.testing.assert_array_equal(heat[0.7] == 1.0, heat[0.3] == 1.0)
    assert (heat[0.3] > 0).sum() > (heat[0.7] > 0).sum()
    assert (heat[0.3] >= heat[0.7]).all()
    f, t = _first(build_dataset(pattern, _cfg(*plain, "data.max_objects=1"), False, batch_size=24))
    per_image = _objects_per_image(shapes_dataset, "train")
    want = {sid: len(per_image[sid]) - 1 for sid in per_image}
    assert dict(zip(f["source_id"].tolist(), f["dropped_objects"].tolist())) == want
    assert t["mask"].shape == (24, 1) and (f["gt_count"] == 1).all()


def _objects_per_image(root, split):
    data = json.load(open(os.path.join(root, f"instances_{split}.json")))
    out = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        out[a["image_id"]].append(a)
    return out


def _near_perfect_heads(t):
    """Targets -> a stand-in model whose head maps are what a perfect model would output.

    The heatmap target becomes logits (clipped off 0 and 1); size and offset rows are
    scattered into ``[B, H, W, 2]`` maps at their centre indices.
    """
    p = np.clip(t["heatmap"], 1e-6, 1.0 - 1e-6)
    b, h, w, _ = p.shape
    maps = {k: np.zeros((b, h * w, 2), np.float32) for k in ("size", "offset")}
    for i in range(b):
        rows = t["mask"][i] > 0
        assert len(set(t["indices"][i][rows])) == rows.sum(), "two objects share a centre cell: pick another seed"
        for k in maps:
            maps[k][i, t["indices"][i][rows]] = t[k][i][rows]
    heads = {"heatmap": (np.log(p) - np.log1p(-p)).astype(np.float32),
             **{k: v.reshape(b, h, w, 2) for k, v in maps.items()}}
    return lambda images, training=False: [{k: tf.constant(v) for k, v in heads.items()}]


def test_coco_json_through_encode_decode_back_to_coco_json(tmp_path):
    """STYLE rule 3: json boxes -> records -> eval pipeline targets -> detect -> COCO results json.

    Everything after the targets is the production path of ``evaluate``: ``detect`` (decode,
    to_original) and ``coco_eval.detections_to_results`` with ids from the metadata file.
    """
    root = str(tmp_path / "wide")
    make_shapes_dataset(root, train=1, val=6, size="100x72", seed=3)
    data = json.load(open(os.path.join(root, "instances_val.json")))
    new_id = {1: 90, 2: 5, 3: 17}  # gaps and another order: training index is not id - 1
    for item, key in [(c, "id") for c in data["categories"]] + [(a, "category_id") for a in data["annotations"]]:
        item[key] = new_id[item[key]]
    (tmp_path / "gapped.json").write_text(json.dumps(data))
    prefix = os.path.join(root, "gapped")
    write_coco_tfrecords(os.path.join(root, "images", "val"), str(tmp_path / "gapped.json"), prefix)
    meta = load_metadata(prefix)
    category_ids = [index_to_coco_id(meta)[i] for i in range(len(meta["categories"]))]
    assert category_ids == [5, 17, 90]

    cfg = _cfg("model.input_size=96")
    f, t = _first(build_dataset(prefix + "-*.tfrecord", cfg, False, batch_size=6))
    np.testing.assert_allclose(f["scale"], 96 / 100)
    np.testing.assert_allclose(f["original_hw"], [[72, 100]] * 6)
    assert (f["image"][:, 70:] == 0).all()  # padding at the bottom (72 * 0.96 = 69.1)
    det = {k: v.numpy() for k, v in detect(_near_perfect_heads(t), DetectionTask(num_classes=3), tf.constant(f["image"]), f["scale"],
                                           f["original_hw"], max_detections=32,
                                           score_threshold=0.5).items()}
    results = coco_eval.detections_to_results(f["source_id"], det["boxes_yxyx_abs"], det["scores"], det["classes"],
                                              det["num_detections"], category_ids)
    assert sorted({r["image_id"] for r in results}) == sorted(im["id"] for im in data["images"])
    assert len(results) == len(data["annotations"]) and min(r["score"] for r in results) > 0.999

    def key(a):
        return a["image_id"], a["category_id"], a["bbox"][1], a["bbox"][0]
    for got, want in zip(sorted(results, key=key), sorted(data["annotations"], key=key), strict=True):
        assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
        np.testing.assert_allclose(got["bbox"], want["bbox"], atol=0.01)  # the results json rounds to 0.01 px


def test_bad_records_are_skipped_and_counted(tmp_path, shapes_dataset):
    good = list(tf.data.TFRecordDataset(os.path.join(shapes_dataset, "val-00000-of-00001.tfrecord")).take(3))
    ex = tf.train.Example.FromString(good[0].numpy())
    not_image, garbage_jpeg = tf.train.Example(), tf.train.Example()
    not_image.CopyFrom(ex)
    not_image.features.feature["image/encoded"].bytes_list.value[:] = [b"plain text"]
    garbage_jpeg.CopyFrom(ex)
    garbage_jpeg.features.feature["image/encoded"].bytes_list.value[:] = [b"\xff\xd8\xff" + b"\x00" * 50]
    path = str(tmp_path / "mixed-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for r in (good[0].numpy(), not_image.SerializeToString(), good[1].numpy(),
                  garbage_jpeg.SerializeToString(), good[2].numpy()):
            w.write(r)
    f, _ = _first(build_dataset(path, _cfg(), False, batch_size=8))
    assert f["image"].shape[0] == 3  # two bad records dropped, no crash
    assert f["skipped_records"].tolist() == [0, 1, 1]  # the bad-format record is counted


def test_input_context_shards_records(shapes_dataset):
    pattern = os.path.join(shapes_dataset, "val-*.tfrecord")
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2)
        ds = build_dataset(pattern, _cfg("runtime.global_batch_size=8"), False, input_context=ctx)
        seen.append(sorted(int(s) for f, _ in ds for s in f["source_id"].numpy()))
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(1, 9))
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0, num_replicas_in_sync=2)
    train = build_dataset(os.path.join(shapes_dataset, "train-*.tfrecord"), _cfg("runtime.global_batch_size=8"),
                          True, input_context=ctx)
    assert _first(train)[0]["image"].shape[0] == 4  # per-replica share of the global batch


def test_resample_identity_and_box_mapping():
    image = tf.constant(np.arange(1, 2 * 3 * 3 + 1, dtype=np.float32).reshape(2, 3, 3))
    out = augment.resample(image, tf.constant(0.0), tf.constant(0.0), tf.constant(1.0), 4).numpy()
    np.testing.assert_allclose(out[:2, :3], image.numpy())
    assert (out[2:] == 0).all() and (out[:, 3] == 0).all()  # padding at the bottom / right
    half = augment.resample(image, tf.constant(0.0), tf.constant(1.0), tf.constant(2.0), 4).numpy()
    # channel 0 is 1 + 3 * (3 y + x), linear, so bilinear samples are exact: output (1, 1) and
    # (1, 2) sample source (y, x) = ((1.5) / 2 - 0.5, (1.5) / 2 - 0.5 + 1) = (0.25, 1.25), (0.25, 1.75)
    np.testing.assert_allclose(half[1, 1:3, 0], [1 + 3 * (0.75 + 1.25), 1 + 3 * (0.75 + 1.75)], rtol=1e-6)
    # window top 5, left 10, scale 0.5: y -> (y - 5) * 0.5, x -> (x - 10) * 0.5
    b = augment.transform_boxes(tf.constant([[10.0, 20.0, 30.0, 60.0]]), tf.constant([0.5, 0.5, -2.5, -5.0]), 64)
    np.testing.assert_allclose(b.numpy(), [[2.5, 5.0, 12.5, 25.0]])
    np.testing.assert_allclose(augment.flip_boxes(b, 64).numpy(), [[2.5, 39.0, 12.5, 59.0]])


def test_normalize_batch_equals_per_image_normalisation_and_keeps_padding_zero():
    images = np.random.default_rng(0).integers(0, 256, (2, 6, 6, 3)).astype(np.uint8)
    colour, contrast = augment.color_jitter_params(tf.constant([0.1, 0.9, 0.3, 0.7]))
    mean = tf.constant([90.0, 100.0, 110.0])
    transforms = tf.stack([augment.colour_transform(colour, contrast, mean), augment.colour_transform()])
    content = tf.constant([[1, 2, 3, 4], [0, 0, 6, 6]])  # (top, left, height, width)
    out = augment.normalize_batch(tf.constant(images), transforms, content).numpy()
    jittered = augment.normalize_bgr(images[0], colour, contrast, mean).numpy()
    np.testing.assert_allclose(out[0, 1:4, 2:6], jittered[1:4, 2:6], atol=1e-5)
    inside = np.zeros((6, 6), bool)
    inside[1:4, 2:6] = True
    assert (out[0][~inside] == 0).all()  # padding is the mean colour whatever the jitter
    np.testing.assert_allclose(out[1], augment.normalize_bgr(images[1]).numpy(), atol=1e-5)
    np.testing.assert_array_equal(augment.model_input({"image": tf.constant(out)}).numpy(), out)  # float: as is
