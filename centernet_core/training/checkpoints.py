"""Training state in checkpoints: saving, restoring, the best checkpoint, resuming, init.

The run directory's layout belongs to ``centernet_core.run_dir``; this module writes the
``ckpt-N`` checkpoints (model, optimizer (its step counter drives the LR schedule) and
``step``) and ``best/`` into it. Heads are tracked explicitly next to the model
(``modeling.model.model_trackables``): Keras keeps them in a list of dicts, which
``tf.train.Checkpoint`` does not follow on its own.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile

import tensorflow as tf

from centernet_core import run_dir, storage
from centernet_core.errors import ConfigError, DataError
from centernet_core.modeling.model import model_trackables


class RunState:
    """The checkpointed training state of one run: model, optimizer and ``step``.

    Args:
      model, optimizer: built inside the strategy scope; the optimizer already built on
        ``model.trainable_variables`` so a restore assigns its slots at once.
      model_dir: the run directory.
      keep: how many recent checkpoints to keep (``train.keep_checkpoints``).
      chief: only the chief writes into ``model_dir``; other workers of a multi-worker job
        write to a private temporary directory that ``close()`` deletes (every worker must
        take part in saving).
    """

    def __init__(self, model, optimizer, model_dir: str, keep: int, chief: bool = True):
        self.model_dir, self.chief = model_dir, chief
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._objects = dict(model_trackables(model), optimizer=optimizer, step=self.step)
        self.checkpoint = tf.train.Checkpoint(**self._objects)
        self._scratch = None if chief else tempfile.mkdtemp(prefix="centernet-worker-")
        directory = model_dir if chief else self._scratch
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep,
                                                  checkpoint_name=run_dir.CHECKPOINT_NAME)
        self._best = None
        if chief:
            best = tf.train.Checkpoint(step=self.step, **model_trackables(model))
            self._best = tf.train.CheckpointManager(best, run_dir.checkpoint_dir(model_dir, best=True), max_to_keep=1,
                                                    checkpoint_name=run_dir.CHECKPOINT_NAME)

    def restore_latest(self) -> int | None:
        """Restore the newest checkpoint of ``model_dir``; its step, or None when there is none.

        The newest *complete* checkpoint is the one the ``checkpoint`` state file names (it is
        updated after the files are written). On the chief, what a killed save left behind
        (``ckpt-N_temp`` staging, ``ckpt-N`` files newer than that) is deleted first.
        """
        path = tf.train.latest_checkpoint(self.model_dir)
        if self.chief:
            remove_partial_checkpoints(self.model_dir, path)
        if path is None:
            return None
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError) as e:
            raise ConfigError(f"{path} does not fit this model ({str(e).splitlines()[0]}); the run directory "
                              "belongs to another model: use a new --model-dir") from None
        return int(self.step.numpy())

    def save(self, step: int) -> str:
        """Write a checkpoint at ``step`` (all workers call this; only the chief's is kept)."""
        self.step.assign(step)
        return self.manager.save(checkpoint_number=step)

    def best_metrics(self) -> dict | None:
        return run_dir.read_best(self.model_dir)

    def save_best(self, step: int, metrics: dict, key: str = "AP") -> bool:
        """Keep this state as ``best/`` when ``metrics[key]`` beats the best so far; True if it did."""
        if not self.chief:
            return False
        best = self.best_metrics()
        if best is not None and best["metrics"].get(key, -1.0) >= metrics[key]:
            return False
        self.step.assign(step)
        self._best.save(checkpoint_number=step)
        record = {"step": step, "key": key, "metrics": {k: v for k, v in metrics.items() if k != "per_class"}}
        run_dir.write_best(self.model_dir, record)
        return True

    def close(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


def remove_partial_checkpoints(model_dir: str, latest: str | None) -> list[str]:
    """Delete the leftovers of a save that was killed; return the deleted paths.

    ``latest``: the newest complete checkpoint (``tf.train.latest_checkpoint``). Leftovers are
    ``ckpt-N_temp*`` staging directories and ``ckpt-N.*`` files with N above ``latest``'s
    number: files the state file never recorded, which a resumed run would write again.
    """
    newest = int(latest.rsplit("-", 1)[1]) if latest else -1
    prefix = storage.join(model_dir, run_dir.CHECKPOINT_NAME + "-")
    removed = []
    for path in storage.glob(prefix + "*"):
        number = path[len(prefix):].split(".", 1)[0].split("_", 1)[0]
        partial = "_temp" in path[len(prefix):] or (number.isdigit() and int(number) > newest)
        if partial:
            (storage.remove_tree if storage.isdir(path) else storage.remove)(path)
            removed.append(path)
    return removed


def check_resumable(cfg, model_dir: str, metadata: dict | None = None) -> None:
    """Refuse to resume a run directory whose model or categories differ from this run's.

    ``metadata``: the training set's metadata; its category table (index, id, name) must
    equal the one in ``model_dir``, since a resumed model keeps
    the class meaning it was trained with.
    """
    if tf.train.latest_checkpoint(model_dir) is None:
        return
    if metadata is not None:
        _check_categories(model_dir, metadata)
    if not run_dir.holds_run(model_dir):
        return
    old = run_dir.load_config(model_dir).model
    new = cfg.model
    fields = [f.name for f in dataclasses.fields(new) if f.name != "backbone_weights"
              and getattr(old, f.name) != getattr(new, f.name)]
    if fields:
        shown = ", ".join(f"model.{f}: {getattr(old, f)} -> {getattr(new, f)}" for f in fields)
        raise ConfigError(f"{model_dir} holds checkpoints of another model ({shown}); use a new --model-dir "
                          "or --init-checkpoint to start from it")


def _check_categories(model_dir: str, metadata: dict) -> None:
    """DataError when ``model_dir``'s category table differs from ``metadata``'s (if it has one)."""
    saved = run_dir.read_metadata(model_dir)
    if saved is None:
        return
    had, got = run_dir.category_table(saved), run_dir.category_table(metadata)
    if had == got:
        return
    i = next((i for i, (a, b) in enumerate(zip(had, got)) if a != b), min(len(had), len(got)))

    def show(table):
        return "index {} id {} {!r}".format(*table[i]) if i < len(table) else "nothing"
    raise DataError(f"{model_dir} was trained on other categories ({show(had)} there, {show(got)} in this "
                    "dataset); resume with the run's dataset, or use a new --model-dir")


def init_from_checkpoint(model, cfg, path: str, build_model) -> str:
    """Initialise ``model`` from another run's checkpoint; return "model" or "backbone".

    ``path`` is a run directory (its newest checkpoint is used) or a checkpoint prefix
    inside one. The backbone and width must match. When the class count and head width
    match too, the whole model is restored: the other ``model`` fields (input size, batch
    norm settings, heatmap bias) change no weight's shape, so fine-tuning at another input
    size keeps the trained heads. Otherwise only the backbone is restored and the heads keep
    their fresh initialisation. ``build_model(cfg)`` builds the source model (called inside
    the caller's strategy scope).
    """
    ckpt = run_dir.latest_checkpoint(path)
    if ckpt is None:
        raise ConfigError(f"--init-checkpoint {path}: no checkpoint there (give a run directory of "
                          "`centernet train` or a ckpt-N prefix inside one)")
    src_cfg = run_dir.load_config(path)
    src, dst = src_cfg.model, cfg.model
    if src.backbone != dst.backbone or src.width != dst.width:
        raise ConfigError(f"--init-checkpoint {path}: its backbone is {src.backbone} (width {src.width}), this "
                          f"run's is {dst.backbone} (width {dst.width}); they must match")
    whole = (src.num_classes, src.head_channels) == (dst.num_classes, dst.head_channels)
    if whole:
        tf.train.Checkpoint(**model_trackables(model)).restore(ckpt).expect_partial() \
            .assert_existing_objects_matched()
        return "model"
    source = build_model(src_cfg, load_backbone_weights=False)
    tf.train.Checkpoint(**model_trackables(source)).restore(ckpt).expect_partial().assert_existing_objects_matched()
    for target, value in zip(model.backbone.weights, source.backbone.weights, strict=True):
        if tuple(target.shape) != tuple(value.shape):
            raise ConfigError(f"--init-checkpoint {path}: backbone weight {value.path} has shape "
                              f"{tuple(value.shape)}, this model's {tuple(target.shape)}")
        target.assign(value)
    return "backbone"
