"""Training: a custom loop over ``tf.distribute`` that resumes, survives preemption and stops on NaN.

    result = train(cfg, "runs/shapes")  # cfg.data.train: the TFRecord pattern

One call of the compiled loop runs up to ``runtime.steps_per_loop`` steps (fewer when a
log, checkpoint or eval boundary comes first). Each step, every replica takes its share
``global_batch / replicas`` of the batch, normalises its loss by the object count of the
*global* batch, and all-reduces its gradients; the optimizer then clips the summed
gradient by global norm, so the update equals a single device's on the whole batch
(batch norm normalises with per-replica batch statistics, as in the seed; its moving
statistics are averaged over replicas after each loop call). Loss and gradient are checked
before the update: a NaN or Inf stops the run naming the step, and nothing of that
state is saved. SIGTERM / SIGINT end the current loop call, save a checkpoint and
return; running the same command again resumes at that step with the same learning
rate (the optimizer's step counter is checkpointed). Run directory layout: ``run_dir``.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from typing import Callable

import keras
import tensorflow as tf

from centernet_core import config as config_lib
from centernet_core import distribute, run_dir, storage
from centernet_core.data import augment, metadata as metadata_lib
from centernet_core.errors import CenterNetError, ConfigError, DataError
from centernet_core.tasks import Task, build_task
from centernet_core.tasks.detection.losses import global_num_objects
from centernet_core.training import checkpoints, conv_grad, optim
from centernet_core.training.periodic_eval import evaluate_during_training
from centernet_core.training.reporting import TrainReporter

class TrainingDiverged(CenterNetError):
    """The loss became NaN or Inf; the run stopped without saving that state."""

    exit_code = 1


@dataclasses.dataclass
class TrainResult:
    """What ``train`` did. ``status``: "finished" or "interrupted" (by ``signal``)."""

    step: int
    status: str
    start_step: int
    losses: dict
    init: str | None = None
    signal: str | None = None
    eval: dict | None = None
    model: object = dataclasses.field(default=None, repr=False)


def check_inputs(cfg, custom_data: bool = False):
    """Check ``data.train`` / ``data.val`` before any model is built and fit ``cfg`` to them.

    Returns ``(cfg, metadata)``: ``cfg`` completed from the training set's metadata
    (``config.fit_to_data``: ``model.num_classes: auto``, ``train.epochs``) and the metadata
    (its category table); with ``custom_data`` and no ``data.train``, ``cfg`` as given and
    numbered classes. Raises DataError for a missing pattern or files, ConfigError when a
    dataset's category count differs from ``model.num_classes``.
    """
    d, t = cfg.data, cfg.train
    if custom_data and not d.train:
        if cfg.model.num_classes == config_lib.AUTO:
            raise ConfigError("model.num_classes is auto, but custom training data has no category table; "
                              "set model.num_classes")
        n = cfg.model.num_classes
        return cfg, {"categories": [{"index": i, "id": i + 1, "name": f"class{i}"} for i in range(n)]}
    if not d.train:
        raise DataError("no training data: pass --data PATTERN (TFRecords from `centernet prepare`) or set data.train")
    patterns = [("--data", d.train)] + ([("--val-data", d.val)] if d.val else [])
    for flag, pattern in patterns:
        if not storage.glob(pattern):
            raise DataError(f"no files match {flag} {pattern!r}; write them with `centernet prepare` "
                            "and check the path")
    if t.eval_every and not d.val:
        raise ConfigError(f"train.eval_every={t.eval_every} needs validation data: pass --val-data PATTERN "
                          "or set data.val (or --eval-every 0)")
    meta = metadata_lib.load_metadata(d.train)
    cfg = config_lib.fit_to_data(cfg, meta)
    if d.val:
        n = len(metadata_lib.load_metadata(d.val)["categories"])
        if n != cfg.model.num_classes:
            raise ConfigError(f"the dataset of --val-data has {n} categories but model.num_classes is "
                              f"{cfg.model.num_classes}; validate on data prepared with the training set's classes")
    return cfg, meta


def make_train_loop(strategy, model, optimizer, task: Task, matmul_kernel_gradients: bool | None = None):
    """The compiled loop ``loop(iterator, num_steps) -> (steps_done, loss_sums, finite)``.

    ``loss_sums`` adds each finished step's global losses (dict of ``task.loss_keys``); the loop
    stops early, before applying it, at the first step whose total loss or (without loss
    scaling) gradient holds a NaN or Inf. ``matmul_kernel_gradients``: use
    ``conv_grad``'s kernel gradients (default: when TensorFlow sees no GPU or TPU; oneDNN's
    own kernel gradient is the slow one, GPUs and TPUs keep theirs).
    """
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    matmul_gradients = conv_grad.cpu_only() if matmul_kernel_gradients is None else matmul_kernel_gradients
    loss_keys = task.loss_keys

    def forward_backward(features, targets):
        num_objects = global_num_objects(task.object_mask(targets))  # the global batch's count, >= 1
        with tf.GradientTape() as tape, conv_grad.matmul_kernel_gradients(matmul_gradients):
            outputs = model(augment.model_input(features), training=True)
            losses = task.loss(outputs, targets, num_objects)
            scaled = optimizer.scale_loss(losses["total"])
        grads = tape.gradient(scaled, model.trainable_variables)
        ctx = tf.distribute.get_replica_context()
        if ctx.num_replicas_in_sync > 1:  # summed here so the clip sees the global gradient
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        # ReLU and clipping can hide a NaN input from the loss, never from the gradient: a NaN
        # or Inf anywhere makes the global norm non-finite (one read of the gradients, where an
        # element-wise check writes and reads a mask as large as the model). With float16 loss
        # scaling an overflowing gradient is routine: the optimizer skips it.
        finite = tf.math.is_finite(losses["total"])
        if not loss_scaled:
            finite = finite & tf.math.is_finite(tf.linalg.global_norm(grads))
        return losses, grads, 1 - tf.cast(finite, tf.int32)

    def apply(grads):
        optimizer.apply(grads, model.trainable_variables)

    statistics = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

    def average_statistics():
        # Keras 3 batch norm updates its moving statistics per replica (aggregation "none"),
        # so replicas and workers drift apart. The moving average is linear, so averaging
        # once per loop call equals averaging after every step.
        ctx = tf.distribute.get_replica_context()
        means = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in statistics])
        for v, mean in zip(statistics, means):
            v.assign(mean)

    @tf.function
    def loop(iterator, num_steps):
        sums = {k: tf.constant(0.0) for k in loss_keys}
        done = tf.constant(0)
        finite = tf.constant(True)
        for _ in tf.range(num_steps):
            features, targets = next(iterator)
            per_replica, grads, bad = strategy.run(forward_backward, args=(features, targets))
            losses = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None) for k in loss_keys}
            if strategy.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None) > 0:
                finite = tf.constant(False)
                break
            strategy.run(apply, args=(grads,))
            sums = {k: sums[k] + losses[k] for k in loss_keys}
            done += 1
        if strategy.num_replicas_in_sync > 1 and statistics:
            strategy.run(average_statistics)
        return done, sums, finite

    return loop


def make_stop_vote(strategy):
    """``vote(flag) -> bool``: True when any worker's ``flag`` (int32: 1 = a signal arrived) is set.

    A signal reaches one worker; the others would carry on into a collective it never joins.
    Every worker calls the vote once before each loop call, so all stop at the same step and
    take part in one checkpoint.
    """
    @tf.function
    def vote(flag):
        per_replica = strategy.run(lambda: tf.identity(flag))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0

    return vote


class _StopOnSignal:
    """Record SIGTERM / SIGINT instead of dying; a second SIGINT interrupts at once."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _new_window(loss_keys) -> dict:
    """Accumulators between two log lines."""
    return {"steps": 0, "timed_steps": 0, "seconds": 0.0, "sums": {k: 0.0 for k in loss_keys}}


