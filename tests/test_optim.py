"""Learning-rate schedules at hand-computed steps; clipping, decay and loss scaling really act."""
import dataclasses
import math

import keras
import numpy as np
import pytest

from centernet_core import config as config_lib
from centernet_core.training import optim


def _train(**kw):
    return dataclasses.replace(config_lib.TrainConfig(), **kw)


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_cosine_with_warmup_values():
    s = optim.learning_rate_schedule(_train(learning_rate=1e-3, steps=1100, warmup_steps=100, schedule="cosine"))
    assert _lr(s, 0) == 0.0
    assert _lr(s, 50) == pytest.approx(5e-4)
    assert _lr(s, 100) == pytest.approx(1e-3)
    assert _lr(s, 600) == pytest.approx(5e-4)  # half way through the cosine
    assert _lr(s, 350) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 0.25)))
    assert _lr(s, 1100) == pytest.approx(0.0, abs=1e-12)
    assert _lr(s, 5000) == pytest.approx(0.0, abs=1e-12)  # stays at 0 past the end


def test_step_decay_values():
    s = optim.learning_rate_schedule(_train(learning_rate=5e-4, steps=1000, warmup_steps=0, schedule="step",
                                            decay_boundaries=(600, 800), decay_rate=0.1))
    assert [_lr(s, i) for i in (0, 599, 600, 799, 800, 999)] == pytest.approx(
        [5e-4, 5e-4, 5e-5, 5e-5, 5e-6, 5e-6])


def test_step_decay_with_warmup_and_rate():
    s = optim.learning_rate_schedule(_train(learning_rate=1.0, steps=100, warmup_steps=10, schedule="step",
                                            decay_boundaries=(50,), decay_rate=0.5))
    assert _lr(s, 5) == pytest.approx(0.5)
    assert _lr(s, 60) == pytest.approx(0.5)


def test_constant_values():
    s = optim.learning_rate_schedule(_train(learning_rate=2e-3, steps=100, warmup_steps=0, schedule="constant"))
    assert _lr(s, 0) == _lr(s, 99) == pytest.approx(2e-3)


def test_schedule_serialises():
    s = optim.learning_rate_schedule(_train(schedule="step", decay_boundaries=(10, 20), steps=30, warmup_steps=0))
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert again.get_config() == s.get_config()


def _one_step(opt, w0, grad):
    var = keras.Variable(np.array(w0, "float32"), name="kernel")
    opt.apply([keras.ops.convert_to_tensor(np.array(grad, "float32"))], [var])
    return keras.ops.convert_to_numpy(var)


def test_adamw_decay_is_decoupled():
    cfg = _train(optimizer="adamw", learning_rate=0.1, weight_decay=0.5, schedule="constant", warmup_steps=0,
                 clip_norm=0.0)
    w = _one_step(optim.build_optimizer(cfg), [2.0], [0.0])
    assert w[0] == pytest.approx(2.0 - 0.1 * 0.5 * 2.0)  # zero gradient: only decay moves w
    plain = _one_step(optim.build_optimizer(dataclasses.replace(cfg, weight_decay=0.0)), [2.0], [0.0])
    assert plain[0] == pytest.approx(2.0)


def test_adam_decay_is_coupled_l2():
    cfg = _train(optimizer="adam", learning_rate=0.1, weight_decay=0.5, schedule="constant", warmup_steps=0,
                 clip_norm=0.0)
    w = _one_step(optim.build_optimizer(cfg), [2.0], [0.0])
    # the L2 gradient 0.5 * 2 goes through Adam: the first step moves by ~lr in its direction
    assert w[0] == pytest.approx(2.0 - 0.1, rel=1e-4)


def test_bias_is_not_decayed():
    opt = optim.build_optimizer(_train(optimizer="adamw", learning_rate=0.1, weight_decay=0.5,
                                       schedule="constant", warmup_steps=0))
    bias = keras.Variable(np.array([2.0], "float32"), name="bias")
    opt.apply([keras.ops.zeros((1,))], [bias])
    assert keras.ops.convert_to_numpy(bias)[0] == pytest.approx(2.0)


def test_global_norm_clip():
    # Adam normalises gradient size away, so check clipping through the first moment.
    cfg = _train(optimizer="adamw", learning_rate=0.1, weight_decay=0.0, schedule="constant", warmup_steps=0,
                 clip_norm=1.0)
    opt = optim.build_optimizer(cfg)
    var = keras.Variable(np.zeros(2, "float32"), name="kernel")
    opt.apply([keras.ops.convert_to_tensor(np.array([30.0, 40.0], "float32"))], [var])
    m = keras.ops.convert_to_numpy(opt._momentums[0])
    assert m == pytest.approx((1 - 0.9) * np.array([0.6, 0.8]), rel=1e-5)  # clipped to norm 1


def test_mixed_float16_gets_dynamic_loss_scale():
    opt = optim.build_optimizer(_train(), precision="mixed_float16")
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer) and opt.dynamic_growth_steps > 0
    assert float(keras.ops.convert_to_numpy(opt.scale_loss(1.0))) == opt.initial_scale
    assert not isinstance(optim.build_optimizer(_train(), precision="mixed_bfloat16"),
                          keras.optimizers.LossScaleOptimizer)


def test_epsilon_and_lr_follow_config():
    opt = optim.build_optimizer(_train(adam_epsilon=1e-3, learning_rate=0.25, schedule="constant", warmup_steps=0))
    assert opt.epsilon == 1e-3
    assert optim.current_learning_rate(opt) == pytest.approx(0.25)


@pytest.mark.parametrize("kind", ["adamw", "adam"])
def test_fused_adam_step_equals_keras_adam(kind):
    """``ResourceApplyAdam`` in place of Keras's element-wise step: same weights and moments."""
    clip = 1.0 if kind == "adamw" else 0.0  # (ours adds the coupled L2 after the clip)
    cfg = _train(optimizer=kind, learning_rate=0.01, weight_decay=0.1, schedule="constant", warmup_steps=0,
                 clip_norm=clip)
    ours = optim.build_optimizer(cfg)
    keras_cls = keras.optimizers.AdamW if kind == "adamw" else keras.optimizers.Adam
    reference = keras_cls(learning_rate=0.01, epsilon=cfg.adam_epsilon, global_clipnorm=clip or None,
                          **({"weight_decay": 0.1} if kind == "adamw" else {}))
    reference.exclude_from_weight_decay(var_names=list(optim.NO_DECAY_NAMES))
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype("float32")
    pairs = [(opt, keras.Variable(start, name="kernel")) for opt in (ours, reference)]
    for step in range(5):
        grad = rng.normal(size=(3, 4)).astype("float32")
        for opt, var in pairs:
            g = keras.ops.convert_to_tensor(grad)
            if opt is reference and kind == "adam":
                g = g + 0.1 * var.value  # coupled L2, as ours adds it
            opt.apply([g], [var])
    (a, va), (b, vb) = pairs
    np.testing.assert_allclose(keras.ops.convert_to_numpy(va), keras.ops.convert_to_numpy(vb), rtol=1e-5, atol=1e-6)
    for slots in ("_momentums", "_velocities"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(getattr(a, slots)[0]),
                                   keras.ops.convert_to_numpy(getattr(b, slots)[0]), rtol=1e-5, atol=1e-7)
    assert not np.allclose(keras.ops.convert_to_numpy(va), start)
    assert optim._FusedAdamStep in type(ours).__mro__ and optim._FusedAdamStep not in type(reference).__mro__
