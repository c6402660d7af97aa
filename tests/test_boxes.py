import numpy as np
import pytest
import tensorflow as tf

from centernet_core import boxes


def test_convert_hand_values_numpy():
    xywh = [[10, 20, 30, 40]]
    yxyx = boxes.convert(xywh, "xywh_coco", "yxyx_abs")
    np.testing.assert_allclose(yxyx, [[20, 10, 60, 40]])
    norm = boxes.convert(yxyx, "yxyx_abs", "yxyx_norm", image_hw=(100, 200))
    np.testing.assert_allclose(norm, [[0.2, 0.05, 0.6, 0.2]])
    back = boxes.convert(norm, "yxyx_norm", "xywh_coco", image_hw=(100, 200))
    np.testing.assert_allclose(back, xywh)
    assert back.dtype == np.float64  # integer input is promoted


def test_convert_tensor_matches_numpy_and_stays_tensor():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 50, (3, 5, 4)).astype(np.float32)
    hw = np.array([[120.0, 90.0]], np.float32)[:, None, :]  # broadcast over [3, 5]
    for src in boxes.FORMATS:
        for dst in boxes.FORMATS:
            want = boxes.convert(b, src, dst, image_hw=hw)
            got = boxes.convert(tf.constant(b), src, dst, image_hw=tf.constant(hw))
            assert isinstance(got, tf.Tensor)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-5)
            np.testing.assert_allclose(boxes.convert(want, dst, src, image_hw=hw), b, rtol=1e-5, atol=1e-4)


def test_convert_errors():
    with pytest.raises(ValueError, match="image_hw"):
        boxes.convert([[0, 0, 1, 1]], "yxyx_abs", "yxyx_norm")
    with pytest.raises(ValueError, match="box format must be one of"):
        boxes.convert([[0, 0, 1, 1]], "xyxy", "yxyx_abs")


def test_clip_and_area():
    b = np.array([[-5, 10, 50, 130], [20, 20, 10, 30]], np.float64)
    clipped = boxes.clip_yxyx_abs(b, (40, 100))
    np.testing.assert_allclose(clipped, [[0, 10, 40, 100], [20, 20, 10, 30]])
    np.testing.assert_allclose(boxes.area_yxyx(clipped), [40 * 90, 0])  # inverted box has area 0
    t = boxes.clip_yxyx_abs(tf.constant(b, tf.float32), tf.constant([40.0, 100.0]))
    np.testing.assert_allclose(t.numpy(), clipped)
    np.testing.assert_allclose(boxes.area_yxyx(t).numpy(), [3600, 0])
