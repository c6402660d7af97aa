"""`centernet import --from centernet-pth`: the key plan, all-or-nothing errors, and PyTorch-equal outputs.

The PyTorch side is tests/torch_reference/large_hourglass.py, a re-creation of the original's
network with its key names, given random weights (activations kept O(1)).
"""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from centernet_core import config as config_lib, run_dir
from centernet_core.importers import hourglass_pth as iw
from centernet_core.importers.torch_pickle import LEGACY_MAGIC, CheckpointError

try:
    import torch
except ImportError:  # the `dev` extra pins torch; without it only the torch-free tests run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the `dev` extra) builds the reference network")
TOLERANCE = 1e-4
OUTPUTS = (("heatmap", "hm"), ("size", "wh"), ("offset", "reg"))


def run_cli(*args):
    code = "import sys\nfrom centernet_cli.main import main\nmain(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd="/",
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)


# ---------------------------------------------------------------- without torch

def test_plan_places_every_original_key_once():
    plan = iw.hourglass_plan(2)
    keys = [k for e in plan for k in e.keys()]
    assert len(keys) == len(set(keys)) == 824  # the original's 984 state-dict entries minus 160 BN counters
    by_layer = {e.layer: e for e in plan}
    assert len(by_layer) == len(plan)
    assert by_layer["stem_conv"] == iw.ConvBNEntry("pre.0.conv", "pre.0.bn", "stem_conv")
    assert by_layer["stem_res_skip"] == iw.ConvBNEntry("pre.1.skip.0", "pre.1.skip.1", "stem_res_skip")
    assert by_layer["hg1iiiii_bottom_3_conv2"].bn == "kps.1.low2.low2.low2.low2.low2.3.bn2"
    assert by_layer["hg0i_down_0_skip"].conv == "kps.0.low2.low1.0.skip.0"  # 256 -> 384, stride 2
    assert by_layer["hg0i_up_1_skip"].conv == "kps.0.low2.low3.1.skip.0"  # the last up block: 384 -> 256
    assert "hg0_up_1_skip" not in by_layer and "hg0i_down_1_skip" not in by_layer  # identity shortcuts
    assert by_layer["inter0_input"] == iw.ConvBNEntry("inters_.0.0", "inters_.0.1", "inter0_input")
    assert by_layer["inter0_features"].conv == "cnvs_.0.0" and by_layer["features_1"].conv == "cnvs.1.conv"
    assert by_layer["head_heatmap_1"] == iw.HeadEntry("hm.1", "head_heatmap_1", False)
    assert by_layer["head_size_0"] == iw.HeadEntry("wh.0", "head_size_0", True)
    assert by_layer["head_offset_1"] == iw.HeadEntry("reg.1", "head_offset_1", True)
    backbone = [k for e in iw.hourglass_plan(2, heads=False) for k in e.keys()]
    assert len(backbone) == 824 - 24 and all(k.startswith(iw.BACKBONE_PREFIXES) for k in backbone)
    # one stack (hourglass52): stem 20 + stack 380 + heads 12; two stacks add 380 + 12 and 20 between them
    assert len([k for e in iw.hourglass_plan(1) for k in e.keys()]) == 20 + 380 + 12


def test_state_dict_of_strips_wrappers_and_batch_counters():
    w = np.ones((2, 3), np.float32)
    got = iw.state_dict_of({"epoch": 3, "state_dict": {"module.pre.0.conv.weight": w,
                                                       "module.pre.0.bn.num_batches_tracked": np.array(7)}})
    assert list(got) == ["pre.0.conv.weight"] and got["pre.0.conv.weight"] is w
    assert list(iw.state_dict_of({"module.module.kps.0.x": w})) == ["kps.0.x"]  # CornerNet: a bare state dict
    with pytest.raises(CheckpointError, match="expected a dict with 'state_dict'"):
        iw.state_dict_of({"epoch": 1, "lr": 0.1})


