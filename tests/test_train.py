"""The training loop in one process: input checks, run directory, resume, NaN stop, init, best, logs."""
import dataclasses
import glob
import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from rich.console import Console

from centernet_core.inference import coco_eval
from centernet_core.training import checkpoints
from centernet_core.training import optim
from centernet_core import config as config_lib, run_dir
from centernet_core.errors import ConfigError, DataError
from centernet_core.training.loop import TrainingDiverged, train

TINY = ["model.input_size=64", "runtime.global_batch_size=4", "train.scale_with_batch=false", "train.steps=4",
        "train.warmup_steps=1", "runtime.steps_per_loop=2", "train.log_every=2", "train.checkpoint_every=2",
        "data.shuffle_buffer=8", "train.keep_checkpoints=2"]


def tiny_cfg(*extra):
    return config_lib.resolve("shapes-tiny", profile="cpu", overrides=TINY + list(extra))


def with_data(cfg, train=None, val=None, eval_every=None):
    """``cfg`` with the data / eval choices the CLI's --data, --val-data, --eval-every make."""
    items = [f"data.train={train}"] if train else []
    items += [f"data.val={val}"] if val else []
    items += [f"train.eval_every={eval_every}"] if eval_every is not None else []
    return config_lib.override(cfg, items)


def _train_pattern(shapes_dataset):
    return os.path.join(shapes_dataset, "train-*.tfrecord")


def _val_pattern(shapes_dataset):
    return os.path.join(shapes_dataset, "val-*.tfrecord")


def _checkpoint_steps(model_dir):
    return sorted(int(p.split("ckpt-")[1].split(".")[0]) for p in glob.glob(os.path.join(model_dir, "ckpt-*.index")))


def _event_tags(directory):
    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_missing_data_fails_before_anything_is_written(tmp_path):
    run = str(tmp_path / "run")
    with pytest.raises(DataError, match="no training data: pass --data PATTERN"):
        train(tiny_cfg(), run)
    with pytest.raises(DataError, match="no files match --data '/nowhere/train-\\*'"):
        train(with_data(tiny_cfg(), "/nowhere/train-*"), run)
    assert not os.path.exists(run)


def test_class_count_mismatch_says_what_to_set(shapes_dataset, tmp_path):
    with pytest.raises(ConfigError, match="has 3 categories but model.num_classes is 5; add --set model.num_classes=3"):
        train(with_data(tiny_cfg("model.num_classes=5"), _train_pattern(shapes_dataset)), str(tmp_path / "run"))


def test_eval_needs_validation_data(shapes_dataset, tmp_path):
    with pytest.raises(ConfigError, match="train.eval_every=2 needs validation data"):
        train(with_data(tiny_cfg(), _train_pattern(shapes_dataset), eval_every=2), str(tmp_path / "run"))


