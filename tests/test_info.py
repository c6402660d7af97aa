"""`centernet info`: parameters, outputs and FLOPs, human and JSON."""
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from centernet_core.modeling.summary import count_flops


def run_cli(*args):
    code = "import sys\nfrom centernet_cli.main import main\nmain(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd="/",
                          env={**os.environ, "COLUMNS": "200", "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)


def test_flops_count_convolutions_exactly():
    kernel = tf.zeros((3, 3, 4, 8))
    depthwise = tf.zeros((3, 3, 8, 1))
    up = tf.zeros((4, 4, 5, 8))  # transposed conv: [kh, kw, out, in]
    fn = tf.function(lambda x: tf.nn.conv2d_transpose(
        tf.nn.depthwise_conv2d(tf.nn.conv2d(x, kernel, 2, "SAME"), depthwise, [1, 1, 1, 1], "SAME"),
        up, [1, 16, 16, 5], 2)).get_concrete_function(tf.TensorSpec([1, 16, 16, 4]))
    expected = 2 * (8 * 8 * 8 * 9 * 4 + 8 * 8 * 8 * 9 + 8 * 8 * 8 * 16 * 5)
    assert count_flops(fn.graph) == expected


def test_info_tiny_text_and_json():
    r = run_cli("info", "--experiment", "shapes-tiny", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert (report["params_total"], report["params_trainable"], report["params_non_trainable"]) == (
        902_327, 899_479, 2_848)
    assert report["outputs"] == {"stack0/heatmap": [1, 32, 32, 3], "stack0/size": [1, 32, 32, 2],
                                 "stack0/offset": [1, 32, 32, 2]}
    assert report["flops"] == pytest.approx(130_613_248, rel=0.01)
    r = run_cli("info", "--experiment", "shapes-tiny", "--set", "model.input_size=64")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stack0/heatmap" in r.stdout and "[1, 16, 16, 3]" in r.stdout and "FLOPs per image" in r.stdout
    r = run_cli("info", "--experiment", "shapes-tiny", "--set", "model.backbone=resnet50", "--set", "model.width=0.5")
    assert r.returncode == 2 and "model.width" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_info_hourglass104_matches_reference_count():
    r = run_cli("info", "--experiment", "hourglass104-coco", "--set", "model.num_classes=90", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert (report["params_total"], report["params_trainable"]) == (191_406_652, 191_289_148)
    assert len(report["outputs"]) == 6 and report["outputs"]["stack1/heatmap"] == [1, 128, 128, 90]
    assert report["flops"] == pytest.approx(585.6e9, rel=0.01)  # 80 classes: 585.4 (README)


# The README's backbone table: (experiment, overrides, parameters, GFLOPs at 512 px) with 80 classes.
README_TABLE = {
    "hourglass104": ("hourglass104-coco", [], 191_401_512, 585.4),
    "hourglass52": ("hourglass104-coco", ["model.backbone=hourglass52"], 95_513_300, 287.5),
    "resnet18": ("resnet18-coco", [], 14_230_484, 26.2),
    "resnet50": ("resnet50-coco", [], 30_171_028, 49.3),
    "dla34": ("dla34-coco", [], 18_648_388, 50.0),
    "mobilenetv2": ("mobilenetv2-coco", [], 3_077_460, 15.9),
}


@pytest.mark.parametrize("name", sorted(README_TABLE))
def test_readme_backbone_table(name):
    """Each row of the README's table: the exact parameter count, FLOPs within 1 %, at 512 px."""
    from centernet_core import config as config_lib
    from centernet_core.modeling.model import build_model
    from centernet_core.modeling.summary import describe_model
    experiment, overrides, params, gflops = README_TABLE[name]
    cfg = config_lib.resolve(experiment, overrides=["model.num_classes=80", *overrides])
    assert (cfg.model.backbone, cfg.model.input_size) == (name, 512)
    report = describe_model(build_model(cfg), 512)
    assert report["params_total"] == params
    assert report["flops"] == pytest.approx(gflops * 1e9, rel=0.01)
