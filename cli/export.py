"""`centernet export`: SavedModel / TFLite / ONNX with preprocessing and decoding inside, each checked."""
from __future__ import annotations

import os
from typing import List, Optional

import typer
from rich.table import Table

from centernet_cli.common import SetOpt, console, flag_overrides


def checks_table(summary: dict) -> Table:
    table = Table(title=f"exports in {summary.get('output', '')}".strip(), title_justify="left")
    for column in ("format", "file", "check", "max box diff (px)", "max score diff"):
        table.add_column(column, justify="right" if "diff" in column else "left")
    for fmt, path in summary["files"].items():
        c = summary["checks"][fmt]
        verdict = "[green]ok[/]" if c["ok"] else f"[red]{c['unmatched']} differ[/]"
        table.add_row(fmt, os.path.basename(path.rstrip("/")), verdict, f"{c['max_box_diff']:.2g}",
                      f"{c['max_score_diff']:.2g}")
    return table


def export(
    ckpt: str = typer.Option(..., "--ckpt", help="Run directory of `centernet train`, its best/ dir, or a ckpt-N prefix."),
    output: str = typer.Option(..., "--output", help="New directory for the exports."),
    formats: Optional[str] = typer.Option(None, "--format", help="Comma-separated: saved_model,tflite,onnx (default: export.formats)."),
    float16: Optional[bool] = typer.Option(None, "--tflite-float16/--no-tflite-float16", help="Also write model_float16.tflite (float16 weights)."),
    set_: Optional[List[str]] = SetOpt,
):
    """Export a checkpoint; every file is reloaded in its runtime and compared with the SavedModel.

    The SavedModel takes uint8 images of any size (signature image_tensor), encoded image bytes
    (encoded_image) or tf.Examples (tf_example); TFLite and ONNX take uint8 [N, H, W, 3], any H, W.

    Example: centernet export --ckpt runs/shapes --output exports/shapes --format saved_model,tflite,onnx
    """
    from centernet_core.inference.export import export_checkpoint

    flags = flag_overrides(**{"export.formats": formats, "export.tflite_float16": float16})
    with console.status("exporting") as status:
        summary = export_checkpoint(ckpt, output, overrides=(set_ or []) + flags,
                                    on_step=lambda step: status.update(f"exporting: {step}"))
    console.print(checks_table({**summary, "output": output}))
