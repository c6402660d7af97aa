"""Pretrained starts (issue 16): ImageNet trunks, torchvision ResNet imports, fine-tuning, and AP-0 warnings.

No test touches the network: ``model.backbone_weights: imagenet`` reads a local file of
keras.applications' own layout (``$CENTERNET_KERAS_WEIGHTS_DIR``), and the torchvision side
is tests/torch_reference/torchvision_resnet.py (torchvision's module names, random weights).
"""
import os
import sys

import h5py
import keras
import numpy as np
import pytest

from centernet_core.errors import ConfigError
from centernet_core.modeling.backbones import build_backbone, registry

try:
    import torch
except ImportError:  # the `dev` extra pins torch; without it only the torch-free tests run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the `dev` extra) builds the reference network")
TOLERANCE = 1e-4


# ---------------------------------------------------------------- model.backbone_weights: imagenet

def _application(name):
    if name == "resnet50":
        return keras.applications.ResNet50(include_top=False, weights=None)
    return keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(224, 224, 3))


def _write_imagenet_file(name, folder, seed=0):
    """A keras.applications ``include_top=False`` file (legacy HDF5, layer order) with known random values.

    Returns ``{layer name: [arrays]}`` of what the file holds.
    """
    from keras.src.legacy.saving import legacy_h5_format  # the writer of keras.applications' .h5 files

    app = _application(name)
    rng = np.random.default_rng(seed)
    for w in app.weights:
        value = rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path else rng.standard_normal(w.shape)
        w.assign(value.astype(np.float32))
    width = 1.0 if name == "resnet50" else 0.35
    path = os.path.join(folder, registry.get_backbone_spec(name).imagenet(width).name)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, app)
    return path, {layer.name: [w.numpy() for w in layer.weights] for layer in app.layers if layer.weights}


@pytest.mark.parametrize("name, width", [("resnet50", 1.0), ("mobilenetv2", 0.35)])
def test_imagenet_weights_come_from_keras_applications_file(tmp_path, monkeypatch, name, width):
    def no_network(*args, **kwargs):
        raise AssertionError("tests never download")
    monkeypatch.setattr(keras.utils, "get_file", no_network)
    path, expected = _write_imagenet_file(name, str(tmp_path))
    # The file has keras.applications' own layout: keras.applications itself loads it.
    kwargs = {} if name == "resnet50" else {"alpha": width, "input_shape": (224, 224, 3)}
    app = getattr(keras.applications, "ResNet50" if name == "resnet50" else "MobileNetV2")(
        include_top=False, weights=path, **kwargs)
    np.testing.assert_array_equal(app.layers[-3].weights[0].numpy(), expected[app.layers[-3].name][0])

    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(tmp_path))
    backbone = build_backbone(name, width=width, weights="imagenet")
    checked = 0
    for layer_name, values in expected.items():
        for w, value in zip(backbone.get_layer(layer_name).weights, values, strict=True):
            np.testing.assert_array_equal(w.numpy(), value, err_msg=w.path)
            checked += 1
    assert checked == len(app.weights) > 100  # every trunk weight, BN moving statistics included
    fresh = build_backbone(name, width=width)
    assert not np.array_equal(fresh.get_layer("Conv_1" if name != "resnet50" else "conv1_conv").weights[0].numpy(),
                              expected["Conv_1" if name != "resnet50" else "conv1_conv"][0])


def test_imagenet_resolves_through_keras_cache_and_names_what_has_none(tmp_path, monkeypatch):
    path, _ = _write_imagenet_file("resnet50", str(tmp_path))
    asked = []

    def cached(fname, origin, cache_subdir, file_hash):  # keras.utils.get_file, offline
        asked.append((fname, origin, cache_subdir, file_hash))
        return path
    monkeypatch.delenv(registry.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(keras.utils, "get_file", cached)
    spec = registry.get_backbone_spec("resnet50")
    assert registry.imagenet_weights_path(spec, 1.0) == path
    assert asked == [("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                      "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                      "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "models",
                      "4d473c1dd8becc155b73f8504c6f6626")]
    mobile = registry.get_backbone_spec("mobilenetv2").imagenet(0.5)
    assert mobile.name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
    with pytest.raises(ConfigError, match="keras.applications has MobileNetV2 ImageNet weights for model.width"):
        registry.get_backbone_spec("mobilenetv2").imagenet(0.25)
    with pytest.raises(ConfigError, match="resnet18 has no keras.applications ImageNet file .*--from torchvision"):
        build_backbone("resnet18", width=0.25, weights="imagenet")
    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="not found .*nothing is downloaded"):
        build_backbone("resnet50", weights="imagenet")


# ---------------------------------------------------------------- centernet import --from torchvision

def _torchvision_resnet18(seed=0):
    sys.path.insert(0, os.path.dirname(__file__))
    from torch_reference.large_hourglass import randomize
    from torch_reference.torchvision_resnet import resnet18
    return randomize(resnet18(), seed=seed)


