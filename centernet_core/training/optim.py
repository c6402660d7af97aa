"""Optimizer and learning-rate schedule from a ``TrainConfig``.

Schedules (``train.schedule``), each after a linear warmup of ``train.warmup_steps``
from 0 to ``train.learning_rate``:
  cosine   -- half a cosine from the base rate to 0 at ``train.steps`` (the seed's);
  step     -- multiply by ``train.decay_rate`` at each of ``train.decay_boundaries``
              (the original repo's);
  constant -- the base rate.

Optimizers (``train.optimizer``), both with ``epsilon = train.adam_epsilon`` and
gradients clipped to global norm ``train.clip_norm`` (0 disables):
  adamw -- decoupled weight decay: ``w -= lr * weight_decay * w`` each step;
  adam  -- classic coupled L2: ``weight_decay * w`` is added to the gradient before the
           Adam moments, so decay is rescaled by Adam like any gradient.
Biases and normalisation scales/offsets are never decayed.

Contract with the training loop: ``apply()`` receives gradients that are already
summed over replicas. The loop all-reduces them itself so that the global-norm clip
and the float16 loss-scale finiteness check see the global gradient; the TensorFlow
backend's own (second) all-reduce is therefore skipped here. With one replica the
two conventions coincide.
"""
from __future__ import annotations

import math

import keras

from centernet_core.errors import ConfigError

NO_DECAY_NAMES = ("bias", "gamma", "beta")


@keras.saving.register_keras_serializable(package="centernet")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``base_lr``, then cosine, step or constant (see module doc)."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, kind: str = "cosine",
                 boundaries: tuple[int, ...] = (), decay_rate: float = 0.1):
        if kind not in ("cosine", "step", "constant"):
            raise ConfigError(f"train.schedule must be cosine, step or constant, not '{kind}'")
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        self.boundaries = tuple(int(b) for b in boundaries)
        self.decay_rate = float(decay_rate)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = keras.ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            lr = 0.5 * self.base_lr * (1.0 + keras.ops.cos(math.pi * progress))
        elif self.kind == "step":
            passed = sum(keras.ops.cast(step >= b, "float32") for b in self.boundaries)
            lr = self.base_lr * keras.ops.power(self.decay_rate, passed)
        else:
            lr = keras.ops.convert_to_tensor(self.base_lr, "float32")
        if self.warmup_steps > 0:
            lr = lr * keras.ops.minimum(1.0, step / self.warmup_steps)
        return lr

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "kind": self.kind, "boundaries": list(self.boundaries), "decay_rate": self.decay_rate}


def learning_rate_schedule(train_cfg) -> WarmupSchedule:
    """The schedule described by ``train_cfg`` (already scaled to the global batch)."""
    return WarmupSchedule(train_cfg.learning_rate, train_cfg.steps, train_cfg.warmup_steps,
                          train_cfg.schedule, train_cfg.decay_boundaries, train_cfg.decay_rate)


class _PreReduced:
    """Skip the TF backend's gradient all-reduce: the loop passes summed gradients."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


class _FusedAdamStep:
    """Adam's moment and weight update as one ``ResourceApplyAdam`` kernel per variable.

    Same arithmetic as Keras 3's ``Adam.update_step`` (``m += (g - m)(1 - b1)``,
    ``v += (g^2 - v)(1 - b2)``, ``w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``),
    but Keras writes it as a dozen element-wise ops, each a pass over memory the size of the
    variable, where the fused kernel reads and writes each of w, m and v once (measured in
    docs/benchmarks.md, "Optimizer step"). Weight decay, clipping and the schedule stay
    Keras's. ``amsgrad`` falls back to Keras's own step.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf  # TensorFlow backend only (the one this toolkit runs)

        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = (_tf_variable(slots[index]) for slots in (self._momentums, self._velocities))
        step = tf.cast(self.iterations + 1, dtype)
        cast = lambda x: tf.cast(x, dtype)  # noqa: E731
        tf.raw_ops.ResourceApplyAdam(
            var=_tf_variable(variable).handle, m=m.handle, v=v.handle,
            beta1_power=tf.pow(cast(self.beta_1), step), beta2_power=tf.pow(cast(self.beta_2), step),
            lr=cast(learning_rate), beta1=cast(self.beta_1), beta2=cast(self.beta_2), epsilon=cast(self.epsilon),
            grad=cast(gradient), use_locking=False)


class _SinglePassClip:
    """Global-norm clipping with ``tf.clip_by_global_norm``: the norm is one read of each
    gradient (``L2Loss``), where Keras first writes every gradient squared and then sums it.
    Same result, including NaN gradients when the norm is not finite."""

    def _clip_gradients(self, grads):
        if not (self.global_clipnorm and self.global_clipnorm > 0) or self.clipnorm or self.clipvalue:
            return super()._clip_gradients(grads)
        import tensorflow as tf

        present = [g for g in grads if g is not None]
        clipped = iter(tf.clip_by_global_norm(present, self.global_clipnorm)[0])
        return [None if g is None else next(clipped) for g in grads]


def _tf_variable(variable):
    """The TensorFlow variable behind a Keras one (or the argument itself)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


@keras.saving.register_keras_serializable(package="centernet")
class AdamW(_PreReduced, _SinglePassClip, _FusedAdamStep, keras.optimizers.AdamW):
    """Keras AdamW (decoupled decay) taking replica-summed gradients."""


@keras.saving.register_keras_serializable(package="centernet")
class Adam(_PreReduced, _SinglePassClip, _FusedAdamStep, keras.optimizers.Adam):
    """Keras Adam with coupled L2 (``l2 * w`` added to each decayed gradient)."""

    def __init__(self, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2 and self._use_weight_decay(variable):
            gradient = gradient + keras.ops.cast(self.l2, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def build_optimizer(train_cfg, precision: str = "float32") -> keras.optimizers.Optimizer:
    """Adam or AdamW with the schedule, clipping and decay of ``train_cfg``.

    Create it inside ``strategy.scope()``. ``precision="mixed_float16"`` wraps it in a
    dynamic ``keras.optimizers.LossScaleOptimizer``; call ``optimizer.scale_loss`` on the
    loss before taking gradients (a no-op for the other precisions).
    """
    for cls in (keras.optimizers.Adam, keras.optimizers.AdamW):
        if not hasattr(cls, "_all_reduce_sum_gradients"):  # keep the contract loud if Keras changes
            raise RuntimeError(f"keras {keras.__version__}: {cls.__name__} has no _all_reduce_sum_gradients; "
                               "centernet_core.training.optim needs updating for this Keras version")
    common = dict(learning_rate=learning_rate_schedule(train_cfg), epsilon=train_cfg.adam_epsilon,
                  global_clipnorm=train_cfg.clip_norm or None)
    if train_cfg.optimizer == "adamw":
        optimizer = AdamW(weight_decay=train_cfg.weight_decay, **common)
    elif train_cfg.optimizer == "adam":
        optimizer = Adam(l2=train_cfg.weight_decay, **common)
    else:
        raise ConfigError(f"train.optimizer must be adam or adamw, not '{train_cfg.optimizer}'")
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def current_learning_rate(optimizer) -> float:
    """The learning rate the next step will use (for logs and progress)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    return float(keras.ops.convert_to_numpy(lr))