def test_run_directory_resume_and_learning_rate(shapes_dataset, tmp_path, monkeypatch):
    from centernet_core.data import pipeline

    starts = []

    def build_dataset(*args, start_step=0, **kwargs):
        starts.append(start_step)
        return real_build_dataset(*args, start_step=start_step, **kwargs)
    real_build_dataset = pipeline.build_dataset
    monkeypatch.setattr(pipeline, "build_dataset", build_dataset)
    run = str(tmp_path / "run")
    cfg = tiny_cfg("train.steps=6", "train.schedule=step", "train.decay_boundaries=[3]", "train.decay_rate=0.5")
    out = io.StringIO()
    first = train(with_data(config_lib.override(cfg, ["train.steps=4"]), _train_pattern(shapes_dataset)), run,
                  show_progress=False, console=Console(file=out, width=200))
    # runtime.profile is reported with what it chose
    assert out.getvalue().splitlines()[0] == "profile cpu: default strategy, float32, global batch 4 on 1 replica(s)"
    assert (first.step, first.start_step, first.status) == (4, 0, "finished")
    assert np.isfinite(first.losses["total"]) and set(first.losses) == {"total", "heatmap", "size", "offset"}
    assert _checkpoint_steps(run) == [2, 4]  # keep_checkpoints=2
    saved = run_dir.load_config(run)
    assert saved.data.train == _train_pattern(shapes_dataset) and saved.model.input_size == 64
    meta = json.load(open(os.path.join(run, run_dir.METADATA_FILE)))
    assert [c["name"] for c in meta["categories"]] == ["circle", "square", "triangle"]
    assert {"loss/total", "loss/heatmap", "loss/size", "loss/offset", "learning_rate",
            "images_per_second"} <= _event_tags(os.path.join(run, "logs", "train"))

    second = train(with_data(cfg, _train_pattern(shapes_dataset)), run, show_progress=False)
    assert (second.start_step, second.step) == (4, 6)
    assert starts == [0, 4]  # the resumed pipeline is seeded by its start step, not replayed
    assert _checkpoint_steps(run) == [4, 6]
    optimizer_steps = tf.train.load_variable(tf.train.latest_checkpoint(run),
                                             "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(optimizer_steps) == 6  # the schedule continues from the restored optimizer step
    schedule = optim.learning_rate_schedule(cfg.train)
    assert float(schedule(6)) == pytest.approx(cfg.train.learning_rate * 0.5)


def test_resume_refuses_another_model_or_categories(shapes_dataset, tmp_path):
    run = str(tmp_path / "run")
    train(with_data(tiny_cfg("train.steps=2"), _train_pattern(shapes_dataset)), run, show_progress=False)
    meta_name = run_dir.METADATA_FILE
    run_files = {name: open(os.path.join(run, name)).read() for name in ("config.yaml", meta_name)}
    with pytest.raises(ConfigError, match="holds checkpoints of another model \\(model.head_channels: 32 -> 16\\)"):
        train(with_data(tiny_cfg("model.head_channels=16"), _train_pattern(shapes_dataset)), run)
    # the same class count, other ids and names: the run's category table must not be replaced
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(os.path.join(shapes_dataset, "train-00000-of-00001.tfrecord"), other)
    meta = json.load(open(os.path.join(shapes_dataset, "train.meta.json")))
    meta["categories"] = [dict(c, id=c["id"] + 10, name=c["name"].upper()) for c in meta["categories"]]
    (other / "train.meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"^\S+ was trained on other categories \(index 0 id 1 'circle' there, "
                                        r"index 0 id 11 'CIRCLE' in this dataset\); resume with the run's dataset"):
        train(with_data(tiny_cfg("train.steps=4"), str(other / "train-*.tfrecord")), run)
    assert {name: open(os.path.join(run, name)).read() for name in run_files} == run_files
    # a failed restore leaves the run files alone too
    os.remove(os.path.join(run, "config.yaml"))  # so check_resumable cannot see the model change
    with pytest.raises(ConfigError, match="does not fit this model"):
        train(with_data(tiny_cfg("model.head_channels=16"), _train_pattern(shapes_dataset)), run, show_progress=False)
    assert not os.path.exists(os.path.join(run, "config.yaml"))  # not written for the wrong model
    assert open(os.path.join(run, meta_name)).read() == run_files[meta_name]


def test_train_seed_sets_the_initial_weights(tmp_path, monkeypatch):
    from centernet_core.modeling import model as model_lib

    class Built(Exception):
        pass

    def initial_weights(seed):
        def build_model(cfg):
            raise Built([w.numpy() for w in model_lib_build(cfg).weights])
        with monkeypatch.context() as m:
            m.setattr(model_lib, "build_model", build_model)
            with pytest.raises(Built) as built:
                train(tiny_cfg(f"train.seed={seed}"), str(tmp_path / f"run{seed}"),
                      dataset_fn=lambda ctx: None, show_progress=False)
        return built.value.args[0]
    model_lib_build = model_lib.build_model
    tf.random.uniform([3])  # disturb the global random state: the seed must override it
    a, b, c = initial_weights(1), initial_weights(1), initial_weights(2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_nan_in_the_data_stops_and_keeps_the_last_good_checkpoint(shapes_dataset, tmp_path):
    cfg = tiny_cfg("train.steps=8")
    from centernet_core.data.pipeline import build_dataset

    def poisoned(ctx):
        ds = build_dataset(_train_pattern(shapes_dataset), cfg, True, batch_size=4, input_context=ctx)

        def plant(i, batch):
            features, targets = batch
            colour = features["colour_transform"]  # the 5th step's batch turns to NaN on the accelerator
            return dict(features, colour_transform=tf.where(i == 4, colour * np.nan, colour)), targets
        return ds.enumerate().map(plant)

    run = str(tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=r"loss is NaN or Inf at step 5; .*last good checkpoint: .*ckpt-4\)"):
        train(cfg, run, dataset_fn=poisoned, show_progress=False)
    assert _checkpoint_steps(run) == [2, 4]
    restored = tf.train.load_variable(tf.train.latest_checkpoint(run), "step/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(restored) == 4


def test_init_checkpoint_with_new_class_count_keeps_backbone(shapes_dataset, tmp_path):
    from centernet_core.modeling.model import build_model

    source_dir = str(tmp_path / "source")
    source = train(with_data(tiny_cfg("train.steps=2"), _train_pattern(shapes_dataset)), source_dir, show_progress=False)
    trained = [w.numpy() for w in source.model.backbone.weights]
    new_cfg = tiny_cfg("model.num_classes=2")
    model = build_model(new_cfg)
    fresh_head = model.heads[-1]["heatmap"].weights[-2].numpy()
    assert checkpoints.init_from_checkpoint(model, new_cfg, source_dir, build_model) == "backbone"
    for w, expected in zip(model.backbone.weights, trained, strict=True):
        np.testing.assert_array_equal(w.numpy(), expected)
    np.testing.assert_array_equal(model.heads[-1]["heatmap"].weights[-2].numpy(), fresh_head)  # re-initialised
    assert model.heads[-1]["heatmap"].weights[-2].shape[-1] == 2

    same = build_model(tiny_cfg())
    assert checkpoints.init_from_checkpoint(same, tiny_cfg(), source_dir, build_model) == "model"
    images = tf.random.stateless_uniform([1, 64, 64, 3], [1, 2])
    np.testing.assert_allclose(same(images)[-1]["heatmap"], source.model(images)[-1]["heatmap"], atol=1e-5)

    bigger_cfg = tiny_cfg("model.input_size=96", "model.bn_momentum=0.99")  # fine-tune at another size
    bigger = build_model(bigger_cfg)
    assert checkpoints.init_from_checkpoint(bigger, bigger_cfg, source_dir, build_model) == "model"
    for new_head, old_head in zip(bigger.heads[-1].values(), source.model.heads[-1].values(), strict=True):
        for w, expected in zip(new_head.weights, old_head.weights, strict=True):
            np.testing.assert_array_equal(w.numpy(), expected.numpy())  # trained heads kept

    with pytest.raises(ConfigError, match="its backbone is resnet18 \\(width 0.25\\), this run's is resnet18 "
                                          "\\(width 0.5\\)"):
        checkpoints.init_from_checkpoint(build_model(tiny_cfg("model.width=0.5")), tiny_cfg("model.width=0.5"),
                                         source_dir, build_model)
    run = train(with_data(tiny_cfg("train.steps=2"), _train_pattern(shapes_dataset)), str(tmp_path / "fine"),
                init_checkpoint=source_dir, show_progress=False)
    assert run.init == "model"


def test_best_checkpoint_follows_ap(tmp_path):
    from centernet_core.modeling.model import build_model

    model = build_model(tiny_cfg())
    optimizer = optim.build_optimizer(tiny_cfg().train)
    state = checkpoints.RunState(model, optimizer, str(tmp_path), keep=2)
    assert state.save_best(10, {"AP": 0.1, "AP50": 0.3})
    assert not state.save_best(20, {"AP": 0.05, "AP50": 0.4})
    assert state.save_best(30, {"AP": 0.2, "AP50": 0.5, "per_class": {"circle": 0.1}})
    best = json.load(open(tmp_path / "best" / "best.json"))
    assert best == {"step": 30, "key": "AP", "metrics": {"AP": 0.2, "AP50": 0.5}}
    assert tf.train.latest_checkpoint(str(tmp_path / "best")).endswith("ckpt-30")


def test_train_and_eval_records_history_best_and_pictures(shapes_dataset, tmp_path):
    run = str(tmp_path / "run")
    result = train(with_data(tiny_cfg(), _train_pattern(shapes_dataset), _val_pattern(shapes_dataset), eval_every=2),
                   run, show_progress=False)
    history = [json.loads(line) for line in open(os.path.join(run, "eval.jsonl"))]
    assert [h["step"] for h in history] == [2, 4]
    assert all(h["minutes"] > 0 for h in history)
    assert result.eval["AP"] == history[-1]["AP"]
    # the eval during training is `centernet eval` of that step's checkpoint, number for number
    # (all twelve COCO numbers; APl is -1: the shapes set has no large objects)
    from centernet_core.inference.evaluate import evaluate_checkpoint
    again = evaluate_checkpoint(run)
    assert again["checkpoint"].endswith("ckpt-4")
    assert {k: again[k] for k in coco_eval.STAT_NAMES} == {k: history[-1][k] for k in coco_eval.STAT_NAMES}
    assert again["APl"] == -1.0 and again["images"] == 8
    assert set(history[-1]) == {*coco_eval.STAT_NAMES, "step", "minutes", "best"}
    best = json.load(open(os.path.join(run, "best", "best.json")))
    assert best["step"] in (2, 4) and best["metrics"]["AP"] == max(h["AP"] for h in history)
    tags = _event_tags(os.path.join(run, "logs", "eval"))
    assert {"coco/AP", "coco/AP50", "coco/minutes", "detections"} <= tags
    assert {"coco_per_class/circle", "coco_per_class/square", "coco_per_class/triangle"} <= tags
    assert run_dir.load_config(run).train.eval_every == 2


@pytest.mark.parametrize("precision, compute", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_runs_and_restores_the_policy(shapes_dataset, tmp_path, precision, compute):
    import keras

    result = train(with_data(tiny_cfg("train.steps=2", f"runtime.precision={precision}"), _train_pattern(shapes_dataset)),
                   str(tmp_path / "run"), show_progress=False)
    assert result.step == 2 and np.isfinite(result.losses["total"])
    assert result.model.heads[0]["heatmap"].compute_dtype == compute
    assert keras.mixed_precision.global_policy().name == "float32"
    names = [n for n, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(tmp_path / "run")))]
    assert any("dynamic_scale" in n for n in names) == (precision == "mixed_float16")


def _gradient_poisoned(monkeypatch, shapes_dataset, cfg, at_step=4):
    """A dataset_fn whose ``at_step``-th batch (0-based) gives a finite loss and a NaN gradient.

    The loss gains ``sqrt(s) - sqrt(s)`` with ``s = sum(w^2) * (1 - poison)``: its value is 0 on
    every step, but where ``poison`` is 1, ``s`` is 0 and the gradient of ``sqrt`` at 0 is
    infinite, so every weight of the first layer gets ``inf - inf = NaN``.
    """
    from centernet_core.data.pipeline import build_dataset
    from centernet_core.tasks import build_task as real_build_task
    from centernet_core.training import loop as loop_lib

    class PoisonedGradient:
        def __init__(self, task):
            self._task, self.model = task, None

        def __getattr__(self, name):
            return getattr(self._task, name)

        def loss(self, outputs, targets, num_objects):
            losses = dict(self._task.loss(outputs, targets, num_objects))
            w = self.model.trainable_variables[0]
            s = tf.reduce_sum(tf.cast(w, tf.float32) ** 2) * (1.0 - tf.reduce_max(targets["poison"]))
            losses["total"] = losses["total"] + (tf.sqrt(s) - tf.sqrt(s))
            return losses

    task = {}

    def build_task(c):
        task["t"] = PoisonedGradient(real_build_task(c))
        return task["t"]

    real_make_loop = loop_lib.make_train_loop

    def make_train_loop(strategy, model, optimizer, t, *args, **kwargs):
        t.model = model
        return real_make_loop(strategy, model, optimizer, t, *args, **kwargs)

    monkeypatch.setattr(loop_lib, "build_task", build_task)
    monkeypatch.setattr(loop_lib, "make_train_loop", make_train_loop)

    def dataset_fn(ctx):
        ds = build_dataset(_train_pattern(shapes_dataset), cfg, True, batch_size=4, input_context=ctx)

        def plant(i, batch):
            features, targets = batch
            poison = tf.fill([tf.shape(targets["mask"])[0]], tf.cast(i == at_step, tf.float32))
            return features, dict(targets, poison=poison)
        return ds.enumerate().map(plant)
    return dataset_fn


def test_nan_gradient_with_a_finite_loss_stops(shapes_dataset, tmp_path, monkeypatch):
    cfg = tiny_cfg("train.steps=8")
    run = str(tmp_path / "run")
    with pytest.raises(TrainingDiverged, match=r"NaN or Inf at step 5; .*last good checkpoint: .*ckpt-4\)"):
        train(cfg, run, dataset_fn=_gradient_poisoned(monkeypatch, shapes_dataset, cfg), show_progress=False)
    assert _checkpoint_steps(run) == [2, 4]


def test_float16_loss_scaling_skips_an_overflowing_step_and_stops_on_a_nan_loss(shapes_dataset, tmp_path,
                                                                                 monkeypatch):
    cfg = tiny_cfg("train.steps=8", "runtime.precision=mixed_float16")
    run = str(tmp_path / "run")
    result = train(cfg, run, dataset_fn=_gradient_poisoned(monkeypatch, shapes_dataset, cfg), show_progress=False)
    assert result.step == 8 and np.isfinite(result.losses["total"])
    for w in result.model.weights:
        assert np.all(np.isfinite(np.asarray(w, np.float32))), w.path
    ckpt = tf.train.latest_checkpoint(run)
    scale = [n for n, _ in tf.train.list_variables(ckpt) if "dynamic_scale" in n]
    # skipped, not applied: the scale halves on each skipped step (fp16 may overflow on its own too)
    assert len(scale) == 1 and float(tf.train.load_variable(ckpt, scale[0])) <= 2.0 ** 14

    from centernet_core.data.pipeline import build_dataset

    def nan_loss(ctx):
        ds = build_dataset(_train_pattern(shapes_dataset), cfg, True, batch_size=4, input_context=ctx)

        def plant(i, batch):
            features, targets = batch
            colour = features["colour_transform"]
            return dict(features, colour_transform=tf.where(i == 4, colour * np.nan, colour)), targets
        return ds.enumerate().map(plant)
    monkeypatch.undo()
    with pytest.raises(TrainingDiverged, match=r"loss is NaN or Inf at step 5"):
        train(cfg, str(tmp_path / "nan"), dataset_fn=nan_loss, show_progress=False)