def test_coco_category_table_is_the_original_class_order():
    cats = iw.COCO_CATEGORIES
    assert len(cats) == 80 and [c["index"] for c in cats] == list(range(80))
    ids = [c["id"] for c in cats]
    assert ids == sorted(set(ids)) and ids[0] == 1 and ids[-1] == 90
    assert (cats[0]["name"], cats[9]["name"], cats[79]["name"]) == ("person", "traffic light", "toothbrush")
    assert {c["id"]: c["name"] for c in cats}[67] == "dining table"


def _evil_file(path, marker):
    class Call:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    with open(path, "wb") as f:
        for obj in (LEGACY_MAGIC, 1001, {"little_endian": True}, {"epoch": 1, "state_dict": Call()}, []):
            f.write(pickle.dumps(obj, protocol=2))


def test_cli_refuses_an_unsafe_pickle_and_writes_nothing(tmp_path):
    evil, out, marker = str(tmp_path / "evil.pth"), tmp_path / "run", tmp_path / "pwned"
    _evil_file(evil, marker)
    r = run_cli("import", "--from", "centernet-pth", evil, "--output", str(out))
    assert r.returncode == 1, r.stderr
    assert "refused to load: the pickle asks for 'posix.system'" in r.stderr or "'os.system'" in r.stderr
    # one error line, last (TensorFlow's own start-up log lines may precede it)
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] == r.stderr.strip().splitlines()[-1:]
    assert "Traceback" not in r.stderr
    assert not out.exists() and not marker.exists()
    r = run_cli("import", "--from", "cornernet-pth", evil, "--output", str(out))
    assert r.returncode == 2 and "--from 'cornernet-pth' is not supported; valid: centernet-pth" in r.stderr
    r = run_cli("import", "--from", "centernet-pth", evil, "--output", str(out), "--experiment", "resnet18-coco")
    assert r.returncode == 2 and "imports Hourglass checkpoints" in r.stderr and not out.exists()


# ---------------------------------------------------------------- against the PyTorch network

@pytest.fixture(scope="module")
def net():
    sys.path.insert(0, os.path.dirname(__file__))
    from torch_reference.large_hourglass import HourglassNet, randomize
    return randomize(HourglassNet(num_classes=80), seed=0)


@pytest.fixture(scope="module")
def state(net):
    return iw.state_dict_of({k: v.numpy() for k, v in net.state_dict().items()})


@pytest.fixture(scope="module")
def cfg():
    return config_lib.resolve("hourglass104-coco", None, None, [])


@pytest.fixture(scope="module")
def model(cfg):
    from centernet_core.modeling.model import build_model
    return build_model(cfg)


