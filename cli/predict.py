"""`centernet predict`: draw and save detections for image files."""
from __future__ import annotations

from typing import List

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from centernet_cli.common import console


def summary_table(summary, limit: int = 20) -> Table:
    table = Table(title=f"detections written to {summary.output_dir}", title_justify="left")
    table.add_column("image")
    table.add_column("detections", justify="right")
    table.add_column("by category")
    for row in summary.images[:limit]:
        by = ", ".join(f"{name} {n}" for name, n in sorted(row["by_category"].items(), key=lambda kv: -kv[1]))
        table.add_row(row["output"], str(row["detections"]), by)
    if len(summary.images) > limit:
        table.add_row(f"... and {len(summary.images) - limit} more", "", "")
    return table


def predict(
    images: List[str] = typer.Argument(..., help="Image files, globs or directories."),
    model: str = typer.Option(..., "--model", help="Export directory (centernet export), SavedModel, .tflite / .onnx export file, or run directory / checkpoint."),
    output: str = typer.Option("predictions", "--output", help="Directory for the drawn pictures and json (not an input's directory)."),
    threshold: float = typer.Option(0.3, "--threshold", help="Keep detections with score >= T."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per model call."),
    precision: str = typer.Option("float32", "--precision", help="Checkpoint on CPU: auto (bfloat16 where native), float32, bfloat16."),
):
    """Detect objects in pictures; write each with labelled boxes, per-image json and COCO results json.

    Example: centernet predict photos/ extra.jpg --model exports/shapes --output predictions --threshold 0.4
    Example: centernet predict photos/ --model exports/shapes/model_int8.tflite
    """
    from centernet_core.errors import ConfigError
    from centernet_core.inference.predict import Predictor, predict_images

    if precision not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"--precision {precision}: choose auto, float32 or bfloat16")
    predictor = Predictor(model, precision)
    if predictor.precision_note:
        console.print(predictor.precision_note, highlight=False)

    with Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("predict", total=None)
        summary = predict_images(images, predictor, output, threshold=threshold, batch_size=batch_size,
                                 on_start=lambda n: bar.update(task, total=n),
                                 on_image=lambda path: bar.advance(task))
    console.print(summary_table(summary))
    if summary.skipped:
        console.print(f"[yellow]skipped {len(summary.skipped)} unreadable file(s):[/]")
        for path, reason in summary.skipped:
            console.print(f"  {path}: {reason}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"{len(summary.images)} pictures, detections.json and images.json in {output}", highlight=False,
                  soft_wrap=True)