def _next_boundary(step: int, cfg) -> int:
    t = cfg.train
    ends = [step + cfg.runtime.steps_per_loop, t.steps]
    ends += [(step // every + 1) * every for every in (t.log_every, t.checkpoint_every, t.eval_every) if every]
    return min(ends)


def train(cfg, model_dir: str, init_checkpoint: str | None = None, dataset_fn: Callable | None = None,
          show_progress: bool = True, console=None) -> TrainResult:
    """Train ``cfg``'s model into ``model_dir``, resuming from its newest checkpoint if any.

    Args:
      cfg: resolved ``ExperimentConfig``: ``data.train`` / ``data.val`` are the TFRecord
        patterns, ``train.eval_every`` > 0 evaluates on ``data.val`` and keeps the best
        checkpoint by COCO AP in ``model_dir/best``; the profile's ``runtime`` picks
        strategy, precision and global batch.
      model_dir: run directory (any storage path); see ``checkpoints`` for its layout.
      init_checkpoint: run directory or checkpoint to start a *new* run from (whole model,
        or only the backbone when the class count or head width differs); ignored when
        resuming.
      dataset_fn: ``fn(input_context) -> tf.data.Dataset`` of per-replica ``(features,
        targets)`` batches replacing the TFRecord pipeline (custom data, tests).
      show_progress: draw the rich progress bar (log lines are printed either way).
    Returns: ``TrainResult``. Raises TrainingDiverged on a NaN / Inf loss.
    """
    cfg, meta = check_inputs(cfg, custom_data=dataset_fn is not None)
    checkpoints.check_resumable(cfg, model_dir, meta)
    strategy = distribute.build_strategy(cfg.runtime)
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.runtime.global_batch_size
    if global_batch % replicas:
        fit = max(replicas, global_batch // replicas * replicas)
        raise ConfigError(f"runtime.global_batch_size={global_batch} does not split over {replicas} replicas; "
                          f"try --set runtime.global_batch_size={fit}")
    previous_policy = keras.mixed_precision.global_policy().name
    distribute.set_precision(cfg.runtime.precision)
    try:
        return _run(cfg, model_dir, meta, strategy, init_checkpoint, dataset_fn, show_progress, console)
    finally:
        distribute.set_precision(previous_policy)


def _run(cfg, model_dir, meta, strategy, init_checkpoint, dataset_fn, show_progress, console) -> TrainResult:
    from centernet_core.modeling.model import build_model

    chief = distribute.is_chief(strategy)
    keras.utils.set_random_seed(cfg.train.seed)  # initial weights (and unseeded TF ops) follow train.seed
    with strategy.scope():
        model = build_model(cfg)
        optimizer = optim.build_optimizer(cfg.train, cfg.runtime.precision)
        optimizer.build(model.trainable_variables)
    state = checkpoints.RunState(model, optimizer, model_dir, cfg.train.keep_checkpoints, chief)
    start = state.restore_latest()
    how = None
    if start is None and init_checkpoint:
        with strategy.scope():
            how = checkpoints.init_from_checkpoint(model, cfg, init_checkpoint, build_model)
    if chief:  # after the restore, so a run directory that does not fit keeps its own files
        run_dir.write_run_files(cfg, model_dir, meta)
    step = start or 0

    def input_fn(ctx):
        if dataset_fn is not None:
            return dataset_fn(ctx)
        from centernet_core.data.pipeline import build_dataset
        per_replica = ctx.get_per_replica_batch_size(cfg.runtime.global_batch_size)
        return build_dataset(cfg.data.train, cfg, True, batch_size=per_replica, input_context=ctx,
                             start_step=start or 0)

    iterator = iter(strategy.distribute_datasets_from_function(input_fn))
    task = build_task(cfg)
    loop = make_train_loop(strategy, model, optimizer, task)
    stop_vote = make_stop_vote(strategy)
    t, total = cfg.train, cfg.train.steps
    result = TrainResult(step=step, status="finished", start_step=step, losses={}, init=how, model=model)
    window = _new_window(task.loss_keys)
    traced = False
    run_start = time.perf_counter()
    try:
        with TrainReporter(model_dir, total, step, active=chief, show_progress=show_progress, console=console) as rep, \
                _StopOnSignal() as stop:
            r = cfg.runtime
            rep.print(f"profile {r.profile or '(none)'}: {r.strategy} strategy, {r.precision}, global batch "
                      f"{r.global_batch_size} on {strategy.num_replicas_in_sync} replica(s)")
            if start is not None:
                rep.print(f"resumed from step {start} ({tf.train.latest_checkpoint(model_dir)})")
            elif how:
                rep.print(f"initialised the {how} from {init_checkpoint}")
            stopped = False
            while step < total:
                stopped = bool(stop_vote(tf.constant(int(stop.received is not None))))
                if stopped:
                    break
                began = time.perf_counter()
                done, sums, finite = loop(iterator, tf.constant(_next_boundary(step, cfg) - step))
                done = int(done)
                step += done
                window["steps"] += done
                if traced:  # the first call traces and compiles: not a throughput sample
                    window["timed_steps"] += done
                    window["seconds"] += time.perf_counter() - began
                traced = True
                for k in task.loss_keys:
                    window["sums"][k] += float(sums[k])
                if not bool(finite):
                    last = tf.train.latest_checkpoint(model_dir)
                    raise TrainingDiverged(f"loss is NaN or Inf at step {step + 1}; stopped without saving that state "
                                           f"(last good checkpoint: {last or 'none'}); lower train.learning_rate or "
                                           "check the data")
                losses = {k: v / max(1, window["steps"]) for k, v in window["sums"].items()}
                rate = (cfg.runtime.global_batch_size * window["timed_steps"] / max(window["seconds"], 1e-9)
                        if window["timed_steps"] else None)  # None: only the first (tracing) call so far
                lr = optim.current_learning_rate(optimizer)
                rep.progress(step, losses, lr, rate)
                result.losses = losses
                if step % t.log_every == 0 or step == total:
                    rep.log(step, losses, lr, rate)
                    window = _new_window(task.loss_keys)
                if step % t.checkpoint_every == 0 or step == total:
                    state.save(step)
                if t.eval_every and (step % t.eval_every == 0 or step == total):
                    minutes = (time.perf_counter() - run_start) / 60.0
                    result.eval = _eval(model, cfg, meta, state, rep, step, minutes, chief, model_dir)
            if stopped:  # every worker, at the same step: the save is a collective
                state.save(step)
                result.status, result.signal = "interrupted", stop.received or "SIGTERM (another worker)"
                rep.print(f"{result.signal} at step {step}: checkpoint saved; run the same command again to resume")
    finally:
        state.close()
    result.step = step
    return result


ZERO_AP_EVALS = 3  # evaluations in a row at AP 0 before the run says what is likely wrong


def _eval(model, cfg, meta, state, rep, step, minutes, chief, model_dir) -> dict | None:
    """COCO evaluation on ``data.val``; best checkpoint, TensorBoard and ``eval.jsonl`` (chief only).

    When the last ``ZERO_AP_EVALS`` evaluations in ``eval.jsonl`` (resumed runs included) all
    have AP 0, prints one warning line naming the likely causes.
    """
    if not chief:
        return None
    metrics, pictures = evaluate_during_training(model, cfg, cfg.data.val, meta)
    improved = state.save_best(step, metrics)
    rep.log_eval(step, metrics, minutes, pictures)
    line = {"step": step, "minutes": round(minutes, 3), "best": improved,
            **{k: v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}}
    run_dir.append_eval_history(model_dir, line)
    recent = [h.get("AP") for h in run_dir.read_eval_history(model_dir)[-ZERO_AP_EVALS:]]
    if len(recent) == ZERO_AP_EVALS and all(ap == 0 for ap in recent):
        size = cfg.model.input_size
        rep.print(f"warning: validation AP has been 0 for the last {ZERO_AP_EVALS} evaluations (step {step}); "
                  f"likely causes: too few steps or a learning rate that does not fit (train.steps, "
                  f"train.learning_rate); objects smaller than one output cell at model.input_size={size} "
                  f"(`centernet prepare check TRAIN_PREFIX --input-size {size}`); data.val ({cfg.data.val}) not "
                  "prepared with the training set's classes, or class ids that do not match its boxes")
    return metrics
