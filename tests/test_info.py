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
    assert report["params_total"] == report["params_trainable"] + report["params_non_trainable"]
    assert report["outputs"] == {"stack0/heatmap": [1, 32, 32, 3], "stack0/size": [1, 32, 32, 2],
                                 "stack0/offset": [1, 32, 32, 2]}
    assert 5e7 < report["flops"] < 5e8
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
    assert 5.0e11 < report["flops"] < 6.5e11
