"""``data.augmentation: reference``: the original's crop rule, colour jitter and black padding.

The crop statistics are checked against the original's rule, written out here
(``ctdet.py``: ``s = max(h, w) * choice(arange(0.6, 1.4, 0.1))``, centre
``randint(border, size - border)`` per axis with ``_get_border(128, size)``), computed
exactly by enumerating every scale and centre, and compared with many draws of
``reference_crop_window`` within 4.5 standard errors.
"""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from centernet_core import config as config_lib
from centernet_core.data import augment, augment_reference
from centernet_core.data.augment_reference import reference_colour_transform
from centernet_core.pixels import MEAN_BGR, STD_BGR

SCALES = tuple(np.arange(0.6, 1.4, 0.1).round(1))  # the original's 8 crop scales
DRAWS = 20000


def get_border(border, size):
    """The original's ``_get_border``."""
    i = 1
    while size - border // i <= border // i:
        i *= 2
    return border // i


def rule_statistics(h, w):
    """Exact probabilities of the original's rule: (P(crop cuts the image), P(crop shows
    padding)); the window is the square of side s centred on the centre pixel."""
    cut = pad = 0.0
    for scale in SCALES:
        side = scale * max(h, w)
        axes = []
        for size in (h, w):
            b = get_border(128, size)
            centres = np.arange(b, size - b)  # randint(low, high): high excluded
            start = centres + 0.5 - side / 2
            end = start + side
            axes.append(((start > 0) | (end < size), (start < 0) | (end > size)))
        (cut_y, pad_y), (cut_x, pad_x) = axes
        cut += 1 - (1 - cut_y.mean()) * (1 - cut_x.mean())
        pad += 1 - (1 - pad_y.mean()) * (1 - pad_x.mean())
    return cut / len(SCALES), pad / len(SCALES)


def sample_windows(window_fn, h, w, seed=0):
    u = tf.constant(np.random.default_rng(seed).random((DRAWS, 3)), tf.float32)
    start, side = window_fn(u, tf.constant([h, w]), SCALES)
    return start.numpy(), side.numpy()[:, None]


def observed(start, side, h, w):
    size = np.array([h, w])
    end = start + side
    cut = ((start > 0) | (end < size)).any(1).mean()
    pad = ((start < 0) | (end > size)).any(1).mean()
    return cut, pad


@pytest.mark.parametrize("h,w", [(480, 640), (640, 480)])
def test_crop_statistics_match_the_originals_rule(h, w):
    start, side = sample_windows(augment_reference.reference_crop_window, h, w)
    cut, pad = observed(start, side, h, w)
    want_cut, want_pad = rule_statistics(h, w)
    for got, want in ((cut, want_cut), (pad, want_pad)):
        assert abs(got - want) <= 4.5 * np.sqrt(want * (1 - want) / DRAWS) + 1e-9, (got, want)
    assert 0.3 < want_pad < 1.0 and want_cut > 0.3  # the rule does cut and pad often
    # the centre: an integer pixel, uniform over [border, size - border) on each axis
    centre = start + side / 2 - 0.5
    np.testing.assert_allclose(centre, np.round(centre), atol=1e-3)
    for axis, size in enumerate((h, w)):
        b = get_border(128, size)
        values = np.round(centre[:, axis]).astype(int)
        assert values.min() >= b and values.max() <= size - b - 1
        bins = np.array_split(np.arange(b, size - b), 10)
        counts = np.array([np.isin(values, bin_).sum() for bin_ in bins])
        expected = DRAWS * np.array([len(bin_) for bin_ in bins]) / (size - 2 * b)
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 27.9, (axis, chi2, counts)  # chi-square, 9 degrees of freedom, p = 0.001
    # the scales: the 8 of the original, equally likely
    scales = side[:, 0] / max(h, w)
    np.testing.assert_allclose(sorted(set(scales.round(4))), SCALES, atol=1e-4)


@pytest.mark.parametrize("h,w", [(480, 640), (640, 480)])
def test_inside_rule_is_a_different_named_choice(h, w):
    def window(u, hw, scales):  # one draw at a time
        return tf.vectorized_map(lambda one: augment.random_crop_window(one, hw, scales), u)
    start, side = sample_windows(window, h, w)
    cut, pad = observed(start, side, h, w)
    want_cut, want_pad = rule_statistics(h, w)
    assert abs(pad - want_pad) > 0.1 or abs(cut - want_cut) > 0.1


def test_border_is_halved_until_it_fits():
    sizes = [1, 2, 3, 100, 128, 129, 256, 257, 480, 640]
    got = augment_reference.border(tf.constant(sizes)).numpy().tolist()
    assert got == [get_border(128, s) for s in sizes]


