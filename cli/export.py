"""`centernet export`: SavedModel / TFLite / ONNX (and int8) with preprocessing and decoding inside, each checked."""
from __future__ import annotations

import os
from typing import List, Optional

import typer
from rich.table import Table

from centernet_cli.common import SetOpt, console, flag_overrides


def checks_table(summary: dict) -> Table:
    table = Table(title=f"exports in {summary.get('output', '')}".strip(), title_justify="left")
    keypoints = any("max_keypoint_diff" in c for c in summary["checks"].values())
    columns = ("format", "file", "check", "max box diff (px)", "max score diff") + (
        ("max keypoint diff (px)",) if keypoints else ())
    for column in columns:
        table.add_column(column, justify="right" if "diff" in column else "left")
    for fmt, path in summary["files"].items():
        c = summary["checks"].get(fmt)
        if c is None:  # int8: judged by its AP (ap_table), not by matching the float detections
            table.add_row(fmt, os.path.basename(path.rstrip("/")), "AP", "", "", *([""] if keypoints else []))
            continue
        verdict = "[green]ok[/]" if c["ok"] else f"[red]{c['unmatched']} differ[/]"
        table.add_row(fmt, os.path.basename(path.rstrip("/")), verdict, f"{c['max_box_diff']:.2g}",
                      f"{c['max_score_diff']:.2g}", *([f"{c['max_keypoint_diff']:.2g}"] if keypoints else []))
    return table


def ap_table(ap: dict) -> Table:
    """AP and AP50 (x 100) of every written file; int8 rows with their AP50 drop."""
    table = Table(title="AP on the validation records", title_justify="left")
    for column in ("format", "AP", "AP50", "AP50 drop"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for fmt, m in ap.items():
        drop = f"{m['AP50_drop']:.2f}" if "AP50_drop" in m else ""
        table.add_row(fmt, f"{100 * m['AP']:.2f}", f"{100 * m['AP50']:.2f}", drop)
    return table


def export(
    ckpt: str = typer.Option(..., "--ckpt", help="Run directory of `centernet train`, its best/ dir, or a ckpt-N prefix."),
    output: str = typer.Option(..., "--output", help="New directory for the exports."),
    formats: Optional[str] = typer.Option(None, "--format", help="Comma-separated: saved_model,tflite,onnx (default: export.formats)."),
    float16: Optional[bool] = typer.Option(None, "--tflite-float16/--no-tflite-float16", help="Also write model_float16.tflite (float16 weights)."),
    int8: Optional[bool] = typer.Option(None, "--int8/--no-int8", help="Also write model_int8.tflite / model_int8.onnx (int8 network, float letterbox and decode)."),
    calibration_data: Optional[str] = typer.Option(None, "--calibration-data", help="TFRecords to calibrate int8 on (default: the run's data.train)."),
    calibration_images: Optional[int] = typer.Option(None, "--calibration-images", help="How many calibration pictures (default: export.calibration_images)."),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="Print the AP of every written file on these TFRecords (int8: default the run's data.val)."),
    force: Optional[bool] = typer.Option(None, "--force", help="Write int8 files even when they lose more AP50 than export.int8_ap_tolerance."),
    set_: Optional[List[str]] = SetOpt,
):
    """Export a checkpoint; every file is reloaded in its runtime and compared with the SavedModel.

    The SavedModel takes uint8 images of any size (signature image_tensor), encoded image bytes
    (encoded_image) or tf.Examples (tf_example); TFLite and ONNX take uint8 [N, H, W, 3], any H, W.

    Example: centernet export --ckpt runs/shapes --output exports/shapes --format saved_model,tflite,onnx
    Example: centernet export --ckpt runs/shapes --output exports/int8 --format tflite,onnx --int8 --calibration-images 300
    """
    from centernet_core.inference.export import export_checkpoint

    flags = flag_overrides(**{"export.formats": formats, "export.tflite_float16": float16, "export.int8": int8,
                              "export.calibration_data": calibration_data,
                              "export.calibration_images": calibration_images,
                              "export.validation_data": val_data, "export.force": force})
    with console.status("exporting") as status:
        summary = export_checkpoint(ckpt, output, overrides=(set_ or []) + flags,
                                    on_step=lambda step: status.update(f"exporting: {step}"))
    console.print(checks_table({**summary, "output": output}))
    if "ap" in summary:
        console.print(ap_table(summary["ap"]))