def _assert_same_outputs(model, net, size, seed=1):
    image = np.random.default_rng(seed).standard_normal((1, size, size, 3)).astype(np.float32)  # [B, S, S, 3]
    ours = model(image, training=False)
    with torch.no_grad():
        theirs = net(torch.from_numpy(image.transpose(0, 3, 1, 2)))
    assert len(ours) == len(theirs) == 2
    for stack in range(2):
        for name, key in OUTPUTS:
            want = theirs[stack][key].numpy().transpose(0, 2, 3, 1)  # NCHW -> NHWC
            if key != "hm":
                want = want[..., ::-1]  # (w, h) -> (h, w); (dx, dy) -> (dy, dx)
            got = ours[stack][name].numpy()
            assert got.shape == (1, size // 4, size // 4, want.shape[-1])
            assert want.std() > 0.1  # random weights still give informative maps
            diff = float(np.abs(got - want).max())
            assert diff <= TOLERANCE, f"stack {stack} {name}: max abs diff {diff}"


@needs_torch
def test_a_failed_import_leaves_no_run_directory(tmp_path, net, cfg, monkeypatch):
    """All or nothing: a failure after the checkpoint is written leaves neither the run directory
    nor its staging sibling (so the next import, or a train into it, meets no half-made run)."""
    path, out = str(tmp_path / "ctdet_coco_hg.pth"), str(tmp_path / "run")
    torch.save({"epoch": 1, "state_dict": net.state_dict()}, path)

    def broken(*args):
        raise OSError("disk full")
    monkeypatch.setattr(run_dir, "write_import_record", broken)
    with pytest.raises(OSError, match="disk full"):
        iw.import_centernet_pth(path, out, cfg)
    assert os.listdir(tmp_path) == ["ctdet_coco_hg.pth"]


@needs_torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip-core", "legacy-cli"])
def test_imported_run_gives_pytorch_outputs(tmp_path, net, cfg, zip_format):
    from centernet_core.inference.trained import load_trained
    path, out = str(tmp_path / "ctdet_coco_hg.pth"), str(tmp_path / "run")
    sd = net.state_dict()
    if not zip_format:  # saved through DataParallel: every key has 'module.'
        sd = {f"module.{k}": v for k, v in sd.items()}
    torch.save({"epoch": 70, "state_dict": sd}, path, _use_new_zipfile_serialization=zip_format)
    if zip_format:
        summary = iw.import_centernet_pth(path, out, cfg)
        assert (summary["tensors"], summary["parameters"], summary["epoch"]) == (824, 191_401_512, 70)
    else:
        r = run_cli("import", "--from", "centernet-pth", path, "--output", out)
        assert r.returncode == 0, r.stderr
        assert "imported 824 tensors, 191,401,512 values into the model of hourglass104-coco (epoch 70)" in r.stdout
    os.remove(path)
    trained = load_trained(out)  # what eval, export and predict do with a run directory
    assert trained.cfg == cfg and trained.checkpoint == os.path.join(out, "ckpt-0")
    assert trained.categories == list(iw.COCO_CATEGORIES)
    assert json.load(open(os.path.join(out, run_dir.IMPORT_FILE)))["epoch"] == 70
    _assert_same_outputs(trained.model, net, 128)
    with pytest.raises(config_lib.ConfigError, match="already holds a run"):
        iw.import_centernet_pth(str(tmp_path / "unused.pth"), out, cfg)


@needs_torch
@pytest.mark.slow
def test_outputs_match_pytorch_at_512(net, state, model):
    iw.assign_hourglass(model, state, num_stacks=2)
    _assert_same_outputs(model, net, 512, seed=2)


@needs_torch
def test_missing_extra_and_misshapen_keys_fail_before_any_assignment(model, state):
    kernel = model.get_layer("backbone").get_layer("stem_conv").conv.kernel
    kernel.assign(np.full(kernel.shape, 7.0, np.float32))
    broken = dict(state)
    del broken["kps.1.low2.up1.0.bn1.running_var"]
    broken["kps.0.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as e:
        iw.assign_hourglass(model, broken, 2)
    assert "missing keys (1): kps.1.low2.up1.0.bn1.running_var" in str(e.value)
    assert "keys with no place in the model (1): kps.0.extra.weight" in str(e.value)
    voc = dict(state, **{f"hm.{i}.1.{p}": np.zeros((20, 256, 1, 1) if p == "weight" else (20,), np.float32)
                         for i in range(2) for p in ("weight", "bias")})
    with pytest.raises(CheckpointError, match=r"shape mismatches \(4\): hm.0.1.weight \(20, 256, 1, 1\) -> .*"
                                              r"the checkpoint has 20 classes: --set model.num_classes=20"):
        iw.assign_hourglass(model, voc, 2)
    with pytest.raises(CheckpointError, match=r"shape mismatches \(1\): pre.0.conv.weight \(5,\) -> stem_conv/conv/kernel"):
        iw.assign_hourglass(model, dict(state, **{"pre.0.conv.weight": np.zeros(5, np.float32)}), 2)
    assert float(np.min(kernel.numpy())) == float(np.max(kernel.numpy())) == 7.0  # nothing was assigned


@needs_torch
def test_backbone_only_takes_cornernet_style_backbones(model, state, cfg):
    # An ExtremeNet / CornerNet snapshot: 'module.' keys, the same backbone, other heads.
    foreign = {"module.t_heats.0.1.weight": np.zeros((80, 256, 1, 1), np.float32),
               "module.tl_cnvs.0.p1_conv1.conv.weight": np.zeros((128, 256, 3, 3), np.float32)}
    snapshot = {f"module.{k}": v for k, v in state.items() if k.startswith(iw.BACKBONE_PREFIXES)}
    head = model.get_layer("head_heatmap_1").out.kernel
    head.assign(np.full(head.shape, 3.0, np.float32))
    summary = iw.assign_hourglass(model, iw.state_dict_of({**snapshot, **foreign}), 2, backbone_only=True)
    assert summary["tensors"] == 800 and summary["ignored"] == 2
    assert float(np.max(head.numpy())) == 3.0  # heads keep their values
    stem = model.get_layer("backbone").get_layer("stem_conv")
    np.testing.assert_array_equal(stem.conv.kernel.numpy(), state["pre.0.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(stem.bn.moving_variance.numpy(), state["pre.0.bn.running_var"])
    with pytest.raises(CheckpointError, match=r"keys with no place in the model \(1\): inters.0.bogus"):
        iw.assign_hourglass(model, {**iw.state_dict_of(snapshot), "inters.0.bogus": np.zeros(1)}, 2, backbone_only=True)
    assert iw._run_metadata(cfg, None, True, "x.pth") is None  # new heads: categories come from the next dataset


@needs_torch
@pytest.mark.slow
def test_import_then_export_then_predict_a_picture(tmp_path, shapes_dataset):
    # One stack (hourglass52) at 128 px keeps the export affordable; it also checks the one-stack plan.
    sys.path.insert(0, os.path.dirname(__file__))
    from torch_reference.large_hourglass import HourglassNet, randomize
    path, run, exported = str(tmp_path / "hg52.pth"), str(tmp_path / "run"), str(tmp_path / "export")
    net = randomize(HourglassNet(num_classes=80, stacks=1), seed=3)
    with torch.no_grad():
        net.wh[0][1].bias.fill_(4.0)  # sizes of about 16 px, as a trained model predicts (random ones can be < 0)
    torch.save({"epoch": 1, "state_dict": net.state_dict()}, path)
    r = run_cli("import", "--from", "centernet-pth", path, "--output", run,
                "--set", "model.backbone=hourglass52", "--set", "model.input_size=128")
    assert r.returncode == 0, r.stderr
    assert "imported 412 tensors" in r.stdout
    r = run_cli("export", "--ckpt", run, "--output", exported, "--format", "saved_model")
    assert r.returncode == 0, r.stderr
    picture = sorted((tmp_path.parent / shapes_dataset / "images" / "val").glob("*.jpg"))[0]
    found = {}
    for model in (exported, run):  # the exported graph and the run directory itself give the same boxes
        out = str(tmp_path / f"pred-{len(found)}")
        r = run_cli("predict", str(picture), "--model", model, "--output", out, "--threshold", "0")
        assert r.returncode == 0, r.stderr
        found[model] = sorted(json.load(open(os.path.join(out, "detections.json"))), key=lambda d: -d["score"])[:20]
        assert os.path.exists(os.path.join(out, picture.name))
    a, b = found[exported], found[run]
    assert len(a) == 20 and {d["category_id"] for d in a} <= set(iw.COCO_IDS)
    np.testing.assert_allclose([d["bbox"] for d in a], [d["bbox"] for d in b], atol=0.05)
    np.testing.assert_allclose([d["score"] for d in a], [d["score"] for d in b], atol=1e-4)
