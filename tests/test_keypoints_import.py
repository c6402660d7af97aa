"""`centernet import --from centernet-pth` of the original's multi_pose Hourglass checkpoints
(multi_pose_hg_3x.pth): a pose run directory (COCO person, COCO's 17 keypoints) whose outputs
equal the PyTorch reference network with the pose heads (tests/torch_reference) to 1e-4.

The original's hps is (dx, dy) per joint, interleaved (x0, y0, x1, y1, ...), and wh, reg and
hp_offset are (x, y) pairs: the expected maps below swap each pair into this model's (y, x).
"""
import os
import sys

import numpy as np
import pytest

from centernet_core import config as config_lib, run_dir
from centernet_core.data import metadata
from centernet_core.importers import hourglass_pth as iw
from centernet_core.importers.torch_pickle import CheckpointError

try:
    import torch
except ImportError:  # the `dev` extra pins torch
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the `dev` extra) builds the reference network")
TOLERANCE = 1e-4
OUTPUTS = (("heatmap", "hm"), ("size", "wh"), ("offset", "reg"), ("joints", "hps"),
           ("keypoint_heatmap", "hm_hp"), ("keypoint_offset", "hp_offset"))
XY_PAIRS = {"wh", "reg", "hps", "hp_offset"}  # channels in (x, y) pairs in the original


def _reference(stacks=2, seed=0):
    sys.path.insert(0, os.path.dirname(__file__))
    from torch_reference.large_hourglass import HourglassNet, pose_heads, randomize
    return randomize(HourglassNet(stacks=stacks, heads=pose_heads(17)), seed=seed)


def test_pose_plan_adds_the_multi_pose_heads():
    plan = iw.hourglass_plan(2, keypoints=True)
    keys = [k for e in plan for k in e.keys()]
    assert len(keys) == len(set(keys)) == 824 + 2 * 3 * 4  # three more heads per stack
    by_layer = {e.layer: e for e in plan}
    assert by_layer["head_joints_0"] == iw.HeadEntry("hps.0", "head_joints_0", True)
    assert by_layer["head_keypoint_heatmap_1"] == iw.HeadEntry("hm_hp.1", "head_keypoint_heatmap_1", False)
    assert by_layer["head_keypoint_offset_1"] == iw.HeadEntry("hp_offset.1", "head_keypoint_offset_1", True)
    assert len(iw.hourglass_plan(2)) == len(plan) - 6  # detection plans are unchanged


def test_pose_preset_is_coco_person_with_coco_flip_pairs():
    cfg = config_lib.resolve("hourglass104-pose-coco", None, None, [])
    assert (cfg.model.task, cfg.model.num_classes, cfg.model.num_keypoints) == ("keypoints", 1, 17)
    assert list(cfg.model.keypoint_flip) == metadata.flip_from_names(metadata.COCO_KEYPOINTS)
    dla = config_lib.resolve("dla34-pose-coco", None, None, [])
    assert dla.model.keypoint_flip == cfg.model.keypoint_flip and dla.model.backbone == "dla34"
    meta = iw.coco_person_metadata(cfg, "x.pth")
    assert meta["categories"] == [{"index": 0, "id": 1, "name": "person"}]
    layout = meta["keypoints"]
    assert layout["names"] == list(metadata.COCO_KEYPOINTS) and layout["sigmas"] == list(metadata.COCO_SIGMAS)
    names = layout["names"]
    edges = {tuple(sorted((names[a - 1], names[b - 1]))) for a, b in layout["skeleton"]}
    assert len(edges) == 19 and ("left_hip", "left_knee") in edges and ("left_shoulder", "right_shoulder") in edges
    assert ("left_eye", "right_eye") in edges and ("left_ear", "left_shoulder") in edges


@pytest.fixture(scope="module")
def net():
    return _reference()


@pytest.fixture(scope="module")
def cfg():
    return config_lib.resolve("hourglass104-pose-coco", None, None, [])


def _assert_same_outputs(model, net, size, seed=1, stacks=2):
    image = np.random.default_rng(seed).standard_normal((1, size, size, 3)).astype(np.float32)  # [B, S, S, 3]
    ours = model(image, training=False)
    with torch.no_grad():
        theirs = net(torch.from_numpy(image.transpose(0, 3, 1, 2)))
    assert len(ours) == len(theirs) == stacks
    for stack in range(stacks):
        for name, key in OUTPUTS:
            want = theirs[stack][key].numpy().transpose(0, 2, 3, 1)  # NCHW -> NHWC
            if key in XY_PAIRS:  # (x, y) pairs -> (y, x): hps (dx0, dy0, dx1, ...) -> (dy0, dx0, dy1, ...)
                want = want.reshape(*want.shape[:-1], -1, 2)[..., ::-1].reshape(want.shape)
            got = ours[stack][name].numpy()
            assert got.shape == (1, size // 4, size // 4, want.shape[-1]), name
            assert want.std() > 100 * TOLERANCE, name  # random weights still give maps that vary far beyond the tolerance
            diff = float(np.abs(got - want).max())
            assert diff <= TOLERANCE, f"stack {stack} {name}: max abs diff {diff}"


@needs_torch
def test_imported_pose_run_gives_pytorch_outputs(tmp_path, net, cfg):
    from centernet_core.inference.trained import load_trained
    path, out = str(tmp_path / "multi_pose_hg_3x.pth"), str(tmp_path / "run")
    torch.save({"epoch": 150, "state_dict": net.state_dict()}, path)
    summary = iw.import_centernet_pth(path, out, cfg)
    assert (summary["tensors"], summary["epoch"]) == (848, 150)
    os.remove(path)
    trained = load_trained(out)  # what eval, export and predict do with a run directory
    assert trained.cfg.model.num_keypoints == 17 and trained.categories == [{"index": 0, "id": 1, "name": "person"}]
    layout = run_dir.read_metadata(out)["keypoints"]  # predict draws this skeleton; eval uses the sigmas
    assert layout == iw.coco_person_metadata(cfg, path)["keypoints"]
    _assert_same_outputs(trained.model, net, 128)


@needs_torch
@pytest.mark.slow
def test_pose_outputs_match_pytorch_at_512(net, cfg):
    from centernet_core.modeling.model import build_model
    model = build_model(cfg)
    iw.assign_hourglass(model, iw.state_dict_of({k: v.numpy() for k, v in net.state_dict().items()}), 2)
    _assert_same_outputs(model, net, 512, seed=2)


@needs_torch
def test_a_detection_config_refuses_a_pose_checkpoint_and_names_the_preset():
    from centernet_core.modeling.model import build_model
    small = _reference(stacks=1, seed=4)
    state = iw.state_dict_of({k: v.numpy() for k, v in small.state_dict().items()})
    detection = config_lib.resolve("hourglass104-coco", None, None, [
        "model.backbone=hourglass52", "model.num_classes=1", "model.input_size=128"])
    with pytest.raises(CheckpointError, match=r"hps.0.*a multi_pose checkpoint: --experiment hourglass104-pose-coco"):
        iw.assign_hourglass(build_model(detection), state, 1)
    pose = config_lib.override(detection, ["model.task=keypoints", "model.num_keypoints=17"])
    model = build_model(pose)
    iw.assign_hourglass(model, state, 1)  # one stack: the plan's pose heads for a single stack
    _assert_same_outputs(model, small, 128, stacks=1)
