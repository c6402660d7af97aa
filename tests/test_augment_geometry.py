"""Training augmentation keeps pixels and targets together (flip, crop scales, non-square images).

A tiny COCO set of solid-colour rectangles on grey, one colour per class, non-square images,
one JPEG (decoded with ``decode_and_crop_jpeg``) and PNGs (decoded whole and sliced), goes
through ``write_coco_tfrecords`` and the *training* pipeline with colour jitter off. In
every augmented uint8 image each target must sit on its object: the heatmap is 1 at the
encoded centre cell for that object's class, the pixel at the encoded centre
(``indices * stride + offset``) has the object's colour, and the encoded box (centre +- size
/ 2) is the bounding box of that colour's pixels. A flipped image with unflipped boxes, a
wrong sign in the crop offset or swapped x / y all break it.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from centernet_core import config as config_lib
from centernet_core.data.coco_writer import write_coco_tfrecords
from centernet_core.data.pipeline import build_dataset
from centernet_core.strides import OUTPUT_STRIDE

GREY = (128, 128, 128)
# class index -> colour (COCO category id = index + 1); far apart in every channel pair
COLOURS = [(230, 20, 20), (20, 200, 20), (20, 20, 230), (240, 230, 20), (230, 20, 230), (20, 220, 230)]
# (file, width, height, [(class, x0, y0, x1, y1)]): no two alike under a mirror or a transpose
IMAGES = [
    ("wide.jpg", 120, 80, [(0, 10, 8, 40, 30), (1, 70, 20, 112, 62), (2, 45, 45, 62, 76)]),
    ("tall.png", 64, 112, [(3, 5, 10, 30, 40), (4, 20, 60, 58, 102), (5, 36, 4, 60, 26)]),
    ("flat.png", 128, 48, [(1, 4, 6, 50, 20), (5, 80, 24, 124, 44)]),
]
SIZE = 128
TOLERANCE = 50  # per channel, for "this pixel has that colour" (JPEG, bilinear edges)


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    root = tmp_path_factory.mktemp("geometry")
    images, annotations = [], []
    for image_id, (name, w, h, objects) in enumerate(IMAGES, 1):
        picture = Image.new("RGB", (w, h), GREY)
        draw = ImageDraw.Draw(picture)
        for cls, x0, y0, x1, y1 in objects:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=COLOURS[cls])  # PIL's corners are inclusive
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        options = {"quality": 95, "subsampling": 0} if name.endswith(".jpg") else {}
        picture.save(root / name, **options)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    categories = [{"id": i + 1, "name": f"c{i}"} for i in range(len(COLOURS))]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": categories}))
    write_coco_tfrecords(str(root), str(root / "instances.json"), str(root / "geo"))
    return str(root / "geo-*.tfrecord")


def _batch(pattern, *overrides, batch=24):
    cfg = config_lib.resolve("shapes-tiny", overrides=[
        "data.deterministic=true", "data.color_jitter=false", "data.random_flip=true", "data.shuffle_buffer=4",
        f"model.input_size={SIZE}", f"model.num_classes={len(COLOURS)}", *overrides])
    features, targets = next(iter(build_dataset(pattern, cfg, True, batch_size=batch)))
    return features["image"].numpy(), {k: v.numpy() for k, v in targets.items()}


def _has_colour(pixels, cls):
    return np.abs(pixels.astype(int) - np.array(COLOURS[cls])).max(-1) < TOLERANCE


def _check_targets_sit_on_their_objects(image, t, b, tiles=((0, 0, SIZE),)):
    """Every target row of image ``b`` on its object; every visible object has a row.

    ``tiles``: (top, left, side) squares that each hold one source image (the whole input,
    or a mosaic's four): a row belongs to the tile its centre is in, and its class's pixels
    are looked for in that tile alone (two tiles may show the same class).
    """
    stride, width = OUTPUT_STRIDE, t["heatmap"].shape[2]
    found = {tile: set() for tile in tiles}
    for k in np.flatnonzero(t["mask"][b] > 0):
        iy, ix = divmod(int(t["indices"][b, k]), width)
        peak = np.flatnonzero(t["heatmap"][b, iy, ix] == 1.0)
        assert len(peak) == 1, f"image {b} row {k}: no single class peaks at its centre"
        cls = int(peak[0])
        cy, cx = (np.array([iy, ix]) + t["offset"][b, k]) * stride
        h, w = t["size"][b, k] * stride
        tile = next(tile for tile in tiles if tile[0] <= cy < tile[0] + tile[2] and tile[1] <= cx < tile[1] + tile[2])
        found[tile].add(cls)
        if min(h, w) >= 3:  # a sliver left by the crop has no clean interior pixel
            assert _has_colour(image[int(cy), int(cx)], cls), \
                f"image {b}: class {cls}'s centre ({cy:.1f}, {cx:.1f}) is on {image[int(cy), int(cx)]}"
        top, left, side = tile
        ys, xs = np.nonzero(_has_colour(image[top:top + side, left:left + side], cls))
        assert len(ys), f"image {b}: class {cls} has a target but no pixels"
        pixel_box = [top + ys.min(), left + xs.min(), top + ys.max() + 1, left + xs.max() + 1]
        np.testing.assert_allclose([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], pixel_box, atol=2.5,
                                   err_msg=f"image {b}, class {cls}: encoded box vs its pixels")
    for (top, left, side), classes in found.items():
        for cls in set(range(len(COLOURS))) - classes:
            visible = _has_colour(image[top:top + side, left:left + side], cls).sum()
            assert visible < 12, f"image {b}: class {cls} is visible in tile {top, left} but has no target"


@pytest.mark.parametrize("scales", ["0.6", "1.3", "0.6,1.3"])
def test_targets_sit_on_their_objects_after_flip_and_crop(pattern, scales):
    images, t = _batch(pattern, f"data.crop_scales={scales}")
    for b in range(len(images)):
        _check_targets_sit_on_their_objects(images[b], t, b)
    # the batch exercises the geometry: some objects end up mirrored, some clipped by the crop
    assert t["mask"].sum() >= 2 * len(images)


def test_geometry_check_sees_mirrored_images(pattern):
    """With random_flip the batch holds mirrored images (else the flip cases above test nothing)."""
    images, _ = _batch(pattern, "data.crop_scales=1.3")
    plain, _ = _batch(pattern, "data.crop_scales=1.3", "data.random_flip=false")
    mirrored = [b for b in range(len(images)) if not np.array_equal(images[b], plain[b])]
    assert 0 < len(mirrored) < len(images)


def test_mosaic_targets_sit_on_their_objects_in_every_tile(pattern):
    """data.mosaic=1: each input is four augmented images at half size in a 2x2 grid; every
    target sits on its object in its tile (a tile offset, a scale or a flip applied to the
    wrong record breaks it), and the batch uses all four tiles."""
    images, t = _batch(pattern, "data.mosaic=1.0", "data.crop_scales=0.6,1.3")
    half = SIZE // 2
    tiles = [(0, 0, half), (0, half, half), (half, 0, half), (half, half, half)]
    for b in range(len(images)):
        _check_targets_sit_on_their_objects(images[b], t, b, tiles)
    centres = t["indices"][t["mask"] > 0]
    rows, cols = np.divmod(centres, t["heatmap"].shape[2])
    assert {(bool(y >= half // OUTPUT_STRIDE), bool(x >= half // OUTPUT_STRIDE)) for y, x in zip(rows, cols)} == \
        {(False, False), (False, True), (True, False), (True, True)}
    assert t["mask"].sum() >= 4 * len(images)


def test_mosaic_fraction_mixes_mosaics_and_single_images(pattern):
    """data.mosaic=0.5: some inputs are mosaics, the others single images, each with its
    targets on its objects."""
    from centernet_core.data.pipeline import mosaic_group_probability

    q = mosaic_group_probability(0.5)
    assert q / (q + 4 * (1 - q)) == pytest.approx(0.5)
    images, t = _batch(pattern, "data.mosaic=0.5", "data.crop_scales=1.0", batch=48)
    # every picture is non-square, so a single image at crop scale 1 has padding, uint8 0 (the
    # content box makes it the mean colour later); a mosaic's tile padding is the mean colour itself
    is_single = [bool((im == 0).all(-1).any()) for im in images]
    assert 0 < sum(is_single) < len(images)
    half = SIZE // 2
    for b, single in enumerate(is_single):
        tiles = [(0, 0, SIZE)] if single else [(0, 0, half), (0, half, half), (half, 0, half), (half, half, half)]
        _check_targets_sit_on_their_objects(images[b], t, b, tiles)


def test_mosaic_is_deterministic_and_counts_the_objects_it_drops(pattern):
    """With data.deterministic two builds give the same mosaics; with max_objects=2 each
    mosaic keeps 2 objects and reports the rest of its four pictures' (2 or 3 each) as dropped."""
    from centernet_core.data.pipeline import build_dataset

    overrides = ["data.deterministic=true", "data.color_jitter=false", "data.shuffle_buffer=4",
                 f"model.input_size={SIZE}", f"model.num_classes={len(COLOURS)}", "data.crop_scales=1.3"]
    mixed = config_lib.resolve("shapes-tiny", overrides=overrides + ["data.mosaic=0.5"])
    (f1, t1), (f2, t2) = (next(iter(build_dataset(pattern, mixed, True, batch_size=12))) for _ in range(2))
    np.testing.assert_array_equal(f1["image"].numpy(), f2["image"].numpy())
    np.testing.assert_array_equal(t1["heatmap"].numpy(), t2["heatmap"].numpy())
    cfg = config_lib.resolve("shapes-tiny", overrides=overrides + ["data.mosaic=1.0", "data.max_objects=2"])
    f1, t1 = next(iter(build_dataset(pattern, cfg, True, batch_size=12)))
    dropped = f1["dropped_objects"].numpy()
    assert (t1["mask"].numpy().sum(1) <= 2).all()
    assert ((dropped >= 4 * 2 - 2) & (dropped <= 4 * 3 - 2)).all(), dropped
    assert dropped.max() > 4 * 2 - 2, "no mosaic held a three-object picture's third object in its count"
