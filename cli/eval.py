"""`centernet eval`: COCO box AP of a checkpoint on TFRecords, or of a results json."""
from __future__ import annotations

import math
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from centernet_cli.common import SetOpt, console, flag_overrides
from centernet_core.errors import ConfigError


def metrics_table(metrics: dict, title: str = "COCO box metrics") -> Table:
    """The 12 COCOeval numbers as a rich table (values x 100, as papers print them)."""
    from centernet_core.inference.coco_eval import stats_rows
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("COCOeval", style="dim")
    table.add_column("value", justify="right")
    for name, label, value in stats_rows(metrics):
        table.add_row(name, label, "n/a" if value < 0 else f"{100 * value:.2f}")
    from centernet_core.inference import keypoint_eval  # keypoint AP (OKS) of the keypoints task
    for name, label, value in keypoint_eval.stats_rows(metrics):
        table.add_row(name, label, "n/a" if value < 0 else f"{100 * value:.2f}")
    return table


def per_class_table(per_class: dict) -> Table:
    table = Table(title="AP per category", title_justify="left")
    table.add_column("category")
    table.add_column("AP", justify="right")
    for name, ap in sorted(per_class.items(), key=lambda kv: -1.0 if math.isnan(kv[1]) else -kv[1]):
        table.add_row(str(name), "n/a (no ground truth)" if math.isnan(ap) else f"{100 * ap:.2f}")
    return table


def print_metrics(metrics: dict) -> None:
    console.print(metrics_table(metrics))
    if "per_class" in metrics:
        console.print(per_class_table(metrics["per_class"]))


def eval_(
    ckpt: Optional[str] = typer.Option(None, "--ckpt", help="Run directory of `centernet train`, its best/ dir, or a ckpt-N prefix."),
    data: Optional[str] = typer.Option(None, "--data", help="Eval TFRecord pattern (default: the run's data.val)."),
    annotations: Optional[str] = typer.Option(None, "--annotations", help="COCO instances json as ground truth (default: the records' boxes)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Flip test: average with the mirrored image (default: eval.flip)."),
    scales: Optional[str] = typer.Option(None, "--scales", help="Multi-scale test, e.g. 0.5,0.75,1,1.25,1.5 (default: eval.scales)."),
    output: Optional[str] = typer.Option(None, "--output", help="Write the COCO results json here."),
    per_class: bool = typer.Option(False, "--per-class", help="Also print AP per category."),
    allow_subset: bool = typer.Option(False, "--allow-subset", help="Evaluate even if some records cannot be read (AP then covers a subset)."),
    detections: Optional[str] = typer.Option(None, "--detections", help="Evaluate this COCO results json (needs --annotations; no model)."),
    report: Optional[str] = typer.Option(None, "--report", help="Write an evaluation report (per-class AP, PR / F1 curves, confusion, error galleries, index.html) into this directory."),
    model: Optional[str] = typer.Option(None, "--model", help="Evaluate an export instead: its directory, saved_model/, or a .tflite / .onnx file."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="letterbox (long side to the input size) or original (the original CenterNet's test protocol: native size padded black to a multiple of 128, scales from the image; for imported weights). Default: eval.protocol."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Checkpoint on CPU: auto (bfloat16 where native), float32, bfloat16."),
    set_: Optional[List[str]] = SetOpt,
):
    """Evaluate a checkpoint or an export (COCO box AP), or a results file against annotations.

    Example: centernet eval --ckpt runs/shapes --flip --output results.json --per-class
    Example: centernet eval --model exports/shapes/model_int8.tflite --data 'data/val-*.tfrecord'
    Example: centernet eval --detections results.json --annotations instances_val2017.json
    """
    from centernet_core.inference import evaluate

    if detections:
        if ckpt:
            raise ConfigError("give either --ckpt (run a model) or --detections (evaluate a results file), not both")
        if not annotations:
            raise ConfigError("--detections needs --annotations FILE.json (the ground truth of the same images)")
        metrics = evaluate.evaluate_detections(detections, annotations, per_class=per_class, report=report,
                                               pictures=data)
        console.print(f"{metrics['detections']} detections from {detections}", highlight=False)
        print_metrics(metrics)
        if report:
            console.print(f"report: {report}/index.html", highlight=False)
        return
    if model:
        if ckpt:
            raise ConfigError("give either --ckpt (a checkpoint) or --model (an export), not both")
        return _eval_export(model, data, annotations, output, per_class, set_)
    if not ckpt:
        raise ConfigError("nothing to evaluate: pass --ckpt RUN_DIR or --model EXPORT "
                          "(or --detections FILE --annotations FILE)")
    flags = flag_overrides(**{"data.val": data, "eval.flip": flip, "eval.scales": scales,
                              "eval.per_class": per_class or None, "eval.precision": precision, "eval.protocol": protocol,
                              "eval.allow_subset": allow_subset or None})
    if precision:
        from centernet_core.inference import precision as precision_lib
        console.print(precision_lib.apply(precision), highlight=False)
    with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("eval", total=None)
        metrics = evaluate.evaluate_checkpoint(
            ckpt, annotations=annotations, output=output, report=report, overrides=(set_ or []) + flags,
            on_start=lambda n: bar.update(task, total=n or None), on_batch=lambda n: bar.advance(task, n))
    console.print(f"{metrics['images']} images, {metrics['detections']} detections, checkpoint {metrics['checkpoint']}",
                  highlight=False)
    if metrics.get("images_expected", metrics["images"]) != metrics["images"]:
        console.print(f"[yellow]warning: a subset: {metrics['images_expected']} images in the metadata[/]")
    if output:
        console.print(f"results: {output}", highlight=False)
    print_metrics(metrics)
    if report:
        console.print(f"report: {report}/index.html", highlight=False)


def _eval_export(model: str, data, annotations, output, per_class: bool, set_) -> None:
    """``eval --model``: the export in its own runtime, scored like a checkpoint."""
    from centernet_core.inference.eval_export import evaluate_export
    flags = flag_overrides(**{"data.val": data, "eval.per_class": per_class or None})
    with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("eval", total=None)
        metrics = evaluate_export(model, annotations=annotations, output=output, overrides=(set_ or []) + flags,
                                  on_start=lambda n: bar.update(task, total=n or None),
                                  on_batch=lambda n: bar.advance(task, n))
    console.print(f"{metrics['images']} images, {metrics['detections']} detections, {metrics['format']} "
                  f"{metrics['model']}", highlight=False)
    if output:
        console.print(f"results: {output}", highlight=False)
    print_metrics(metrics)
