"""Int8 exports: AP50 kept within 2 points of float; a bad calibration is refused."""
import os

import numpy as np
import pytest

from centernet_core.inference import precision, quantize
from centernet_core.inference.eval_export import evaluate_export
from centernet_core.inference.export import Int8Rejected, export_trained
from centernet_core.inference.trained import load_trained
from test_eval_export import trained_run


def _int8_export(shapes_dataset, root, fmt, extra=()):
    run_dir, pattern = trained_run(shapes_dataset, root)
    trained = load_trained(run_dir, ["export.int8=true", f"export.validation_data={pattern}",
                                     "export.calibration_images=24", *extra])
    out = os.path.join(str(root), f"int8-{fmt}")
    return out, export_trained(trained, out, formats=(fmt,))


@pytest.mark.slow
@pytest.mark.parametrize("fmt, extra", [("tflite", ()), ("onnx", ("export.float_layers=head_",))])
def test_int8_keeps_ap50_within_two_points(shapes_dataset, tmp_path_factory, fmt, extra):
    out, summary = _int8_export(shapes_dataset, tmp_path_factory.mktemp("q"), fmt, extra)
    ap = summary["ap"]
    assert ap[fmt]["AP50"] > 0.5 and 0.0 <= ap[f"{fmt}_int8"]["AP50_drop"] <= 2.0, ap
    assert os.path.getsize(os.path.join(out, f"model_int8.{fmt}")) < 0.4 * os.path.getsize(
        os.path.join(out, f"model.{fmt}"))  # int8 weights
    again = evaluate_export(os.path.join(out, f"model_int8.{fmt}"))  # eval --model gives the printed AP
    assert again["AP50"] == pytest.approx(ap[f"{fmt}_int8"]["AP50"], abs=1e-9)


@pytest.mark.slow
def test_black_calibration_is_refused_and_nothing_written(shapes_dataset, tmp_path_factory, monkeypatch):
    monkeypatch.setattr(quantize, "record_images", lambda pattern, n: [np.zeros((128, 128, 3), np.uint8)] * 8)
    root = tmp_path_factory.mktemp("black")
    with pytest.raises(Int8Rejected, match=r"tflite_int8 loses .* AP50 points.*--force"):
        _int8_export(shapes_dataset, root, "tflite")
    assert not os.path.exists(os.path.join(str(root), "int8-tflite"))


def test_int8_needs_validation_data_unless_forced(shapes_dataset, tmp_path):
    from centernet_core.inference.trained import TrainedModel
    from centernet_core import config as config_lib
    cfg = config_lib.resolve("shapes-tiny", overrides=["export.int8=true"])
    with pytest.raises(Int8Rejected, match="--val-data"):
        export_trained(TrainedModel(None, cfg, [], "x"), str(tmp_path / "e"), formats=("tflite",))


def test_precision_auto_follows_the_cpu_flags(tmp_path, monkeypatch):
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("flags\t: fpu avx512f avx512_bf16 amx_tile\n")
    without.write_text("flags\t: fpu avx2 avx512f\n")
    assert precision.cpu_has_bf16(str(with_bf16)) and not precision.cpu_has_bf16(str(without))
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert precision.resolve("auto")[0] == "float32" and precision.resolve("bfloat16")[0] == "bfloat16"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    dtype, line = precision.resolve("auto")
    assert dtype == "bfloat16" and "native bf16" in line and "\n" not in line