def original_colour_aug(image_bgr01, order, alphas, normal):
    """The original's ``color_aug`` on a float B, G, R image in [0, 1], with given draws."""
    eig_val = np.array(augment_reference.EIG_VAL)
    eig_vec = np.array(augment_reference.EIG_VEC)
    image = image_bgr01.copy()
    gs = image @ np.array([0.114, 0.587, 0.299])  # cv2.COLOR_BGR2GRAY
    gs_mean = gs.mean()
    for op in order:  # 0 brightness, 1 contrast, 2 saturation
        a = alphas[op]
        if op == 0:
            image *= a
        elif op == 1:
            image = image * a + gs_mean * (1 - a)
        else:
            image = image * a + gs[..., None] * (1 - a)
    return image + eig_vec @ (eig_val * 0.1 * normal)


def test_colour_jitter_is_the_originals():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (24, 32, 3)).astype(np.float32)
    rgb[:6] = 0.0  # black padding rows, jittered with the rest as in the original
    for s in range(6):
        seed = tf.constant([s, 7], tf.int64)
        transform = reference_colour_transform(seed, tf.constant(rgb.reshape(-1, 3).mean(0)))
        ours = rgb @ transform[:3].numpy() + transform[3].numpy()
        u = tf.random.stateless_uniform([4], seed).numpy()
        normal = tf.random.stateless_normal([3], tf.random.experimental.stateless_fold_in(seed, 1)).numpy()
        order = list(itertools.permutations(range(3)))[min(int(u[3] * 6), 5)]
        alphas = 1 + 0.4 * (2 * u[:3] - 1)
        assert np.all((alphas >= 0.6) & (alphas <= 1.4))
        want = original_colour_aug(rgb[..., ::-1] / 255.0, order, alphas, normal)
        want = (want - np.array(MEAN_BGR)) / np.array(STD_BGR)
        np.testing.assert_allclose(ours, want, atol=2e-4)
    plain = reference_colour_transform(tf.constant([0, 0], tf.int64), tf.zeros([3]), jitter=False).numpy()
    black = (0.0 - np.array(MEAN_BGR)) / np.array(STD_BGR)
    np.testing.assert_allclose(plain[3], black, atol=1e-6)  # RGB 0 normalises to black


def _train_batch(pattern, *overrides):
    from centernet_core.data.pipeline import build_dataset
    cfg = config_lib.resolve("shapes-tiny", overrides=[
        "data.deterministic=true", "data.shuffle_buffer=4", *overrides])
    features, targets = next(iter(build_dataset(pattern, cfg, True, batch_size=16)))
    return features, targets


def test_pipeline_reference_mode_pads_black_and_jitters_the_padding(shapes_dataset):
    pattern = f"{shapes_dataset}/train-*.tfrecord"
    features, _ = _train_batch(pattern, "data.augmentation=reference", "data.color_jitter=false")
    images = features["image"].numpy()
    assert (features["content"].numpy() == [0, 0, 128, 128]).all()
    x = augment.model_input(features).numpy()
    black = (0.0 - np.array(MEAN_BGR)) / np.array(STD_BGR)
    padded = [b for b in range(len(images)) if (images[b].max(-1) == 0).all(1).any() or
              (images[b].max(-1) == 0).all(0).any()]  # a whole black row or column
    assert len(padded) >= 4
    for b in padded:
        dark = images[b].max(-1) == 0
        np.testing.assert_allclose(x[b][dark], np.broadcast_to(black, x[b][dark].shape), atol=1e-5)
    # inside mode: the padding is the mean colour (0 after normalisation)
    features, _ = _train_batch(pattern, "data.augmentation=inside", "data.color_jitter=false")
    x = augment.model_input(features).numpy()
    content = features["content"].numpy()
    outside = [b for b in range(len(x)) if content[b, 2] < 128 or content[b, 3] < 128]
    assert outside and all(np.abs(x[b][:, :, :]).min() == 0.0 for b in outside)
    # with jitter, black padding moves with the jitter (the original jitters after padding)
    features, _ = _train_batch(pattern, "data.augmentation=reference")
    offsets = features["colour_transform"].numpy()[:, 3]
    assert np.abs(offsets - black).max() > 0.05


def test_targets_sit_on_their_objects_under_reference_augmentation(tmp_path_factory):
    import test_augment_geometry as geo
    pattern = geo.pattern.__wrapped__(tmp_path_factory)
    images, t = geo._batch(pattern, "data.augmentation=reference", "data.crop_scales=0.6,1.0,1.3")
    for b in range(len(images)):
        geo._check_targets_sit_on_their_objects(images[b], t, b)
    assert t["mask"].sum() >= len(images)