def _trunk(model):
    """The ResNet-18 trunk's stride-32 output ``[B, S / 32, S / 32, 512]`` of a built model or backbone."""
    backbone = getattr(model, "backbone", model)
    return keras.Model(backbone.input, backbone.get_layer("stage4_1_relu").output)


def _assert_trunk_matches(trunk, net, size=96, seed=1):
    """Same picture: ours on normalised B, G, R; torchvision on R, G, B rescaled to ImageNet's std."""
    from centernet_core.importers.torchvision_pth import IMAGENET_STD_RGB
    from centernet_core.pixels import STD_BGR
    x = np.random.default_rng(seed).standard_normal((1, size, size, 3)).astype(np.float32)  # [B, S, S, 3] B, G, R
    ours = trunk(x, training=False).numpy()
    rgb = x[..., ::-1] * (np.asarray(STD_BGR[::-1]) / np.asarray(IMAGENET_STD_RGB)).astype(np.float32)
    with torch.no_grad():
        theirs = net.features(torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))).numpy()
    theirs = theirs.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    assert ours.shape == theirs.shape == (1, size // 32, size // 32, 512)
    assert theirs.std() > 0.1
    diff = float(np.abs(ours - theirs).max())
    assert diff <= TOLERANCE, f"max abs diff {diff}"


def test_resnet18_plan_places_every_torchvision_key_once():
    from centernet_core.importers.torchvision_pth import resnet18_plan
    if torch is None:
        pytest.skip("torch builds the key list")
    keys = [k for e in resnet18_plan() for k in e.keys()]
    torch_keys = {k for k in _torchvision_resnet18().state_dict() if not k.endswith("num_batches_tracked")}
    assert len(keys) == len(set(keys)) == 100 and set(keys) == torch_keys - {"fc.weight", "fc.bias"}
    by_layer = {e.layer: e for e in resnet18_plan()}
    assert by_layer["stage3_0_skip"].conv == "layer3.0.downsample.0" and by_layer["stage3_0_skip"].bn == \
        "layer3.0.downsample.1"
    assert by_layer["stage2_1_conv2"].bn == "layer2.1.bn2" and "stage1_0_skip" not in by_layer


@needs_torch
def test_torchvision_resnet18_import_gives_pytorch_features(tmp_path):
    from centernet_core import config as config_lib
    from centernet_core.importers import torchvision_pth as tv
    from centernet_core.modeling.model import build_model
    from centernet_core.training import checkpoints
    net = _torchvision_resnet18()
    path, out = str(tmp_path / "resnet18-f37072fd.pth"), str(tmp_path / "run")
    torch.save(net.state_dict(), path)
    cfg = config_lib.resolve("resnet18-custom", overrides=["model.input_size=96"])
    summary = tv.import_torchvision_pth(path, out, cfg)
    assert (summary["tensors"], summary["ignored"], summary["backbone_only"]) == (100, 2, True)
    assert summary["parameters"] == sum(v.numel() for k, v in net.state_dict().items()
                                        if not k.startswith("fc.") and "num_batches" not in k)
    # What `centernet train -e resnet18-custom --init-checkpoint RUN` does with it (3 classes from the data):
    cfg3 = config_lib.override(cfg, ["model.num_classes=3"])
    model = build_model(cfg3)
    assert checkpoints.init_from_checkpoint(model, cfg3, out, build_model) == "backbone"
    _assert_trunk_matches(_trunk(model), net)
    assert model.heads[-1]["heatmap"].weights[-1].shape == (3,)
    with pytest.raises(ConfigError, match="torchvision's ResNet-50 is v1.5"):
        tv.import_torchvision_pth(path, str(tmp_path / "r50"), config_lib.resolve("resnet50-coco"))
    assert not os.path.exists(tmp_path / "r50")


@needs_torch
def test_torchvision_import_is_all_or_nothing():
    from centernet_core.importers import torchvision_pth as tv
    from centernet_core.importers.hourglass_pth import state_dict_of
    from centernet_core.importers.torch_pickle import CheckpointError
    state = state_dict_of({k: v.numpy() for k, v in _torchvision_resnet18().state_dict().items()})
    backbone = build_backbone("resnet18")
    kernel = backbone.get_layer("stem_conv").conv.kernel
    kernel.assign(np.full(kernel.shape, 7.0, np.float32))
    broken = dict(state, **{"layer5.0.conv1.weight": np.zeros(3, np.float32)})
    del broken["layer2.0.downsample.1.running_var"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layer2.0.downsample.1.running_var; keys with "
                                              r"no place in the trunk \(1\): layer5.0.conv1.weight"):
        tv.assign_resnet18(backbone, broken)
    with pytest.raises(CheckpointError, match=r"shape mismatches \(\d+\): .*model.width=1.0"):
        tv.assign_resnet18(build_backbone("resnet18", width=0.5), state)
    assert float(np.min(kernel.numpy())) == float(np.max(kernel.numpy())) == 7.0  # nothing was assigned


@needs_torch
def test_cli_imports_torchvision_resnet18(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    from test_import import run_cli
    path, out = str(tmp_path / "resnet18.pth"), str(tmp_path / "run")
    torch.save(_torchvision_resnet18(seed=2).state_dict(), path, _use_new_zipfile_serialization=False)
    r = run_cli("import", path, "--from", "torchvision", "--output", out, "--categories", "x")
    assert r.returncode == 2 and "--categories belongs to --from centernet-pth" in r.stderr
    r = run_cli("import", path, "--from", "torchvision", "--output", out)
    assert r.returncode == 0, r.stderr
    # torchvision resnet18: 11,689,512 parameters - fc 513,000 + 9,600 BN statistics
    assert "imported 100 tensors, 11,186,112 values into the ResNet-18 trunk of resnet18-custom" in r.stdout
    assert f"next: centernet train --experiment resnet18-custom --init-checkpoint {out}" in r.stdout
    assert sorted(os.listdir(out)) == ["checkpoint", "ckpt-0.data-00000-of-00001", "ckpt-0.index", "config.yaml",
                                       "import.json"]


# ---------------------------------------------------------------- fine-tuning on a new class set

TINY = ["model.input_size=64", "runtime.global_batch_size=4", "train.scale_with_batch=false", "train.steps=2",
        "train.warmup_steps=1", "runtime.steps_per_loop=2", "train.log_every=2", "train.checkpoint_every=2",
        "data.shuffle_buffer=8"]


def test_finetune_from_a_3_class_run_into_5_classes_keeps_the_backbone(shapes_dataset, tmp_path, monkeypatch):
    from centernet_core import config as config_lib
    from centernet_core.data.pipeline import build_dataset
    from centernet_core.training import checkpoints, loop
    pattern = os.path.join(shapes_dataset, "train-*.tfrecord")
    cfg3 = config_lib.resolve("shapes-tiny", profile="cpu", overrides=TINY + [f"data.train={pattern}"])
    source = loop.train(cfg3, str(tmp_path / "three"), show_progress=False)
    cfg5 = config_lib.resolve("shapes-tiny", profile="cpu", overrides=TINY + ["model.num_classes=5"])

    def five_class_batches(ctx):  # the same pictures, as a dataset with 5 classes
        return build_dataset(pattern, cfg5, True, batch_size=ctx.get_per_replica_batch_size(4), input_context=ctx)
    started = {}
    real_init = checkpoints.init_from_checkpoint

    def init_and_look(model, cfg, path, build_model):  # the model as training starts from it
        how = real_init(model, cfg, path, build_model)
        started.update(backbone=[w.numpy() for w in model.backbone.weights],
                       heatmap=[w.numpy() for w in model.heads[-1]["heatmap"].weights])
        return how
    monkeypatch.setattr(checkpoints, "init_from_checkpoint", init_and_look)
    run = loop.train(cfg5, str(tmp_path / "five"), init_checkpoint=str(tmp_path / "three"),
                     dataset_fn=five_class_batches, show_progress=False)
    assert run.init == "backbone" and run.step == 2
    for got, want in zip(started["backbone"], source.model.backbone.weights, strict=True):
        np.testing.assert_array_equal(got, want.numpy(), err_msg=want.path)  # every backbone weight, BN statistics too
    old_head = [w.numpy() for w in source.model.heads[-1]["heatmap"].weights]
    assert [w.shape[-1] for w in started["heatmap"]][-2:] == [5, 5] and [w.shape[-1] for w in old_head][-2:] == [3, 3]
    assert started["heatmap"][0].shape == old_head[0].shape and not np.allclose(started["heatmap"][0], old_head[0])


# ---------------------------------------------------------------- AP 0 for several evaluations

class _Reporter:
    def __init__(self):
        self.lines = []

    def log_eval(self, *args, **kwargs):
        pass

    def print(self, text):
        self.lines.append(text)


class _State:
    def save_best(self, step, metrics):
        return False


def test_validation_ap_stuck_at_zero_warns_with_likely_causes(tmp_path, monkeypatch):
    from centernet_core import config as config_lib
    from centernet_core.training import loop
    aps = iter([0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0])
    monkeypatch.setattr(loop, "evaluate_during_training", lambda *args: ({"AP": next(aps), "AP50": 0.0}, None))
    cfg = config_lib.resolve("shapes-tiny", overrides=["data.val=data/pets/val-*.tfrecord"])
    rep, warnings_after = _Reporter(), []
    for step in range(1, 8):
        if step == 5:  # a resumed run: the streak is read from eval.jsonl, not kept in memory
            rep = _Reporter()
        loop._eval(None, cfg, {}, _State(), rep, step * 10, 0.0, True, str(tmp_path))
        warnings_after.append(len(rep.lines))
    assert warnings_after == [0, 0, 0, 0, 0, 1, 2]  # from the third AP 0 in a row (an AP > 0 restarts the count)
    line = rep.lines[-1]
    assert line.startswith("warning: validation AP has been 0 for the last 3 evaluations (step 70)")
    for cause in ("train.steps", "train.learning_rate", "one output cell at model.input_size=128",
                  "centernet prepare check TRAIN_PREFIX --input-size 128", "data.val (data/pets/val-*.tfrecord)",
                  "class ids"):
        assert cause in line
    assert "\n" not in line
